"""Idempotency keys on every write RPC: a retry with the same key gets the same
response (from any server process), never a second change; a key is refused for
another request, while its first request is in flight, or when too long."""

from __future__ import annotations

import inspect
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import empty_pb2
from sqlalchemy import event, select, update

from flint.accounts.v1 import accounts_service_pb2 as accounts_pb
from flint.apps import service as apps_service
from flint.apps.v1 import apps_service_pb2 as pb
from flint.apps.v1 import apps_service_pb2_grpc as pb_grpc
from flint.commerce.v1 import orders_service_pb2 as orders_pb
from flint.commerce.v1 import orders_service_pb2_grpc as orders_grpc
from flint.commerce.v1 import resources_pb2 as resources_pb
from flint.common import idempotency as store
from flint.common.auth import Principal, PrincipalKind
from flint.common.db import Database, UnitOfWork
from flint.common.errors import Code, FlintError
from flint.server import app as server_app
from flint.server import idempotency
from flint.server.app import SERVICE_FILES
from tests.conftest import MerchantCreds, PartnerCreds, bearer, start_grpc_server
from tests.errors import grpc_error, rest_error
from tests.server.conftest import InProcess

CREATE_APP = "/flint.apps.v1.AppsService/CreateApp"


def new_key() -> str:
    return f"idem-{secrets.token_hex(8)}"


def with_key(credential: str, key: str) -> tuple[tuple[str, str], ...]:
    return (*bearer(credential), ("idempotency-key", key))


def app_request(name: str = "Loyalty Stars") -> pb.CreateAppRequest:
    return pb.CreateAppRequest(
        app=pb.App(
            name=name,
            redirect_uris=["https://loyalty.example.com/oauth/callback"],
            requested_scopes=["orders:read"],
        )
    )


def list_apps(stub: pb_grpc.AppsServiceStub, partner: PartnerCreds) -> list[pb.App]:
    return list(stub.ListApps(pb.ListAppsRequest(), metadata=bearer(partner.key)).apps)


def refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def stored_rows(db: Database, key: str) -> list[store.IdempotencyKeyRecord]:
    with db.read() as session:
        return list(
            session.scalars(
                select(store.IdempotencyKeyRecord).where(store.IdempotencyKeyRecord.key == key)
            )
        )


# --- the same key and request: the same response, one change -----------------------


def test_same_key_and_request_returns_the_same_response_over_grpc(apps_stub, new_partner, db):
    key = new_key()
    first = apps_stub.CreateApp(app_request(), metadata=with_key(new_partner.key, key))
    again = apps_stub.CreateApp(app_request(), metadata=with_key(new_partner.key, key))
    assert again.SerializeToString() == first.SerializeToString()
    assert again.client_secret == first.client_secret
    assert again.client_secret.startswith("fcs_")
    assert [app.id for app in list_apps(apps_stub, new_partner)] == [first.id]
    [row] = stored_rows(db, key)
    assert (row.scope, row.environment, row.status) == (f"partner:{new_partner.id}", "", "done")
    assert row.method == CREATE_APP
    assert row.expires_at - row.created_at == timedelta(hours=24)


def test_without_a_key_every_request_is_a_new_change(apps_stub, new_partner):
    apps_stub.CreateApp(app_request(), metadata=bearer(new_partner.key))
    apps_stub.CreateApp(app_request(), metadata=bearer(new_partner.key))
    assert len(list_apps(apps_stub, new_partner)) == 2


def test_rotate_app_secret_retry_returns_the_same_secret_once(apps_stub, new_partner):
    app = apps_stub.CreateApp(app_request(), metadata=bearer(new_partner.key))
    key = new_key()
    request = pb.RotateAppSecretRequest(id=app.id)
    rotated = apps_stub.RotateAppSecret(request, metadata=with_key(new_partner.key, key))
    again = apps_stub.RotateAppSecret(request, metadata=with_key(new_partner.key, key))
    assert rotated.client_secret != app.client_secret
    assert again.SerializeToString() == rotated.SerializeToString()


