"""Small protobuf conversions every servicer needs."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import timestamp_pb2

from flint.accounts.v1 import accounts_service_pb2 as accounts_pb

# The one mapping between the domain's environment names and the API's enum.
ENVIRONMENT_ENUMS: dict[str, accounts_pb.Environment.ValueType] = {
    "test": accounts_pb.ENVIRONMENT_TEST,
    "live": accounts_pb.ENVIRONMENT_LIVE,
}
ENVIRONMENT_NAMES: dict[int, str] = {value: name for name, value in ENVIRONMENT_ENUMS.items()}


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp
