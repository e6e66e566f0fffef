"""gRPC AccountsService: protobuf in, domain call, protobuf out."""

from __future__ import annotations

from typing import Any

from flint.accounts import service
from flint.accounts.models import MerchantRecord, PartnerRecord
from flint.accounts.v1 import accounts_service_pb2 as pb
from flint.accounts.v1 import accounts_service_pb2_grpc as pb_grpc
from flint.common.credentials import ApiKeyRecord
from flint.common.db import Database
from flint.common.errors import invalid_argument
from flint.server import idempotency
from flint.server.convert import ENVIRONMENT_ENUMS, timestamp
from flint.server.rpc import current_principal

ENVIRONMENTS: dict[int, str] = {pb.ENVIRONMENT_TEST: "test", pb.ENVIRONMENT_LIVE: "live"}


def api_key_pb(record: ApiKeyRecord, secret: str = "") -> pb.ApiKey:
    return pb.ApiKey(
        id=record.id,
        environment=ENVIRONMENT_ENUMS.get(record.environment, pb.ENVIRONMENT_UNSPECIFIED),
        secret=secret,
        hint=record.hint,
        create_time=timestamp(record.created_at),
    )


def merchant_pb(merchant: MerchantRecord, keys: list[pb.ApiKey]) -> pb.Merchant:
    return pb.Merchant(
        id=merchant.id,
        name=merchant.name,
        email=merchant.email,
        create_time=timestamp(merchant.created_at),
        secret_keys=keys,
    )


def partner_pb(partner: PartnerRecord, key: pb.ApiKey | None) -> pb.Partner:
    return pb.Partner(
        id=partner.id,
        name=partner.name,
        create_time=timestamp(partner.created_at),
        partner_key=key,
    )


def environment_from_pb(value: int) -> str:
    environment = ENVIRONMENTS.get(value)
    if environment is None:
        raise invalid_argument("environment", "INVALID_ENVIRONMENT", "must be test or live")
    return environment


class AccountsServicer(pb_grpc.AccountsServiceServicer):
    def __init__(self, db: Database) -> None:
        self._db = db

    def CreateMerchant(self, request: pb.CreateMerchantRequest, context: Any) -> pb.Merchant:
        with self._db.unit_of_work() as uow:
            created = service.create_merchant(
                uow,
                name=request.merchant.name,
                email=request.merchant.email,
                password=request.password,
            )
            keys = [api_key_pb(key.record, key.secret) for key in created.keys]
            return idempotency.commit(uow, merchant_pb(created.merchant, keys))

    def GetMerchant(self, request: pb.GetMerchantRequest, context: Any) -> pb.Merchant:
        with self._db.read() as session:
            merchant = service.get_merchant(session, current_principal(), request.id)
            keys = service.active_merchant_keys(session, merchant.id, self._db.clock())
        return merchant_pb(merchant, [api_key_pb(key) for key in keys])

    def ListMerchants(
        self, request: pb.ListMerchantsRequest, context: Any
    ) -> pb.ListMerchantsResponse:
        with self._db.read() as session:
            merchants, token = service.list_merchants(
                session, page_size=request.page_size, page_token=request.page_token
            )
        return pb.ListMerchantsResponse(
            merchants=[merchant_pb(merchant, []) for merchant in merchants],
            next_page_token=token,
        )

    def RotateMerchantKey(self, request: pb.RotateMerchantKeyRequest, context: Any) -> pb.ApiKey:
        with self._db.unit_of_work() as uow:
            issued = service.rotate_merchant_key(
                uow,
                current_principal(),
                merchant_id=request.id,
                environment=environment_from_pb(request.environment),
                previous_key_ttl_seconds=request.previous_key_ttl_seconds,
            )
            return idempotency.commit(uow, api_key_pb(issued.record, issued.secret))

    def CreatePartner(self, request: pb.CreatePartnerRequest, context: Any) -> pb.Partner:
        with self._db.unit_of_work() as uow:
            created = service.create_partner(uow, name=request.partner.name)
            key = api_key_pb(created.key.record, created.key.secret)
            return idempotency.commit(uow, partner_pb(created.partner, key))

    def GetPartner(self, request: pb.GetPartnerRequest, context: Any) -> pb.Partner:
        with self._db.read() as session:
            partner = service.get_partner(session, current_principal(), request.id)
            key = service.active_partner_key(session, partner.id, self._db.clock())
        return partner_pb(partner, api_key_pb(key) if key else None)

    def ListPartners(
        self, request: pb.ListPartnersRequest, context: Any
    ) -> pb.ListPartnersResponse:
        with self._db.read() as session:
            partners, token = service.list_partners(
                session, page_size=request.page_size, page_token=request.page_token
            )
        return pb.ListPartnersResponse(
            partners=[partner_pb(partner, None) for partner in partners], next_page_token=token
        )

    def CreateMerchantSession(
        self, request: pb.CreateMerchantSessionRequest, context: Any
    ) -> pb.MerchantSession:
        with self._db.unit_of_work() as uow:
            signed_in = service.sign_in(
                uow,
                email=request.email,
                password=request.password,
                client_ip=request.client_ip,
                device_token=request.device_token,
            )
            return idempotency.commit(
                uow,
                pb.MerchantSession(
                    token=signed_in.token,
                    merchant_id=signed_in.merchant.id,
                    merchant_name=signed_in.merchant.name,
                    expire_time=timestamp(signed_in.session.expires_at),
                    device_token=signed_in.device_token,
                ),
            )

    def RevokeMerchantSession(
        self, request: pb.RevokeMerchantSessionRequest, context: Any
    ) -> pb.RevokeMerchantSessionResponse:
        with self._db.unit_of_work() as uow:
            service.sign_out(uow, current_principal())
            return idempotency.commit(uow, pb.RevokeMerchantSessionResponse())

    def RotatePartnerKey(self, request: pb.RotatePartnerKeyRequest, context: Any) -> pb.ApiKey:
        with self._db.unit_of_work() as uow:
            issued = service.rotate_partner_key(
                uow,
                current_principal(),
                partner_id=request.id,
                previous_key_ttl_seconds=request.previous_key_ttl_seconds,
            )
            return idempotency.commit(uow, api_key_pb(issued.record, issued.secret))