def test_delete_retry_answers_like_the_first_delete(apps_stub, new_partner):
    app = apps_stub.CreateApp(app_request(), metadata=bearer(new_partner.key))
    key = new_key()
    request = pb.DeleteAppRequest(id=app.id)
    assert apps_stub.DeleteApp(request, metadata=with_key(new_partner.key, key)) == (
        empty_pb2.Empty()
    )
    # Without the key, the app is gone; with it, the retry gets the first answer.
    error = refused(lambda: apps_stub.DeleteApp(request, metadata=bearer(new_partner.key)))
    assert grpc_error(error).reason == "RESOURCE_NOT_FOUND"
    assert apps_stub.DeleteApp(request, metadata=with_key(new_partner.key, key)) == (
        empty_pb2.Empty()
    )


def test_admin_create_partner_retry_returns_the_same_partner_key(accounts_stub, admin_key):
    key = new_key()
    request = accounts_pb.CreatePartnerRequest(partner=accounts_pb.Partner(name="Retry Apps"))
    first = accounts_stub.CreatePartner(request, metadata=with_key(admin_key, key))
    again = accounts_stub.CreatePartner(request, metadata=with_key(admin_key, key))
    assert again.SerializeToString() == first.SerializeToString()
    assert first.partner_key.secret.startswith("pak_")


def test_same_key_over_rest_through_envoy(rest: httpx.Client, new_partner, apps_stub):
    key = new_key()
    headers = {"Authorization": f"Bearer {new_partner.key}", "Idempotency-Key": key}
    body = {"name": "Loyalty Stars", "redirect_uris": ["https://loyalty.example.com/cb"]}
    first = rest.post("/v1/apps", json=body, headers=headers)
    again = rest.post("/v1/apps", json=body, headers=headers)
    assert first.status_code == again.status_code == 200, first.text
    assert again.json() == first.json()
    assert first.json()["client_secret"].startswith("fcs_")
    assert [app.id for app in list_apps(apps_stub, new_partner)] == [first.json()["id"]]

    other = rest.post("/v1/apps", json={**body, "name": "Other"}, headers=headers)
    assert other.status_code == 400, other.text
    assert rest_error(other).reason == "IDEMPOTENCY_KEY_REUSED"


def test_retry_on_another_server_process_gets_the_same_response(
    apps_stub, new_partner, database_url: str, tmp_path: Path
):
    key = new_key()
    first = apps_stub.CreateApp(app_request(), metadata=with_key(new_partner.key, key))
    process, port = start_grpc_server(database_url, tmp_path)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            other_server = pb_grpc.AppsServiceStub(channel)
            again = other_server.CreateApp(app_request(), metadata=with_key(new_partner.key, key))
    finally:
        process.stop()
    assert again.SerializeToString() == first.SerializeToString()
    assert len(list_apps(apps_stub, new_partner)) == 1


# --- refusals -------------------------------------------------------------------------


def test_same_key_with_a_different_request_is_refused_as_reused(apps_stub, new_partner):
    key = new_key()
    apps_stub.CreateApp(app_request("First"), metadata=with_key(new_partner.key, key))
    error = refused(
        lambda: apps_stub.CreateApp(app_request("Second"), metadata=with_key(new_partner.key, key))
    )
    details = grpc_error(error)
    assert (details.code, details.reason) == ("INVALID_ARGUMENT", "IDEMPOTENCY_KEY_REUSED")
    assert details.fields == ["idempotency-key"]
    assert [app.name for app in list_apps(apps_stub, new_partner)] == ["First"]


def test_same_key_on_another_method_is_refused_as_reused(apps_stub, new_partner):
    key = new_key()
    app = apps_stub.CreateApp(app_request(), metadata=with_key(new_partner.key, key))
    error = refused(
        lambda: apps_stub.RotateAppSecret(
            pb.RotateAppSecretRequest(id=app.id), metadata=with_key(new_partner.key, key)
        )
    )
    assert grpc_error(error).reason == "IDEMPOTENCY_KEY_REUSED"


