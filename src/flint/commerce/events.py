"""Commerce events, recorded in the transaction of the change they describe."""

from __future__ import annotations

from google.protobuf.message import Message

from flint.commerce import presenter
from flint.commerce.context import Tenant
from flint.common.db import UnitOfWork
from flint.common.events import record_event


def emit(
    uow: UnitOfWork,
    tenant: Tenant,
    type_: str,
    *,
    object_type: str,
    object_id: str,
    version: int,
    message: Message,
) -> None:
    record_event(
        uow,
        merchant_id=tenant.merchant_id,
        environment=tenant.environment,
        type=type_,
        object_type=object_type,
        object_id=object_id,
        object_version=version,
        data=presenter.snapshot(message),
    )
