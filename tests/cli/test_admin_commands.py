"""The operator commands (`flint migrate`, `flint admin …`, `flint dev seed`), each run as
a real subprocess against the test database, with the credentials they print tried
against the real gRPC server."""

from __future__ import annotations

import re
import secrets
import shlex
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from sqlalchemy import select

from flint.accounts.models import MerchantRecord
from flint.accounts.v1 import accounts_service_pb2 as accounts_pb
from flint.accounts.v1 import accounts_service_pb2_grpc as accounts_grpc
from flint.apps.models import AppRecord
from flint.apps.v1 import apps_service_pb2 as apps_pb
from flint.common import credentials, passwords
from flint.common.db import Database
from tests.cli.conftest import FLINT, database_text, row_counts, run_flint, run_json
from tests.conftest import bearer, flint_env, start_grpc_server
from tests.errors import grpc_error

SECRET_BODY = r"[A-Za-z0-9]{40}"
ADMIN_KEY = re.compile(rf"\bfak_{SECRET_BODY}\b")
PARTNER_KEY = re.compile(rf"\bpak_{SECRET_BODY}\b")
TEST_KEY = re.compile(rf"\bsk_test_{SECRET_BODY}\b")
LIVE_KEY = re.compile(rf"\bsk_live_{SECRET_BODY}\b")
CLIENT_SECRET = re.compile(rf"\bfcs_{SECRET_BODY}\b")
PASSWORD = "correct horse battery staple"


def unique_email() -> str:
    return f"cli-{secrets.token_hex(5)}@example.com"


def only_match(pattern: re.Pattern[str], text: str) -> str:
    found = pattern.findall(text)
    assert len(found) == 1, f"expected one {pattern.pattern} in:\n{text}"
    return str(found[0])


def refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def assert_revoked(call: Callable[[], object]) -> None:
    error = refused(call)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert grpc_error(error).reason == "CREDENTIAL_REVOKED"


@contextmanager
def accounts_client(
    database_url: str, log_dir: Path
) -> Iterator[accounts_grpc.AccountsServiceStub]:
    process, port = start_grpc_server(database_url, log_dir)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield accounts_grpc.AccountsServiceStub(channel)
    finally:
        process.stop()


def list_merchants(stub: accounts_grpc.AccountsServiceStub, key: str) -> object:
    return stub.ListMerchants(accounts_pb.ListMerchantsRequest(), metadata=bearer(key))


def get_merchant(stub: accounts_grpc.AccountsServiceStub, key: str, merchant_id: str):
    return stub.GetMerchant(accounts_pb.GetMerchantRequest(id=merchant_id), metadata=bearer(key))


def get_partner(stub: accounts_grpc.AccountsServiceStub, key: str, partner_id: str):
    return stub.GetPartner(accounts_pb.GetPartnerRequest(id=partner_id), metadata=bearer(key))


def assert_no_traceback(result) -> None:
    assert "Traceback" not in result.stderr, result.stderr


# --- flint --help and flint migrate -----------------------------------------------------


def choices(help_text: str) -> set[str]:
    """The sub-commands argparse lists as {a,b,c} in a usage line."""
    found = re.search(r"\{([a-z,-]+)\}", help_text)
    assert found, help_text
    return set(found.group(1).split(","))


def test_help_lists_every_command(database_url):
    result = run_flint(database_url, "--help")
    assert result.returncode == 0, result.stderr
    assert choices(result.stdout) >= {"up", "serve", "envoy", "migrate", "admin", "dev"}
    admin = run_flint(database_url, "admin", "--help")
    assert admin.returncode == 0, admin.stderr
    assert choices(admin.stdout) >= {
        "init",
        "create-merchant",
        "create-partner",
        "rotate-merchant-key",
        "rotate-partner-key",
    }
    dev = run_flint(database_url, "dev", "--help")
    assert dev.returncode == 0, dev.stderr
    assert "seed" in choices(dev.stdout)


def test_missing_required_option_is_a_usage_error(database_url):
    result = run_flint(database_url, "admin", "create-merchant", "--name", "No Email")
    assert result.returncode == 2
    assert "--email" in result.stderr