def test_over_long_key_is_refused(apps_stub, new_partner):
    error = refused(
        lambda: apps_stub.CreateApp(app_request(), metadata=with_key(new_partner.key, "k" * 256))
    )
    details = grpc_error(error)
    assert (details.code, details.reason) == ("INVALID_ARGUMENT", "IDEMPOTENCY_KEY_INVALID")
    assert details.fields == ["idempotency-key"]
    assert list_apps(apps_stub, new_partner) == []


def test_key_of_255_characters_is_accepted(apps_stub, new_partner):
    key = secrets.token_hex(128)[:255]
    first = apps_stub.CreateApp(app_request(), metadata=with_key(new_partner.key, key))
    again = apps_stub.CreateApp(app_request(), metadata=with_key(new_partner.key, key))
    assert again.id == first.id


# --- scope ----------------------------------------------------------------------------


def test_keys_are_scoped_to_the_caller(apps_stub, new_partner, other_partner):
    key = new_key()
    mine = apps_stub.CreateApp(app_request(), metadata=with_key(new_partner.key, key))
    theirs = apps_stub.CreateApp(app_request(), metadata=with_key(other_partner.key, key))
    assert mine.id != theirs.id
    assert theirs.partner_id == other_partner.id
    assert [app.id for app in list_apps(apps_stub, other_partner)] == [theirs.id]


def test_keys_are_scoped_to_the_environment(channel, new_merchant: MerchantCreds):
    # The same key and the same request in the merchant's two environments are two
    # requests (a key can no longer rotate the other environment's key, so this
    # uses an order, which both environments create).
    orders = orders_grpc.OrdersServiceStub(channel)
    key = new_key()
    request = orders_pb.CreateOrderRequest(
        order=resources_pb.Order(
            currency="usd",
            line_items=[resources_pb.LineItem(name="Mug", quantity=1, unit_amount=900)],
        )
    )
    by_test = orders.CreateOrder(request, metadata=with_key(new_merchant.test_key, key))
    by_live = orders.CreateOrder(request, metadata=with_key(new_merchant.live_key, key))
    assert by_live.id != by_test.id
    assert (by_test.environment, by_live.environment) == (
        accounts_pb.ENVIRONMENT_TEST,
        accounts_pb.ENVIRONMENT_LIVE,
    )


def test_scope_names_the_caller():
    def scope(kind: PrincipalKind, id_: str, merchant_id: str = "") -> str:
        return store.scope_of(Principal(kind=kind, id=id_, merchant_id=merchant_id))

    assert scope(PrincipalKind.APP, "ins_1", "mer_1") == "app:ins_1"
    assert scope(PrincipalKind.MERCHANT, "mer_1") == "merchant:mer_1"
    assert scope(PrincipalKind.MERCHANT_SESSION, "mer_1") == "merchant:mer_1"
    assert scope(PrincipalKind.PARTNER, "par_1") == "partner:par_1"
    assert scope(PrincipalKind.ADMIN, "key_1") == "admin"
    assert scope(PrincipalKind.INTERNAL, "key_2") == "internal:key_2"


# --- failures, reads, storage ---------------------------------------------------------


def test_failed_request_is_not_stored_so_a_corrected_retry_may_use_the_key(
    apps_stub, new_partner, db
):
    key = new_key()
    error = refused(
        lambda: apps_stub.CreateApp(app_request(name=""), metadata=with_key(new_partner.key, key))
    )
    assert grpc_error(error).code == "INVALID_ARGUMENT"
    assert stored_rows(db, key) == []
    created = apps_stub.CreateApp(app_request(), metadata=with_key(new_partner.key, key))
    assert [app.id for app in list_apps(apps_stub, new_partner)] == [created.id]


def test_stored_response_is_encrypted(apps_stub, new_partner, db):
    key = new_key()
    app = apps_stub.CreateApp(app_request(), metadata=with_key(new_partner.key, key))
    with db.engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT * FROM idempotency_keys").all()
    dump = repr(rows)
    assert key in dump
    assert app.client_secret not in dump
    assert app.client_id not in dump


