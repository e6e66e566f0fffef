"""AccountsService over gRPC: merchants, partners and their keys."""

from __future__ import annotations

import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from sqlalchemy import func, select

from flint.accounts import service
from flint.accounts.models import MerchantRecord
from flint.accounts.v1 import accounts_service_pb2 as pb
from flint.common.credentials import ApiKeyRecord, hash_secret
from flint.common.errors import FlintError
from tests.conftest import MerchantCreds, PartnerCreds, bearer
from tests.errors import grpc_error


def refused(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value


def merchant_request(email: str, password: str = "correct horse battery", name: str = "Shop"):
    return pb.CreateMerchantRequest(merchant=pb.Merchant(name=name, email=email), password=password)


def test_create_merchant_issues_test_and_live_keys_once(accounts_stub, admin_key, db):
    merchant = accounts_stub.CreateMerchant(
        merchant_request("Owner@Example.com"), metadata=bearer(admin_key)
    )
    assert merchant.id.startswith("mer_")
    assert merchant.email == "owner@example.com"
    keys = {key.environment: key for key in merchant.secret_keys}
    assert keys[pb.ENVIRONMENT_TEST].secret.startswith("sk_test_")
    assert keys[pb.ENVIRONMENT_LIVE].secret.startswith("sk_live_")
    assert keys[pb.ENVIRONMENT_TEST].hint.startswith("sk_test_…")
    # Stored hashed, never in plain text; the password as argon2id.
    with db.read() as session:
        stored = session.get(MerchantRecord, merchant.id)
        assert stored is not None
        assert stored.password_hash.startswith("$argon2id$")
        hashes = set(session.scalars(select(ApiKeyRecord.secret_hash)))
    for key in keys.values():
        assert hash_secret(key.secret) in hashes
        assert key.secret not in hashes
    # Shown once: reading the merchant back gives hints only.
    fetched = accounts_stub.GetMerchant(
        pb.GetMerchantRequest(id=merchant.id), metadata=bearer(admin_key)
    )
    assert [key.secret for key in fetched.secret_keys] == ["", ""]
    assert {key.hint for key in fetched.secret_keys} == {key.hint for key in keys.values()}


def test_merchant_key_reads_its_own_merchant(accounts_stub, new_merchant: MerchantCreds):
    for key in (new_merchant.test_key, new_merchant.live_key):
        fetched = accounts_stub.GetMerchant(
            pb.GetMerchantRequest(id=new_merchant.id), metadata=bearer(key)
        )
        assert fetched.email == new_merchant.email


def test_merchant_key_cannot_see_another_merchant(accounts_stub, admin_key, new_merchant):
    other = accounts_stub.CreateMerchant(
        merchant_request("other-shop@example.com"), metadata=bearer(admin_key)
    )
    details = grpc_error(
        refused(
            lambda: accounts_stub.GetMerchant(
                pb.GetMerchantRequest(id=other.id), metadata=bearer(new_merchant.test_key)
            )
        )
    )
    assert (details.code, details.reason) == ("NOT_FOUND", "RESOURCE_NOT_FOUND")


def test_rotating_a_merchant_key_revokes_the_old_one(accounts_stub, new_merchant):
    new_key = accounts_stub.RotateMerchantKey(
        pb.RotateMerchantKeyRequest(id=new_merchant.id, environment=pb.ENVIRONMENT_TEST),
        metadata=bearer(new_merchant.test_key),
    )
    assert new_key.secret.startswith("sk_test_")
    details = grpc_error(
        refused(
            lambda: accounts_stub.GetMerchant(
                pb.GetMerchantRequest(id=new_merchant.id), metadata=bearer(new_merchant.test_key)
            )
        )
    )
    assert (details.code, details.reason) == ("UNAUTHENTICATED", "CREDENTIAL_REVOKED")
    accounts_stub.GetMerchant(
        pb.GetMerchantRequest(id=new_merchant.id), metadata=bearer(new_key.secret)
    )
    # The live key is a separate credential and keeps working.
    accounts_stub.GetMerchant(
        pb.GetMerchantRequest(id=new_merchant.id), metadata=bearer(new_merchant.live_key)
    )


def test_a_test_key_cannot_rotate_the_live_key(accounts_stub, new_merchant):
    # A test key (shared with developers, kept in CI) must not mint a live key
    # nor revoke the live key in use: one environment's key manages only itself.
    details = grpc_error(
        refused(
            lambda: accounts_stub.RotateMerchantKey(
                pb.RotateMerchantKeyRequest(id=new_merchant.id, environment=pb.ENVIRONMENT_LIVE),
                metadata=bearer(new_merchant.test_key),
            )
        )
    )
    assert (details.code, details.reason) == ("PERMISSION_DENIED", "ENVIRONMENT_MISMATCH")
    assert details.fields == ["environment"]
    # The live key still works.
    accounts_stub.GetMerchant(
        pb.GetMerchantRequest(id=new_merchant.id), metadata=bearer(new_merchant.live_key)
    )


def test_rotation_with_grace_keeps_the_old_key_working(accounts_stub, admin_key, new_merchant):
    accounts_stub.RotateMerchantKey(
        pb.RotateMerchantKeyRequest(
            id=new_merchant.id, environment=pb.ENVIRONMENT_LIVE, previous_key_ttl_seconds=3600
        ),
        metadata=bearer(admin_key),
    )
    accounts_stub.GetMerchant(
        pb.GetMerchantRequest(id=new_merchant.id), metadata=bearer(new_merchant.live_key)
    )


def test_rotate_merchant_key_needs_an_environment(accounts_stub, admin_key, new_merchant):
    details = grpc_error(
        refused(
            lambda: accounts_stub.RotateMerchantKey(
                pb.RotateMerchantKeyRequest(id=new_merchant.id), metadata=bearer(admin_key)
            )
        )
    )
    assert (details.reason, details.fields) == ("INVALID_ENVIRONMENT", ["environment"])


def test_duplicate_merchant_email_is_refused(accounts_stub, admin_key, new_merchant):
    details = grpc_error(
        refused(
            lambda: accounts_stub.CreateMerchant(
                merchant_request(new_merchant.email.upper()), metadata=bearer(admin_key)
            )
        )
    )
    assert (details.code, details.reason, details.fields) == (
        "ALREADY_EXISTS",
        "RESOURCE_ALREADY_EXISTS",
        ["merchant.email"],
    )


@pytest.mark.parametrize(
    ("email", "password", "field", "reason"),
    [
        ("not-an-email", "correct horse battery", "merchant.email", "INVALID_EMAIL"),
        ("", "correct horse battery", "merchant.email", "FIELD_REQUIRED"),
        ("short@example.com", "short", "password", "PASSWORD_TOO_SHORT"),
    ],
    ids=["malformed-email", "missing-email", "short-password"],
)
def test_create_merchant_refuses_bad_input(
    accounts_stub, admin_key, email, password, field, reason
):
    details = grpc_error(
        refused(
            lambda: accounts_stub.CreateMerchant(
                merchant_request(email, password), metadata=bearer(admin_key)
            )
        )
    )
    assert (details.code, details.reason) == ("INVALID_ARGUMENT", reason)
    assert field in details.fields


def test_only_the_operator_creates_merchants(accounts_stub, new_partner: PartnerCreds):
    details = grpc_error(
        refused(
            lambda: accounts_stub.CreateMerchant(
                merchant_request("sneaky@example.com"), metadata=bearer(new_partner.key)
            )
        )
    )
    assert (details.code, details.reason) == ("PERMISSION_DENIED", "PRINCIPAL_NOT_ALLOWED")


def test_partner_reads_itself_but_not_others(accounts_stub, new_partner, other_partner):
    me = accounts_stub.GetPartner(
        pb.GetPartnerRequest(id=new_partner.id), metadata=bearer(new_partner.key)
    )
    assert me.name == "Acme Apps"
    assert me.partner_key.secret == ""
    assert me.partner_key.hint.startswith("pak_…")
    details = grpc_error(
        refused(
            lambda: accounts_stub.GetPartner(
                pb.GetPartnerRequest(id=other_partner.id), metadata=bearer(new_partner.key)
            )
        )
    )
    assert details.code == "NOT_FOUND"


def test_rotating_a_partner_key_revokes_the_old_one(accounts_stub, new_partner):
    new_key = accounts_stub.RotatePartnerKey(
        pb.RotatePartnerKeyRequest(id=new_partner.id), metadata=bearer(new_partner.key)
    )
    assert new_key.secret.startswith("pak_")
    details = grpc_error(
        refused(
            lambda: accounts_stub.GetPartner(
                pb.GetPartnerRequest(id=new_partner.id), metadata=bearer(new_partner.key)
            )
        )
    )
    assert details.reason == "CREDENTIAL_REVOKED"


def test_operator_lists_merchants_and_partners(accounts_stub, admin_key, new_merchant, new_partner):
    merchants = accounts_stub.ListMerchants(
        pb.ListMerchantsRequest(page_size=100), metadata=bearer(admin_key)
    )
    assert new_merchant.id in [m.id for m in merchants.merchants]
    partners = accounts_stub.ListPartners(
        pb.ListPartnersRequest(page_size=100), metadata=bearer(admin_key)
    )
    assert new_partner.id in [p.id for p in partners.partners]


def test_merchants_page_token_is_not_a_partners_page_token(accounts_stub, admin_key):
    for i in range(3):
        accounts_stub.CreatePartner(
            pb.CreatePartnerRequest(partner=pb.Partner(name=f"P{i}")), metadata=bearer(admin_key)
        )
    page = accounts_stub.ListPartners(
        pb.ListPartnersRequest(page_size=1), metadata=bearer(admin_key)
    )
    details = grpc_error(
        refused(
            lambda: accounts_stub.ListMerchants(
                pb.ListMerchantsRequest(page_token=page.next_page_token), metadata=bearer(admin_key)
            )
        )
    )
    assert details.reason == "INVALID_PAGE_TOKEN"


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "CREDENTIAL_MISSING"),
        ("Basic dXNlcjpwYXNz", "CREDENTIAL_MALFORMED"),
        ("Bearer ", "CREDENTIAL_MALFORMED"),
        ("Bearer sk_test_short", "CREDENTIAL_MALFORMED"),
        ("Bearer whatever", "CREDENTIAL_MALFORMED"),
        ("Bearer pak_" + "A" * 40, "CREDENTIAL_INVALID"),
    ],
    ids=["missing", "basic-scheme", "empty-bearer", "truncated-key", "garbage", "unknown-key"],
)
def test_bad_credentials_are_unauthenticated(accounts_stub, new_partner, authorization, reason):
    metadata = (("authorization", authorization),) if authorization is not None else ()
    details = grpc_error(
        refused(
            lambda: accounts_stub.GetPartner(
                pb.GetPartnerRequest(id=new_partner.id), metadata=metadata
            )
        )
    )
    assert (details.code, details.reason) == ("UNAUTHENTICATED", reason)


def test_concurrent_merchants_with_one_email_are_refused_as_already_exists(db):
    # Both requests pass the "is the email taken" check before either commits;
    # the unique index then refuses the second, which must answer ALREADY_EXISTS
    # (not INTERNAL). On SQLite writers are serialised, so the check alone sees it.
    email = f"race-{secrets.token_hex(4)}@example.com"
    first_added = threading.Event()
    release_first = threading.Event()
    outcome: dict[str, object] = {}

    def first() -> None:
        with db.unit_of_work() as uow:
            service.create_merchant(uow, name="First", email=email, password="correct horse 1")
            uow.session.flush()
            first_added.set()
            release_first.wait(10)
            uow.commit()

    def second() -> None:
        try:
            with db.unit_of_work() as uow:
                service.create_merchant(uow, name="Second", email=email, password="correct horse 2")
                uow.commit()
            outcome["second"] = "created"
        except FlintError as error:
            outcome["second"] = (error.code.value, error.reason)
        except Exception as error:  # the defect: a raw database error
            outcome["second"] = type(error).__name__

    with ThreadPoolExecutor(max_workers=2) as pool:
        done_first = pool.submit(first)
        assert first_added.wait(10)
        done_second = pool.submit(second)
        # Let the second request reach the insert (it waits on the first's row).
        time.sleep(0.5)
        release_first.set()
        done_first.result(10)
        done_second.result(10)
    assert outcome["second"] == ("ALREADY_EXISTS", "RESOURCE_ALREADY_EXISTS")
    with db.read() as session:
        assert session.scalar(select(func.count()).where(MerchantRecord.email == email)) == 1
