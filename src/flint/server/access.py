"""The access rule of every RPC, read from the `(flint.options.v1.access)` method
option in the generated descriptors."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.descriptor import FileDescriptor

from flint.common.auth import PrincipalKind
from flint.options.v1 import access_pb2

_KINDS = {
    access_pb2.PRINCIPAL_KIND_ADMIN: PrincipalKind.ADMIN,
    access_pb2.PRINCIPAL_KIND_MERCHANT: PrincipalKind.MERCHANT,
    access_pb2.PRINCIPAL_KIND_PARTNER: PrincipalKind.PARTNER,
    access_pb2.PRINCIPAL_KIND_APP: PrincipalKind.APP,
    access_pb2.PRINCIPAL_KIND_INTERNAL: PrincipalKind.INTERNAL,
    access_pb2.PRINCIPAL_KIND_MERCHANT_SESSION: PrincipalKind.MERCHANT_SESSION,
}


@dataclass(frozen=True)
class AccessRule:
    principals: frozenset[PrincipalKind]
    scope: str


def access_rules(files: Iterable[FileDescriptor]) -> dict[str, AccessRule]:
    """Maps `/package.Service/Method` to its rule, for every method that has one."""
    rules: dict[str, AccessRule] = {}
    for file in files:
        for service in file.services_by_name.values():
            for method in service.methods:
                options = method.GetOptions()
                if not options.HasExtension(access_pb2.access):
                    continue
                rule = options.Extensions[access_pb2.access]
                rules[f"/{service.full_name}/{method.name}"] = AccessRule(
                    principals=frozenset(_KINDS[kind] for kind in rule.principals),
                    scope=rule.scope,
                )
    return rules