def test_reads_ignore_the_header(apps_stub, new_partner, db):
    app = apps_stub.CreateApp(app_request(), metadata=bearer(new_partner.key))
    key = "r" * 300  # would be refused on a write
    fetched = apps_stub.GetApp(pb.GetAppRequest(id=app.id), metadata=with_key(new_partner.key, key))
    listed = apps_stub.ListApps(pb.ListAppsRequest(), metadata=with_key(new_partner.key, key))
    assert fetched.id == app.id
    assert [item.id for item in listed.apps] == [app.id]
    assert stored_rows(db, key) == []


def test_write_rpcs_are_read_from_the_http_rules():
    methods = idempotency.write_methods(SERVICE_FILES)
    assert methods[CREATE_APP] is type(pb.App())
    assert "/flint.apps.v1.AppsService/UpdateApp" in methods
    assert "/flint.apps.v1.AppsService/DeleteApp" in methods
    assert "/flint.apps.v1.AppsService/GetApp" not in methods
    assert "/flint.apps.v1.AppsService/ListApps" not in methods
    for file in SERVICE_FILES:
        for service in file.services_by_name.values():
            for method in service.methods:
                if f"/{service.full_name}/{method.name}" in methods:
                    # The interceptor wraps synchronous unary handlers only.
                    assert not method.server_streaming
                    assert not method.client_streaming


def test_write_servicers_commit_through_idempotency():
    """A handler that commits with `uow.commit()` never records its response, so
    a retry with the key would run the change twice. Checked for every servicer
    the server registers; a line may opt out with an `# idempotency: <why>` note."""
    servicers = [
        value
        for value in vars(server_app).values()
        if inspect.isclass(value) and value.__module__.endswith(".servicer")
    ]
    assert len(servicers) >= 4
    for servicer in servicers:
        for number, line in enumerate(inspect.getsource(servicer).splitlines()):
            if re.search(r"\buow\.commit\(\)", line) and "# idempotency:" not in line:
                pytest.fail(
                    f"{servicer.__qualname__} (line {number} of the class) commits with"
                    " uow.commit(): end write handlers with"
                    " `return idempotency.commit(uow, response)`"
                )


# --- concurrency ----------------------------------------------------------------------


@dataclass
class SlowCreate:
    started: threading.Event
    release: threading.Event


@pytest.fixture
def slow_create_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowCreate]:
    """CreateApp (in-process server) waits for `release` before writing, inside
    its transaction (which holds its claim of the key)."""
    slow_create = SlowCreate(threading.Event(), threading.Event())
    create_app = apps_service.create_app

    def slow(*args: Any, **kwargs: Any) -> Any:
        slow_create.started.set()
        slow_create.release.wait(20)
        return create_app(*args, **kwargs)

    monkeypatch.setattr(apps_service, "create_app", slow)
    yield slow_create
    slow_create.release.set()


def test_concurrent_duplicate_waits_for_the_request_in_flight_and_gets_its_response(
    in_process: InProcess, slow_create_app: SlowCreate, new_partner, db
):
    """The claim commits with the handler's change, so a duplicate sent while
    the first is in flight waits for that commit, then answers from it."""
    stub = pb_grpc.AppsServiceStub(in_process.channel)
    key = new_key()
    first = stub.CreateApp.future(app_request(), metadata=with_key(new_partner.key, key))
    assert slow_create_app.started.wait(10)
    duplicate = stub.CreateApp.future(app_request(), metadata=with_key(new_partner.key, key))
    other = stub.CreateApp.future(app_request("Other"), metadata=with_key(new_partner.key, key))
    # Nothing of the first request is visible yet: its claim is not committed.
    assert stored_rows(db, key) == []
    # The duplicates wait for the first request's transaction.
    with pytest.raises(grpc.FutureTimeoutError):
        duplicate.result(0.5)
    assert not other.done()

    slow_create_app.release.set()
    created = first.result(20)
    assert duplicate.result(20).SerializeToString() == created.SerializeToString()
    # Another request with the key: reused.
    with pytest.raises(grpc.RpcError) as caught:
        other.result(20)
    assert grpc_error(caught.value).reason == "IDEMPOTENCY_KEY_REUSED"
    assert [app.id for app in list_apps(stub, new_partner)] == [created.id]