def test_envoy_validate_accepts_the_config_and_leaves_no_files(database_url, tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    result = subprocess.run(
        [str(FLINT), "envoy", "--mode", "validate", "--http-port", "18080"],
        env={**flint_env(database_url), "TMPDIR": str(scratch)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout
    # The rendered config is a temporary file: validating must not leave it behind.
    assert list(scratch.rglob("*")) == []


def test_migrate_creates_the_schema_and_is_idempotent(fresh_database_url):
    first = run_flint(fresh_database_url, "migrate")
    assert first.returncode == 0, first.stderr
    assert "up to date" in first.stdout
    tables = set(row_counts(fresh_database_url))
    assert {"merchants", "partners", "api_keys", "apps", "alembic_version"} <= tables, tables
    second = run_flint(fresh_database_url, "migrate")
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stdout
    assert set(row_counts(fresh_database_url)) == tables


# --- flint admin init ---------------------------------------------------------------


def test_admin_init_prints_a_working_admin_key_once(fresh_database_url, tmp_path):
    assert run_flint(fresh_database_url, "migrate").returncode == 0
    with accounts_client(fresh_database_url, tmp_path) as stub:
        data = run_json(fresh_database_url, "admin", "init")
        admin_key = data["admin_key"]
        assert ADMIN_KEY.fullmatch(admin_key), admin_key
        list_merchants(stub, admin_key)  # the admin key is accepted

        again = run_flint(fresh_database_url, "admin", "init", "--json")
        assert again.returncode == 1, again.stdout
        assert_no_traceback(again)
        assert "ADMIN_KEY_EXISTS" in again.stderr
        assert "already exists" in again.stderr
        assert "rotate" in again.stderr
        assert not ADMIN_KEY.search(again.stdout + again.stderr)
        list_merchants(stub, admin_key)  # the refused init changed nothing

        rotated = run_flint(fresh_database_url, "admin", "init", "--rotate")
        assert rotated.returncode == 0, rotated.stderr
        assert "shown once" in rotated.stdout
        new_key = only_match(ADMIN_KEY, rotated.stdout)
        assert new_key != admin_key
        list_merchants(stub, new_key)
        assert_revoked(lambda: list_merchants(stub, admin_key))

        stored = database_text(fresh_database_url)
        assert admin_key not in stored
        assert new_key not in stored
        assert credentials.hash_secret(new_key) in stored


def test_admin_init_hint_names_a_command_that_exists(fresh_database_url):
    first = run_flint(fresh_database_url, "admin", "init")
    assert first.returncode == 0, first.stderr
    assert "shown once" in first.stdout
    only_match(ADMIN_KEY, first.stdout)
    again = run_flint(fresh_database_url, "admin", "init")
    assert again.returncode == 1
    suggested = re.findall(r"`(flint [^`]+)`", again.stderr)
    if not suggested:
        assert "--rotate" in again.stderr, again.stderr
    for command in suggested:
        # Whatever the message tells the operator to run must be a real command.
        check = run_flint(fresh_database_url, *shlex.split(command)[1:], "--help")
        assert check.returncode == 0, (
            f"`flint admin init` suggests `{command}`, which does not exist:\n{check.stderr}"
        )


# --- flint admin create-merchant ------------------------------------------------------------


def test_create_merchant_prints_keys_that_authenticate(database_url, accounts_stub):
    email = unique_email()
    data = run_json(
        database_url,
        "admin",
        "create-merchant",
        "--name",
        "Corner Shop",
        "--email",
        email,
        "--password",
        PASSWORD,
    )
    merchant_id = data["merchant_id"]
    assert merchant_id.startswith("mer_")
    assert data["email"] == email
    assert data["name"] == "Corner Shop"
    test_key, live_key = data["test_secret_key"], data["live_secret_key"]
    assert TEST_KEY.fullmatch(test_key), test_key
    assert LIVE_KEY.fullmatch(live_key), live_key

    for key, environment in (
        (test_key, accounts_pb.ENVIRONMENT_TEST),
        (live_key, accounts_pb.ENVIRONMENT_LIVE),
    ):
        merchant = get_merchant(accounts_stub, key, merchant_id)
        assert merchant.id == merchant_id
        assert merchant.email == email
        assert merchant.name == "Corner Shop"
        hints = {k.environment: k.hint for k in merchant.secret_keys}
        assert hints[environment].endswith(key[-4:])
        assert all(k.secret == "" for k in merchant.secret_keys)


def test_create_merchant_stores_no_raw_secret_and_an_argon2_password(database_url, db: Database):
    email = unique_email()
    password = f"pw-{secrets.token_urlsafe(16)}"
    data = run_json(
        database_url,
        "admin",
        "create-merchant",
        "--name",
        "Hash Check",
        "--email",
        email,
        "--password",
        password,
    )
    stored = database_text(database_url)
    for secret in (data["test_secret_key"], data["live_secret_key"], password):
        assert secret not in stored
    assert credentials.hash_secret(data["test_secret_key"]) in stored
    with db.read() as session:
        merchant = session.get(MerchantRecord, data["merchant_id"])
        assert merchant is not None
        assert merchant.password_hash.startswith("$argon2id$")
        assert passwords.verify_password(merchant.password_hash, password)
        assert not passwords.verify_password(merchant.password_hash, password + "x")


def test_create_merchant_human_output_shows_keys_once(database_url, accounts_stub):
    result = run_flint(
        database_url,
        "admin",
        "create-merchant",
        "--name",
        "Human Shop",
        "--email",
        unique_email(),
        "--password",
        PASSWORD,
    )
    assert result.returncode == 0, result.stderr
    assert "shown once" in result.stdout
    merchant_id = only_match(re.compile(r"\bmer_[0-9a-z]+\b"), result.stdout)
    test_key = only_match(TEST_KEY, result.stdout)
    live_key = only_match(LIVE_KEY, result.stdout)
    assert get_merchant(accounts_stub, test_key, merchant_id).id == merchant_id
    assert get_merchant(accounts_stub, live_key, merchant_id).id == merchant_id


@pytest.mark.parametrize(
    ("email", "password", "expected"),
    [
        ("not-an-email", PASSWORD, ["email", "not an email address"]),
        (None, "short", ["password", "at least 10 characters"]),
        ("also bad", "tiny", ["email", "password"]),
    ],
    ids=["invalid-email", "short-password", "both"],
)
def test_create_merchant_refuses_bad_input_and_writes_nothing(
    database_url, db, email, password, expected
):
    email = email or unique_email()
    before = row_counts(database_url)
    result = run_flint(
        database_url,
        "admin",
        "create-merchant",
        "--name",
        "Refused Shop",
        "--email",
        email,
        "--password",
        password,
        "--json",
    )
    assert result.returncode == 1
    assert_no_traceback(result)
    assert result.stdout == ""
    assert result.stderr.startswith("flint: ")
    for words in expected:
        assert words in result.stderr, result.stderr
    assert not TEST_KEY.search(result.stderr)
    assert row_counts(database_url) == before
    with db.read() as session:
        assert (
            session.scalars(select(MerchantRecord).where(MerchantRecord.email == email)).all() == []
        )


def test_create_merchant_refuses_a_taken_email(database_url):
    email = unique_email()
    args = ("admin", "create-merchant", "--name", "Twice", "--email", email, "--password", PASSWORD)
    assert run_flint(database_url, *args).returncode == 0
    before = row_counts(database_url)
    again = run_flint(database_url, *args)
    assert again.returncode == 1
    assert_no_traceback(again)
    assert "exists" in again.stderr
    assert not TEST_KEY.search(again.stdout)
    assert row_counts(database_url) == before


# --- flint admin create-partner -------------------------------------------------------------


def test_create_partner_prints_a_working_partner_key(database_url, accounts_stub, apps_stub):
    data = run_json(database_url, "admin", "create-partner", "--name", "Acme Apps")
    partner_id, key = data["partner_id"], data["partner_key"]
    assert partner_id.startswith("par_")
    assert data["name"] == "Acme Apps"
    assert PARTNER_KEY.fullmatch(key), key
    partner = get_partner(accounts_stub, key, partner_id)
    assert partner.id == partner_id
    assert partner.name == "Acme Apps"
    assert partner.partner_key.secret == ""
    listed = apps_stub.ListApps(apps_pb.ListAppsRequest(), metadata=bearer(key))
    assert list(listed.apps) == []
    assert key not in database_text(database_url)


def test_create_partner_human_output_shows_key_once(database_url, accounts_stub):
    result = run_flint(database_url, "admin", "create-partner", "--name", "Human Apps")
    assert result.returncode == 0, result.stderr
    assert "shown once" in result.stdout
    partner_id = only_match(re.compile(r"\bpar_[0-9a-z]+\b"), result.stdout)
    key = only_match(PARTNER_KEY, result.stdout)
    assert get_partner(accounts_stub, key, partner_id).id == partner_id


# --- key rotation ---------------------------------------------------------------------


def new_merchant(database_url: str) -> dict[str, str]:
    return run_json(
        database_url,
        "admin",
        "create-merchant",
        "--name",
        "Rotating Shop",
        "--email",
        unique_email(),
        "--password",
        PASSWORD,
    )


def test_rotate_merchant_key_replaces_only_that_environment(database_url, accounts_stub):
    merchant = new_merchant(database_url)
    merchant_id = merchant["merchant_id"]
    data = run_json(
        database_url,
        "admin",
        "rotate-merchant-key",
        "--merchant",
        merchant_id,
        "--environment",
        "test",
    )
    assert data["merchant_id"] == merchant_id
    new_key = data["test_secret_key"]
    assert TEST_KEY.fullmatch(new_key), new_key
    assert new_key != merchant["test_secret_key"]
    assert get_merchant(accounts_stub, new_key, merchant_id).id == merchant_id
    assert_revoked(lambda: get_merchant(accounts_stub, merchant["test_secret_key"], merchant_id))
    # The live key is untouched.
    assert get_merchant(accounts_stub, merchant["live_secret_key"], merchant_id).id == merchant_id
    assert new_key not in database_text(database_url)


def test_rotate_merchant_key_human_output(database_url, accounts_stub):
    merchant = new_merchant(database_url)
    merchant_id = merchant["merchant_id"]
    result = run_flint(
        database_url,
        "admin",
        "rotate-merchant-key",
        "--merchant",
        merchant_id,
        "--environment",
        "live",
    )
    assert result.returncode == 0, result.stderr
    assert "shown once" in result.stdout
    new_key = only_match(LIVE_KEY, result.stdout)
    assert get_merchant(accounts_stub, new_key, merchant_id).id == merchant_id
    assert_revoked(lambda: get_merchant(accounts_stub, merchant["live_secret_key"], merchant_id))
    assert get_merchant(accounts_stub, merchant["test_secret_key"], merchant_id).id == merchant_id


def test_rotate_merchant_key_of_unknown_merchant_fails_cleanly(database_url):
    result = run_flint(
        database_url,
        "admin",
        "rotate-merchant-key",
        "--merchant",
        "mer_doesnotexist",
        "--environment",
        "test",
    )
    assert result.returncode == 1
    assert_no_traceback(result)
    assert result.stdout == ""
    assert "mer_doesnotexist" in result.stderr
    assert "No such merchant" in result.stderr


def test_rotate_partner_key_refuses_the_old_key(database_url, accounts_stub):
    partner = run_json(database_url, "admin", "create-partner", "--name", "Rotating Apps")
    partner_id, old_key = partner["partner_id"], partner["partner_key"]
    data = run_json(database_url, "admin", "rotate-partner-key", "--partner", partner_id)
    assert data["partner_id"] == partner_id
    new_key = data["partner_key"]
    assert PARTNER_KEY.fullmatch(new_key), new_key
    assert new_key != old_key
    assert get_partner(accounts_stub, new_key, partner_id).id == partner_id
    assert_revoked(lambda: get_partner(accounts_stub, old_key, partner_id))

    human = run_flint(database_url, "admin", "rotate-partner-key", "--partner", partner_id)
    assert human.returncode == 0, human.stderr
    assert "shown once" in human.stdout
    newest = only_match(PARTNER_KEY, human.stdout)
    assert get_partner(accounts_stub, newest, partner_id).id == partner_id
    assert_revoked(lambda: get_partner(accounts_stub, new_key, partner_id))
    stored = database_text(database_url)
    assert new_key not in stored
    assert newest not in stored


def test_rotate_partner_key_of_unknown_partner_fails_cleanly(database_url):
    result = run_flint(database_url, "admin", "rotate-partner-key", "--partner", "par_nobody")
    assert result.returncode == 1
    assert_no_traceback(result)
    assert result.stdout == ""
    assert "No such partner" in result.stderr


@pytest.mark.parametrize(
    "args",
    [("migrate",), ("admin", "create-partner", "--name", "Nowhere Apps", "--json")],
    ids=["migrate", "create-partner"],
)
def test_unreachable_database_fails_cleanly(tmp_path, args):
    url = f"sqlite:///{tmp_path / 'no-such-dir' / 'flint.db'}"
    result = run_flint(url, *args)
    assert result.returncode == 1
    assert_no_traceback(result)
    assert result.stdout == ""
    assert result.stderr.startswith("flint: cannot use the database")
    assert "unable to open database file" in result.stderr


# --- flint dev seed -----------------------------------------------------------------


def test_dev_seed_prints_credentials_that_work(database_url, db, accounts_stub, apps_stub):
    data = run_json(database_url, "dev", "seed")
    merchant_id = data["merchant_id"]
    for key in (data["test_secret_key"], data["live_secret_key"]):
        merchant = get_merchant(accounts_stub, key, merchant_id)
        assert merchant.email == data["merchant_email"]
    assert TEST_KEY.fullmatch(data["test_secret_key"])
    assert LIVE_KEY.fullmatch(data["live_secret_key"])

    partner_key = data["partner_key"]
    assert PARTNER_KEY.fullmatch(partner_key)
    assert get_partner(accounts_stub, partner_key, data["partner_id"]).id == data["partner_id"]
    listed = apps_stub.ListApps(apps_pb.ListAppsRequest(), metadata=bearer(partner_key))
    assert [app.id for app in listed.apps] == [data["app_id"]]
    app = listed.apps[0]
    assert app.partner_id == data["partner_id"]
    assert app.client_id == data["client_id"]
    assert app.client_secret == ""
    assert app.status == apps_pb.APP_STATUS_ACTIVE
    assert list(app.redirect_uris)
    assert list(app.requested_scopes)

    assert CLIENT_SECRET.fullmatch(data["client_secret"])
    with db.read() as session:
        stored_app = session.get(AppRecord, data["app_id"])
        assert stored_app is not None
        assert credentials.secret_matches(data["client_secret"], stored_app.client_secret_hash)
        merchant_row = session.get(MerchantRecord, merchant_id)
        assert merchant_row is not None
        assert merchant_row.password_hash.startswith("$argon2id$")
        assert passwords.verify_password(merchant_row.password_hash, data["merchant_password"])

    stored = database_text(database_url)
    for field in (
        "test_secret_key",
        "live_secret_key",
        "partner_key",
        "client_secret",
        "merchant_password",
    ):
        assert data[field] not in stored, field


def test_dev_seed_creates_a_fresh_set_each_run(database_url, apps_stub):
    first = run_json(database_url, "dev", "seed")
    second = run_json(database_url, "dev", "seed", "--password", "a chosen password")
    assert second["merchant_password"] == "a chosen password"
    for field in ("merchant_id", "merchant_email", "partner_id", "app_id", "client_id"):
        assert first[field] != second[field], field
    # Each partner sees only its own example app.
    for data in (first, second):
        listed = apps_stub.ListApps(apps_pb.ListAppsRequest(), metadata=bearer(data["partner_key"]))
        assert [app.id for app in listed.apps] == [data["app_id"]]


def test_dev_seed_human_output_shows_secrets_once(database_url, accounts_stub, apps_stub):
    result = run_flint(database_url, "dev", "seed")
    assert result.returncode == 0, result.stderr
    assert "shown once" in result.stdout
    merchant_id = only_match(re.compile(r"\bmer_[0-9a-z]+\b"), result.stdout)
    test_key = only_match(TEST_KEY, result.stdout)
    only_match(LIVE_KEY, result.stdout)
    only_match(CLIENT_SECRET, result.stdout)
    # The partner key appears twice: in the list and in the example curl command.
    partner_keys = set(PARTNER_KEY.findall(result.stdout))
    assert len(partner_keys) == 1
    assert get_merchant(accounts_stub, test_key, merchant_id).id == merchant_id
    listed = apps_stub.ListApps(apps_pb.ListAppsRequest(), metadata=bearer(partner_keys.pop()))
    assert len(listed.apps) == 1
