"""The gRPC server itself: health, reflection, access rules, error mapping,
request ids and graceful shutdown."""

from __future__ import annotations

import logging
import signal
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from flint.apps import service as apps_service
from flint.apps import servicer as apps_servicer
from flint.apps.v1 import apps_service_pb2 as apps_pb
from flint.apps.v1 import apps_service_pb2_grpc as apps_grpc
from flint.server.access import access_rules
from flint.server.app import DEFAULT_WORKER_THREADS, SERVICE_FILES, SERVICE_NAMES
from tests.conftest import PartnerCreds, bearer, start_grpc_server, wait_until
from tests.errors import grpc_error


def test_health_reports_serving(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    overall = stub.Check(health_pb2.HealthCheckRequest())
    assert overall.status == health_pb2.HealthCheckResponse.SERVING
    for name in SERVICE_NAMES:
        assert stub.Check(health_pb2.HealthCheckRequest(service=name)).status == (
            health_pb2.HealthCheckResponse.SERVING
        )


def test_reflection_lists_flint_services(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {service.name for service in next(iter(responses)).list_services_response.service}
    assert {"flint.apps.v1.AppsService", "flint.accounts.v1.AccountsService"} <= names
    assert "grpc.health.v1.Health" in names


def test_every_flint_rpc_declares_an_access_rule():
    rules = access_rules(SERVICE_FILES)
    methods = {
        f"/{service.full_name}/{method.name}"
        for file in SERVICE_FILES
        for service in file.services_by_name.values()
        for method in service.methods
    }
    assert methods == set(rules)
    assert all(rule.principals for rule in rules.values())


def test_request_id_is_echoed(apps_stub, new_partner: PartnerCreds):
    _, call = apps_stub.ListScopes.with_call(
        apps_pb.ListScopesRequest(),
        metadata=(*bearer(new_partner.key), ("x-request-id", "req-test-123")),
    )
    assert ("x-request-id", "req-test-123") in call.trailing_metadata()


def test_a_request_id_is_made_for_a_call_without_one(apps_stub, new_partner: PartnerCreds):
    _, call = apps_stub.ListScopes.with_call(
        apps_pb.ListScopesRequest(), metadata=bearer(new_partner.key)
    )
    request_ids = [value for key, value in call.trailing_metadata() if key == "x-request-id"]
    assert len(request_ids) == 1
    assert len(request_ids[0]) == 32


@pytest.mark.parametrize(
    "sent",
    ["req id with spaces", "x" * 129, "bin\\path", 'quote"d'],
    ids=["spaces", "too-long", "backslash", "quote"],
)
def test_a_request_id_that_is_not_a_plain_token_is_replaced(
    apps_stub, new_partner: PartnerCreds, sent: str
):
    _, call = apps_stub.ListScopes.with_call(
        apps_pb.ListScopesRequest(), metadata=(*bearer(new_partner.key), ("x-request-id", sent))
    )
    (replaced,) = [value for key, value in call.trailing_metadata() if key == "x-request-id"]
    assert replaced != sent
    assert len(replaced) == 32


def test_a_request_id_of_128_token_characters_is_kept(apps_stub, new_partner: PartnerCreds):
    sent = "plugin-" + "a1.:/+=@_" * 13 + "x" * 4
    assert len(sent) == 128
    _, call = apps_stub.ListScopes.with_call(
        apps_pb.ListScopesRequest(), metadata=(*bearer(new_partner.key), ("x-request-id", sent))
    )
    assert ("x-request-id", sent) in call.trailing_metadata()


def test_an_error_carries_the_request_id(apps_stub):
    with pytest.raises(grpc.RpcError) as raised:
        apps_stub.ListScopes(
            apps_pb.ListScopesRequest(), metadata=(("x-request-id", "req-denied-1"),)
        )
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert ("x-request-id", "req-denied-1") in raised.value.trailing_metadata()


# --- an in-process server (tests/server/conftest.py), for a misbehaving handler --


def test_unexpected_error_is_internal_with_a_logged_error_id(
    in_process, new_partner, monkeypatch, caplog
):
    def broken() -> object:
        raise RuntimeError("secret internals: /etc/flint.conf")

    monkeypatch.setattr(apps_service, "scope_catalog", broken)
    stub = apps_grpc.AppsServiceStub(in_process.channel)
    with caplog.at_level(logging.ERROR, logger="flint.rpc"), pytest.raises(grpc.RpcError) as err:
        stub.ListScopes(apps_pb.ListScopesRequest(), metadata=bearer(new_partner.key))
    details = grpc_error(err.value)
    assert (details.code, details.reason) == ("INTERNAL", "INTERNAL")
    error_id = details.metadata["error_id"]
    assert error_id.startswith("err_")
    assert error_id in details.message
    assert "secret internals" not in details.message
    assert "Traceback" not in details.message
    logged = [r for r in caplog.records if r.getMessage() == "unhandled_error"]
    assert logged
    assert logged[0].fields["error_id"] == error_id  # type: ignore[attr-defined]
    assert logged[0].exc_info is not None


def test_a_refused_call_is_logged_before_its_status_goes_out(in_process, caplog):
    """Whoever holds the answer can find the call in the log (the hosted app's
    tests, an operator following a request id)."""
    logged, release = threading.Event(), threading.Event()

    class HoldTheLine(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "rpc":
                logged.set()
                release.wait(10)

    handler = HoldTheLine()
    caplog.set_level(logging.INFO, logger="flint.rpc")
    logging.getLogger("flint.rpc").addHandler(handler)
    try:
        stub = apps_grpc.AppsServiceStub(in_process.channel)
        answer = stub.ListScopes.future(apps_pb.ListScopesRequest(), timeout=10)
        assert logged.wait(10)
        # While the log line is being written, the status has not gone out.
        with pytest.raises(grpc.FutureTimeoutError):
            answer.result(timeout=0.3)
        release.set()
        assert answer.exception(timeout=10).code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        release.set()
        logging.getLogger("flint.rpc").removeHandler(handler)


def test_reads_are_served_while_every_write_thread_is_busy(in_process, new_partner, monkeypatch):
    """Writes may wait long (a card processor, a lock); they have a pool of their
    own, so however many wait, reads still run."""
    entered = threading.Semaphore(0)
    release = threading.Event()
    fields = apps_servicer.app_fields

    def slow_fields(app: object) -> object:
        entered.release()
        release.wait(30)
        return fields(app)

    monkeypatch.setattr(apps_servicer, "app_fields", slow_fields)
    stub = apps_grpc.AppsServiceStub(in_process.channel)
    writes = [
        stub.CreateApp.future(
            apps_pb.CreateAppRequest(
                app=apps_pb.App(name=f"Busy {n}", redirect_uris=["https://busy.example/cb"])
            ),
            metadata=bearer(new_partner.key),
        )
        for n in range(DEFAULT_WORKER_THREADS)
    ]
    try:
        for _ in writes:
            assert entered.acquire(timeout=10), "not every write thread got busy"
        scopes = stub.ListScopes(
            apps_pb.ListScopesRequest(), metadata=bearer(new_partner.key), timeout=5
        )
        assert any(scope.name == "orders:read" for scope in scopes.scopes)
    finally:
        release.set()
    # The writes carry on once released (the app's fields were never the problem).
    assert all(write.result(30).name.startswith("Busy ") for write in writes)


def test_shutdown_lets_in_flight_calls_finish_and_refuses_new_ones(
    in_process, new_partner, monkeypatch
):
    entered, release = threading.Event(), threading.Event()
    catalog = apps_service.scope_catalog

    def slow_catalog() -> object:
        entered.set()
        release.wait(10)
        return catalog()

    monkeypatch.setattr(apps_service, "scope_catalog", slow_catalog)
    stub = apps_grpc.AppsServiceStub(in_process.channel)
    in_flight = stub.ListScopes.future(
        apps_pb.ListScopesRequest(), metadata=bearer(new_partner.key)
    )
    assert entered.wait(10)
    stopping = in_process.submit(in_process.running.stop(grace=10))
    health = health_pb2_grpc.HealthStub(in_process.channel)

    def new_calls_refused() -> bool:
        try:
            health.Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return True
        return False

    wait_until(new_calls_refused)
    assert not in_flight.done()
    release.set()
    response = in_flight.result(10)
    assert any(scope.name == "orders:read" for scope in response.scopes)
    stopping.result(15)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_server_cleanly(database_url, db, tmp_path, sig):
    process, port = start_grpc_server(database_url, tmp_path)
    try:
        process.popen.send_signal(sig)
        assert process.popen.wait(20) == 0
    finally:
        process.stop()
    log = process.log()
    assert "grpc_stopping" in log
    assert "grpc_stopped" in log
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.RpcError):
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