def test_concurrent_duplicates_create_one_app(apps_stub, new_partner):
    key = new_key()

    def send() -> bytes | str:
        try:
            app = apps_stub.CreateApp(app_request(), metadata=with_key(new_partner.key, key))
        except grpc.RpcError as error:
            return grpc_error(error).reason
        return app.SerializeToString()

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda _: send(), range(8)))
    responses = {outcome for outcome in outcomes if isinstance(outcome, bytes)}
    refusals = {outcome for outcome in outcomes if isinstance(outcome, str)}
    assert len(responses) == 1
    assert refusals <= {"IDEMPOTENCY_KEY_IN_USE"}
    [app] = list_apps(apps_stub, new_partner)
    assert pb.App.FromString(responses.pop()).id == app.id


# --- the claim itself, with a clock the test moves ------------------------------------


class MovableClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clocked(database_url: str, db: Database) -> Iterator[tuple[Database, MovableClock]]:
    clock = MovableClock()
    database = Database(database_url, clock=clock)
    yield database, clock
    database.dispose()


def new_ref() -> store.KeyRef:
    return store.KeyRef(f"partner:par_{secrets.token_hex(8)}", "", new_key())


def claimed(outcome: store.Claim | store.Replay) -> store.Claim:
    assert isinstance(outcome, store.Claim)
    return outcome


def record_change(uow: UnitOfWork, change: str) -> None:
    """Some change of the handler's (any table will do: this one is at hand)."""
    uow.session.add(
        store.IdempotencyKeyRecord(
            scope="test:changes",
            environment="",
            key=change,
            method="m",
            request_hash="h",
            status="done",
            claim_id="c",
            locked_until=uow.now,
            created_at=uow.now,
            expires_at=uow.now,
        )
    )


def commit_with(
    database: Database, claim: store.Claim, response: pb.App, change: str = ""
) -> pb.App:
    """A write handler holding `claim`: its change committed with its response."""
    with idempotency.holding(claim), database.unit_of_work() as uow:
        record_change(uow, change or new_key())
        return idempotency.commit(uow, response)


def change_exists(db: Database, change: str) -> bool:
    return bool(stored_rows(db, change))


def test_claim_then_replay_then_reused(clocked):
    database, _ = clocked
    ref = new_ref()
    claim = claimed(store.claim(database, ref, CREATE_APP, b"request"))
    commit_with(database, claim, pb.App(id="app_1", client_secret="fcs_secret"))
    replay = store.claim(database, ref, CREATE_APP, b"request")
    assert isinstance(replay, store.Replay)
    assert pb.App.FromString(replay.response).client_secret == "fcs_secret"
    with pytest.raises(FlintError) as caught:
        store.claim(database, ref, CREATE_APP, b"another request")
    assert caught.value.reason == "IDEMPOTENCY_KEY_REUSED"
    with pytest.raises(FlintError) as caught:
        store.claim(database, ref, "/flint.apps.v1.AppsService/RotateAppSecret", b"request")
    assert caught.value.reason == "IDEMPOTENCY_KEY_REUSED"


