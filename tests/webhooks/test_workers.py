"""The delivery worker: killed mid-delivery, several at once, secret rotation,
an endpoint failing for days, addresses checked at delivery, retention."""

from __future__ import annotations

import json
import logging
import os
import signal
import ssl
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf import field_mask_pb2
from sqlalchemy import select
from standardwebhooks import Webhook

from flint.common.db import Database
from flint.common.events import EventRecord
from flint.webhooks import history
from flint.webhooks import worker as worker_module
from flint.webhooks.addresses import ALLOW_LOOPBACK_ENV
from flint.webhooks.models import WebhookDeliveryRecord
from flint.webhooks.sender import Job, claim, release
from flint.webhooks.service import active_secrets
from flint.webhooks.v1 import webhooks_service_pb2 as pb
from flint.webhooks.worker import Worker
from tests.conftest import flint_env
from tests.webhooks.conftest import LIVE, TEST, Hooks, wait_until_sequenced
from tests.webhooks.support import (
    Received,
    attempts,
    deliveries,
    eventually,
    fast_settings,
    receiver,
    running_worker,
)


def test_worker_killed_mid_delivery_loses_nothing(
    hooks: Hooks, db: Database, database_url: str, tmp_path: Path
):
    events = 3
    # The receiver holds the first sends, so all are in flight at the kill.
    with receiver(*["hang"] * events) as rx:
        endpoint = hooks.create_endpoint(rx.url)
        log = (tmp_path / "worker.log").open("w")
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flint",
                "worker",
                "--lease-seconds",
                "1",
                "--connect-timeout",
                "1",
                # Longer than the test takes to kill it: every send is still in
                # flight at the kill, none has timed out (an attempt would be "failed").
                "--read-timeout",
                "10",
                "--poll-interval",
                "0.05",
            ],
            env={**flint_env(database_url), ALLOW_LOOPBACK_ENV: "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            for _ in range(events):
                hooks.merchant.create_order()
            rx.wait_for(events, timeout=30)
            os.kill(worker.pid, signal.SIGKILL)  # mid-delivery: the receiver holds the requests
            worker.wait(10)
        finally:
            if worker.poll() is None:
                worker.kill()
            log.close()
        held = deliveries(db, endpoint.id)
        assert [d.status for d in held] == ["pending"] * events  # leased to the dead worker
        with running_worker(db):
            rx.wait_for(2 * events, timeout=30)
            eventually(
                lambda: [d.status for d in deliveries(db, endpoint.id)] == ["succeeded"] * events
            )
    # Every event delivered; each was sent twice at most, both times with one
    # webhook-id and the same body.
    sends: dict[str, list[Received]] = {}
    for request in rx.requests:
        sends.setdefault(json.loads(request.body)["id"], []).append(request)
    assert len(sends) == events
    for first, second in sends.values():
        assert second.headers["webhook-id"] == first.headers["webhook-id"]
        assert second.body == first.body
    for delivery in held:
        tries = attempts(db, delivery.id)
        assert [t.outcome for t in tries] == ["lost", "succeeded"]
        assert "lease expired" in tries[0].error


def test_several_workers_never_send_one_delivery_twice(hooks: Hooks, db: Database):
    settings = fast_settings()
    workers = [Worker(db, settings, concurrency=3, poll_seconds=0.01) for _ in range(3)]
    stop = threading.Event()
    with receiver() as rx:
        endpoint = hooks.create_endpoint(rx.url)
        for _ in range(12):
            hooks.merchant.create_order()
        wait_until_sequenced(db)
        threads = [threading.Thread(target=w.run, args=(stop,)) for w in workers]
        for thread in threads:
            thread.start()
        try:
            eventually(
                lambda: [d.status for d in deliveries(db, endpoint.id)] == ["succeeded"] * 12,
                timeout=30,
            )
        finally:
            stop.set()
            for thread in threads:
                thread.join(15)
    ids = rx.ids()
    assert len(ids) == 12
    assert len(set(ids)) == 12
    for delivery in deliveries(db, endpoint.id):
        assert delivery.attempt_count == 1, [
            (a.outcome, a.error) for a in attempts(db, delivery.id)
        ]


def test_during_rotation_each_delivery_carries_both_signatures(hooks: Hooks, db: Database):
    with receiver() as rx, running_worker(db):
        endpoint = hooks.create_endpoint(rx.url)
        rotated = hooks.stub.RotateWebhookEndpointSecret(
            pb.RotateWebhookEndpointSecretRequest(id=endpoint.id), metadata=hooks.auth
        )
        hooks.merchant.create_order()
        [request] = rx.wait_for(1)
    signatures = request.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    for secret in (endpoint.secret, rotated.secret):
        Webhook(secret).verify(request.body, request.headers)
    for secret, signature in zip((rotated.secret, endpoint.secret), signatures, strict=True):
        only_one = {**request.headers, "webhook-signature": signature}
        Webhook(secret).verify(request.body, only_one)
    later = datetime.now(UTC) + timedelta(hours=24, minutes=1)
    with db.read() as session:
        assert active_secrets(session, endpoint.id, later) == [rotated.secret]


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def test_endpoint_failing_for_five_days_is_disabled(hooks: Hooks, db: Database):
    clock = Clock()
    settings = fast_settings(schedule=(timedelta(seconds=1),) * 7, clock=clock)
    worker = Worker(db, settings)
    with receiver() as rx:
        rx.default = (500, b"", {})
        endpoint = hooks.create_endpoint(rx.url)
        hooks.merchant.create_order()
        wait_until_sequenced(db)
        clock.now = datetime.now(UTC)
        worker.run_once()
        clock.now += timedelta(days=4)
        worker.run_once()  # still failing, not yet five days
        assert len(rx.requests) == 2
        got = hooks.stub.GetWebhookEndpoint(
            pb.GetWebhookEndpointRequest(id=endpoint.id), metadata=hooks.auth
        )
        assert got.status == pb.WEBHOOK_ENDPOINT_STATUS_ENABLED
        assert got.HasField("failing_since")
        clock.now += timedelta(days=1, seconds=5)
        worker.run_once()
        got = hooks.stub.GetWebhookEndpoint(
            pb.GetWebhookEndpointRequest(id=endpoint.id), metadata=hooks.auth
        )
        assert got.status == pb.WEBHOOK_ENDPOINT_STATUS_DISABLED
        assert got.disabled_reason == pb.WEBHOOK_ENDPOINT_DISABLED_REASON_FAILING
        [delivery] = deliveries(db, endpoint.id)
        assert delivery.status == "skipped"
        clock.now += timedelta(seconds=5)
        worker.run_once()
        assert len(rx.requests) == 3  # nothing is sent to a disabled endpoint
    with db.read() as session:
        disabled = session.scalars(
            select(EventRecord).where(
                EventRecord.type == "webhook_endpoint.disabled",
                EventRecord.object_id == endpoint.id,
            )
        ).all()
    assert [e.app_id for e in disabled] == [hooks.app_id]
    enabled = hooks.stub.UpdateWebhookEndpoint(
        pb.UpdateWebhookEndpointRequest(
            webhook_endpoint=pb.WebhookEndpoint(
                id=endpoint.id, status=pb.WEBHOOK_ENDPOINT_STATUS_ENABLED
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["status"]),
        ),
        metadata=hooks.auth,
    )
    assert enabled.missed.count == 1
    assert not enabled.HasField("failing_since")


def test_one_success_ends_a_failing_stretch(hooks: Hooks, db: Database):
    with receiver((500, b"", {}), (200, b"", {})) as rx, running_worker(db):
        endpoint = hooks.create_endpoint(rx.url)
        hooks.merchant.create_order()
        rx.wait_for(2)
        eventually(lambda: deliveries(db, endpoint.id)[0].status == "succeeded")
    got = hooks.stub.GetWebhookEndpoint(
        pb.GetWebhookEndpointRequest(id=endpoint.id), metadata=hooks.auth
    )
    assert not got.HasField("failing_since")


def test_host_resolving_to_a_private_address_is_refused_at_delivery(hooks: Hooks, db: Database):
    resolved = fast_settings(schedule=(), resolver=lambda host, port: ["10.0.0.5"])
    endpoint = hooks.create_endpoint("https://hooks.partner.example/x")
    with running_worker(db, resolved):
        hooks.merchant.create_order()
        eventually(lambda: deliveries(db, endpoint.id)[0].status == "failed")
    [attempt] = attempts(db, deliveries(db, endpoint.id)[0].id)
    assert attempt.status_code == 0
    assert "10.0.0.5" in attempt.error
    assert "address refused" in attempt.error


def test_loopback_is_refused_at_delivery_without_the_development_setting(
    hooks: Hooks, db: Database
):
    strict = fast_settings(schedule=(), allow_loopback=False)
    with receiver() as rx:
        endpoint = hooks.create_endpoint(rx.url)
        with running_worker(db, strict):
            hooks.merchant.create_order()
            eventually(lambda: deliveries(db, endpoint.id)[0].status == "failed")
        assert rx.requests == []
    [attempt] = attempts(db, deliveries(db, endpoint.id)[0].id)
    assert "loopback" in attempt.error


def test_a_live_endpoint_re_pointed_at_loopback_is_refused_at_delivery_even_in_development(
    hooks: Hooks, db: Database
):
    """DNS rebinding: the name passed when saved, then resolves to 127.0.0.1.
    The development switch is on (fast_settings) but covers test-only endpoints."""
    with receiver() as rx:
        port = rx.server.server_address[1]
        rebound = fast_settings(schedule=(), resolver=lambda host, port: ["127.0.0.1"])
        live = hooks.create_endpoint(
            f"https://rebind.partner.example:{port}/x", environments=(TEST, LIVE)
        )
        test_only = hooks.create_endpoint(f"http://rebind.partner.example:{port}/x")
        with running_worker(db, rebound):
            hooks.merchant.create_order()
            eventually(lambda: deliveries(db, live.id)[0].status == "failed")
            rx.wait_for(1)  # the test-only endpoint is delivered to
        assert len(rx.requests) == 1
    [attempt] = attempts(db, deliveries(db, live.id)[0].id)
    assert "address refused" in attempt.error
    assert "loopback" in attempt.error
    assert deliveries(db, test_only.id)[0].status == "succeeded"


def test_flints_own_ports_are_refused_at_delivery_even_in_development(hooks: Hooks, db: Database):
    with receiver() as rx:
        port = rx.server.server_address[1]
        endpoint = hooks.create_endpoint(f"http://own-port.partner.example:{port}/x")
        own = fast_settings(
            schedule=(), resolver=lambda host, port: ["127.0.0.1"], own_ports=frozenset({port})
        )
        with running_worker(db, own):
            hooks.merchant.create_order()
            eventually(lambda: deliveries(db, endpoint.id)[0].status == "failed")
        assert rx.requests == []
    [attempt] = attempts(db, deliveries(db, endpoint.id)[0].id)
    assert f"port {port}, which Flint itself uses" in attempt.error


def test_history_is_kept_thirty_days_then_purged(hooks: Hooks, db: Database):
    with receiver() as rx, running_worker(db):
        endpoint = hooks.create_endpoint(rx.url)
        hooks.merchant.create_order()
        rx.wait_for(1)
        eventually(lambda: deliveries(db, endpoint.id)[0].status == "succeeded")
    [delivery] = deliveries(db, endpoint.id)
    assert delivery.completed_at is not None
    with db.unit_of_work() as uow:
        assert history.purge_expired(uow, delivery.completed_at + timedelta(days=30)) == 0
        uow.commit()
    assert deliveries(db, endpoint.id)
    with db.unit_of_work() as uow:
        history.purge_expired(uow, delivery.completed_at + timedelta(days=36))
        uow.commit()
    with db.read() as session:
        assert session.get(WebhookDeliveryRecord, delivery.id) is None
    assert attempts(db, delivery.id) == []


def _tls_receiver_context(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for `name`: the server's context and a client
    context that trusts only it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    return server, client


def test_https_goes_to_the_checked_address_with_host_and_certificate_of_the_name(
    hooks: Hooks, db: Database, tmp_path: Path
):
    server_tls, client_tls = _tls_receiver_context(tmp_path, "hooks.partner.test")
    settings = fast_settings(
        schedule=(),
        resolver=lambda host, port: ["127.0.0.1"],
        tls_verify=client_tls,
    )
    with receiver() as rx:
        rx.server.socket = server_tls.wrap_socket(rx.server.socket, server_side=True)
        port = rx.server.server_address[1]
        endpoint = hooks.create_endpoint(f"https://hooks.partner.test:{port}/hooks")
        with running_worker(db, settings):
            hooks.merchant.create_order()
            [request] = rx.wait_for(1)
            eventually(lambda: deliveries(db, endpoint.id)[0].status == "succeeded")
    assert request.headers["host"] == f"hooks.partner.test:{port}"
    Webhook(endpoint.secret).verify(request.body, request.headers)


def test_https_certificate_for_another_name_fails(hooks: Hooks, db: Database, tmp_path: Path):
    server_tls, client_tls = _tls_receiver_context(tmp_path, "someone-else.test")
    settings = fast_settings(
        schedule=(), resolver=lambda host, port: ["127.0.0.1"], tls_verify=client_tls
    )
    with receiver() as rx:
        rx.server.socket = server_tls.wrap_socket(rx.server.socket, server_side=True)
        port = rx.server.server_address[1]
        endpoint = hooks.create_endpoint(f"https://hooks.partner.test:{port}/hooks")
        with running_worker(db, settings):
            hooks.merchant.create_order()
            eventually(lambda: deliveries(db, endpoint.id)[0].status == "failed")
    [attempt] = attempts(db, deliveries(db, endpoint.id)[0].id)
    assert "certificate" in attempt.error.lower() or "ssl" in attempt.error.lower()


def test_a_claimed_delivery_given_back_unsent_leaves_no_attempt(hooks: Hooks, db: Database):
    settings = fast_settings()
    endpoint = hooks.create_endpoint("http://127.0.0.1:9/hooks")
    for _ in range(2):
        hooks.merchant.create_order()
    wait_until_sequenced(db)
    jobs = claim(db, settings, 10)
    assert len(jobs) == 2
    kept, given_back = sorted(jobs, key=lambda job: job.delivery_id)
    release(db, [given_back])
    by_id = {d.id: d for d in deliveries(db, endpoint.id)}
    back = by_id[given_back.delivery_id]
    assert (back.status, back.attempt_count, back.lease_token) == ("pending", 0, "")
    assert attempts(db, back.id) == []  # it was never sent: no attempt to show
    assert by_id[kept.delivery_id].lease_token == kept.lease_token
    assert [a.outcome for a in attempts(db, kept.delivery_id)] == ["in_progress"]
    [again] = claim(db, settings, 10)
    assert (again.delivery_id, again.number) == (given_back.delivery_id, 1)


def test_a_worker_claiming_ahead_sends_each_delivery_once(hooks: Hooks, db: Database):
    # A lease longer than an attempt: the worker claims more than its slots.
    settings = fast_settings(lease=timedelta(seconds=30))
    with receiver() as rx:
        endpoint = hooks.create_endpoint(rx.url)
        for _ in range(30):
            hooks.merchant.create_order()
        with running_worker(db, settings):
            eventually(
                lambda: [d.status for d in deliveries(db, endpoint.id)] == ["succeeded"] * 30,
                timeout=30,
            )
    assert sorted(rx.ids()) == sorted(set(rx.ids()))
    assert len(rx.ids()) == 30
    for delivery in deliveries(db, endpoint.id):
        assert [a.outcome for a in attempts(db, delivery.id)] == ["succeeded"]


def test_a_delivery_loop_that_crashes_is_restarted_and_delivers(
    hooks: Hooks, db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    crashes: list[str] = []

    def claim_crashing_once(*args: Any, **kwargs: Any) -> list[Job]:
        if not crashes:
            crashes.append("claim")
            raise ValueError("a row no claim expected")
        return claim(*args, **kwargs)

    monkeypatch.setattr(worker_module, "claim", claim_crashing_once)
    with receiver() as rx:
        endpoint = hooks.create_endpoint(rx.url)
        hooks.merchant.create_order()
        with caplog.at_level(logging.ERROR, logger="flint.jobs"), running_worker(db):
            eventually(lambda: [d.status for d in deliveries(db, endpoint.id)] == ["succeeded"])
    assert crashes == ["claim"]
    crashed = [r for r in caplog.records if r.getMessage() == "job_loop_crashed"]
    assert [r.fields["loop"] for r in crashed] == [worker_module.LOOP_NAME]  # type: ignore[attr-defined]
    assert "a row no claim expected" in crashed[0].fields["error"]  # type: ignore[attr-defined]