def test_stale_claim_is_taken_over_and_its_late_commit_rolls_back(clocked, db):
    database, clock = clocked
    ref = new_ref()
    crashed = claimed(store.claim(database, ref, CREATE_APP, b"request"))
    with pytest.raises(FlintError) as caught:
        store.claim(database, ref, CREATE_APP, b"request")
    assert (caught.value.code, caught.value.reason) == (Code.ABORTED, "IDEMPOTENCY_KEY_IN_USE")

    clock.now += store.LEASE + timedelta(seconds=1)
    taker = claimed(store.claim(database, ref, CREATE_APP, b"request"))
    assert taker.claim_id != crashed.claim_id

    # The first server wakes up and commits: its claim is gone, so its change rolls back.
    late_change, change = new_key(), new_key()
    with pytest.raises(FlintError) as caught:
        commit_with(database, crashed, pb.App(id="app_late"), change=late_change)
    assert caught.value.reason == "IDEMPOTENCY_KEY_IN_USE"
    assert not change_exists(db, late_change)

    commit_with(database, taker, pb.App(id="app_taker"), change=change)
    assert change_exists(db, change)
    replay = store.claim(database, ref, CREATE_APP, b"request")
    assert isinstance(replay, store.Replay)
    assert pb.App.FromString(replay.response).id == "app_taker"


def test_stale_claim_left_in_the_table_is_taken_over_by_the_server(apps_stub, new_partner, db):
    key = new_key()
    ref = store.KeyRef(f"partner:{new_partner.id}", "", key)
    request = app_request().SerializeToString(deterministic=True)
    claimed(store.claim(db, ref, CREATE_APP, request))
    with db.unit_of_work() as uow:
        uow.session.execute(
            update(store.IdempotencyKeyRecord)
            .where(store.IdempotencyKeyRecord.key == key)
            .values(locked_until=uow.now - timedelta(seconds=1))
        )
        uow.commit()
    app = apps_stub.CreateApp(app_request(), metadata=with_key(new_partner.key, key))
    assert [row.status for row in stored_rows(db, key)] == ["done"]
    assert [item.id for item in list_apps(apps_stub, new_partner)] == [app.id]


def test_expired_key_counts_as_absent(clocked):
    database, clock = clocked
    ref = new_ref()
    commit_with(database, claimed(store.claim(database, ref, CREATE_APP, b"one")), pb.App())
    clock.now += store.RETENTION
    claimed(store.claim(database, ref, CREATE_APP, b"two"))


def test_a_refusal_that_commits_does_not_complete_the_claim(clocked, db):
    database, _ = clocked
    ref = new_ref()
    claim = claimed(store.claim(database, ref, CREATE_APP, b"request"))
    with (
        pytest.raises(FlintError),
        idempotency.holding(claim),
        database.unit_of_work(),
    ):
        raise FlintError(Code.PERMISSION_DENIED, "NOPE", "refused", commit=True)
    assert not claim.completed
    [row] = stored_rows(db, ref.key)
    assert (row.status, row.response) == ("in_progress", None)
    store.release(database, claim)
    assert stored_rows(db, ref.key) == []


def test_commit_without_a_claim_just_commits(db):
    change = new_key()
    with db.unit_of_work() as uow:
        record_change(uow, change)
        assert idempotency.commit(uow, pb.App(id="app_plain")) == pb.App(id="app_plain")
    assert change_exists(db, change)


# --- call_with_key: the claim commits with the handler's first transaction ----------


def new_principal() -> Principal:
    return Principal(PrincipalKind.PARTNER, f"par_{secrets.token_hex(8)}")


def keyed_call(db: Database, principal: Principal, key: str, run: Callable[[], pb.App]) -> Any:
    return idempotency.call_with_key(
        db,
        principal=principal,
        key=key,
        method=CREATE_APP,
        request=app_request(),
        response_class=pb.App,
        run=run,
    )


def test_a_keyed_call_commits_its_claim_change_and_response_once(db):
    principal, key, change = new_principal(), new_key(), new_key()
    commits: list[object] = []

    def counted(connection: object) -> None:
        commits.append(connection)

    event.listen(db.engine, "commit", counted)
    try:
        response, outcome = keyed_call(
            db, principal, key, lambda: commit_with_claim_held(db, pb.App(id="app_1"), change)
        )
    finally:
        event.remove(db.engine, "commit", counted)
    assert (response.id, outcome) == ("app_1", "claimed")
    assert len(commits) == 1
    assert [row.status for row in stored_rows(db, key)] == ["done"]
    assert change_exists(db, change)


def test_a_replay_answers_without_running_the_handler(db):
    principal, key = new_principal(), new_key()
    keyed_call(db, principal, key, lambda: commit_with_claim_held(db, pb.App(id="app_1")))

    def must_not_run() -> pb.App:
        raise AssertionError("the handler ran for a replay")

    response, outcome = keyed_call(db, principal, key, must_not_run)
    assert (response.id, outcome) == ("app_1", "replayed")


def test_a_handler_failing_before_its_first_commit_rolls_its_claim_back(db):
    principal, key, change = new_principal(), new_key(), new_key()

    def failing() -> pb.App:
        with db.unit_of_work() as uow:
            record_change(uow, change)
            raise FlintError(Code.FAILED_PRECONDITION, "NOPE", "refused")

    with pytest.raises(FlintError):
        keyed_call(db, principal, key, failing)
    assert stored_rows(db, key) == []
    assert not change_exists(db, change)
    # The key is free for a corrected retry.
    _, outcome = keyed_call(db, principal, key, lambda: commit_with_claim_held(db, pb.App()))
    assert outcome == "claimed"


def test_a_handler_that_commits_twice_holds_the_key_in_use_in_between(db):
    """Handlers that commit a first step before a network call (payments) hold
    the key, committed as in progress, until their last commit."""
    principal, key = new_principal(), new_key()
    ref = store.key_ref(principal, key)
    request = app_request().SerializeToString(deterministic=True)
    seen: list[str] = []

    def two_steps() -> pb.App:
        with db.unit_of_work() as uow:
            record_change(uow, new_key())
            uow.commit()
        with ThreadPoolExecutor(1) as pool:
            seen.append(pool.submit(claim_outcome, db, ref, request).result(10))
        return commit_with_claim_held(db, pb.App(id="app_2"))

    response, _ = keyed_call(db, principal, key, two_steps)
    assert response.id == "app_2"
    assert seen == ["IDEMPOTENCY_KEY_IN_USE"]
    assert claim_outcome(db, ref, request) == "replayed"


def test_a_handler_failing_after_its_first_commit_releases_the_key(db):
    principal, key = new_principal(), new_key()

    def fails_after_first_step() -> pb.App:
        with db.unit_of_work() as uow:
            record_change(uow, new_key())
            uow.commit()
        raise FlintError(Code.UNAVAILABLE, "PROCESSOR_DOWN", "try again")

    with pytest.raises(FlintError):
        keyed_call(db, principal, key, fails_after_first_step)
    assert stored_rows(db, key) == []


def commit_with_claim_held(db: Database, response: pb.App, change: str = "") -> pb.App:
    """A write handler under `call_with_key`: its change and its response."""
    with db.unit_of_work() as uow:
        record_change(uow, change or new_key())
        return idempotency.commit(uow, response)


def claim_outcome(db: Database, ref: store.KeyRef, request: bytes) -> str:
    try:
        outcome = store.claim(db, ref, CREATE_APP, request)
    except FlintError as error:
        return error.reason
    return "replayed" if isinstance(outcome, store.Replay) else "claimed"


def test_concurrent_claims_of_one_key_leave_one_winner(db):
    ref = new_ref()
    barrier = threading.Barrier(8)

    def attempt(_: int) -> str:
        barrier.wait(10)
        try:
            store.claim(db, ref, CREATE_APP, b"request")
        except FlintError as error:
            return error.reason
        return "claimed"

    with ThreadPoolExecutor(8) as pool:
        outcomes = sorted(pool.map(attempt, range(8)))
    assert outcomes == ["IDEMPOTENCY_KEY_IN_USE"] * 7 + ["claimed"]


def test_expired_keys_are_purged(clocked, db):
    database, clock = clocked
    ref = new_ref()
    commit_with(database, claimed(store.claim(database, ref, CREATE_APP, b"x")), pb.App())
    store.purge_expired(database)
    assert len(stored_rows(db, ref.key)) == 1
    clock.now += store.RETENTION
    assert store.purge_expired(database).done >= 1
    assert stored_rows(db, ref.key) == []
