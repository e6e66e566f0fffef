"""The `flint` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.exc import OperationalError

from flint import envoy
from flint.accounts import service
from flint.billing import cycles
from flint.common import jobs, logs
from flint.common import rate_limit_overrides as rate_limits
from flint.common.auth import Principal, PrincipalKind
from flint.common.config import Settings
from flint.common.db import Database
from flint.common.envelope import KekError, new_kek_line
from flint.common.errors import FlintError
from flint.devseed import dev_install, seed
from flint.devstack import DevOptions, run_dev
from flint.envoy import EnvoySettings
from flint.hosted import HostedSettings
from flint.hosted import run as run_hosted
from flint.hosted.settings import SettingsError
from flint.installs import signing
from flint.keys import check_kek, ensure_dev_kek
from flint.keys import rotate as rotate_kek
from flint.listen import DEFAULT_STATE_DIR, ListenOptions, run_listen
from flint.migrations import migrate
from flint.server.acquirer import acquirer_from_env
from flint.server.app import serve
from flint.supervisor import LayoutError, replica_ports, run_stack
from flint.webhooks import retry
from flint.webhooks.sender import DeliverySettings
from flint.webhooks.worker import Worker

# `off`: `flint serve` (and the servers `flint up` starts) run no upkeep sweep.
SWEEP_ENV = "FLINT_SWEEP"


def _database() -> Database:
    return Database(Settings.from_env().database_url)


def _emit(args: argparse.Namespace, data: dict[str, Any], lines: Sequence[str]) -> None:
    """Prints credentials for people, or as JSON for scripts (`--json`)."""
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print("\n".join(lines))


# --- servers --------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:

    logs.configure()
    db = _database()
    check_kek(db)
    asyncio.run(
        serve(db, host=args.host, port=args.port, grace=args.grace, sweep=not args.no_sweep)
    )
    return 0


def _envoy_settings(args: argparse.Namespace) -> EnvoySettings:
    return EnvoySettings(
        http_port=args.http_port,
        grpc_ports=tuple(args.grpc_port),
        hosted_port=args.hosted_port,
        admin_port=args.admin_port,
        http_host=args.http_host,
    )


def cmd_worker(args: argparse.Namespace) -> int:
    """Sends webhook deliveries until SIGTERM or SIGINT."""
    logs.configure()
    total = args.connect_timeout + args.read_timeout
    overrides: dict[str, Any] = {
        # A live worker must never outlast its lease, or two would send at once.
        "lease": timedelta(seconds=max(args.lease_seconds, total + 1)),
        "connect_timeout": args.connect_timeout,
        "read_timeout": args.read_timeout,
        "total_timeout": total,
        "endpoint_concurrency": max(1, args.endpoint_concurrency),
    }
    if args.retry_schedule:
        overrides["schedule"] = retry.parse_schedule(args.retry_schedule)
    db = _database()
    check_kek(db)
    worker = Worker(
        db,
        DeliverySettings.from_env(**overrides),
        concurrency=args.concurrency,
        poll_seconds=args.poll_interval,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _signum, _frame: stop.set())
    print("flint: webhook worker running", flush=True)
    worker.run(stop)
    worker.db.dispose()
    return 0


def cmd_envoy(args: argparse.Namespace) -> int:

    settings = _envoy_settings(args)
    if args.print_config:
        print(envoy.render_config(settings), end="")
        return 0
    if args.mode == "validate":
        result = envoy.validate(settings)
        print(result.stdout + result.stderr, end="")
        return result.returncode
    envoy.exec_envoy(settings, log_level=args.log_level)
    return 0  # not reached: exec replaced the process


def cmd_up(args: argparse.Namespace) -> int:

    logs.configure()
    try:
        return run_stack(
            http_port=args.http_port,
            grpc_ports=replica_ports(args.grpc_port, args.replicas),
            workers=args.workers,
            hosted_port=args.hosted_port,
            admin_port=args.admin_port,
            http_host=args.http_host,
        )
    except LayoutError as error:
        print(f"flint: {error}", file=sys.stderr)
        return 2


def cmd_hosted(args: argparse.Namespace) -> int:
    logs.configure()
    try:
        settings = HostedSettings.from_env(grpc_target=args.grpc_target, public_url=args.public_url)
    except SettingsError as error:
        print(f"flint: {error}", file=sys.stderr)
        return 2
    run_hosted(settings, host=args.host, port=args.port)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:

    db = _database()
    migrate(db)
    check_kek(db)
    print(f"flint: database is up to date ({db.engine.url.render_as_string()})")
    return 0


# --- admin ----------------------------------------------------------------------


def _with_uow(work: Callable[[Any], Any]) -> Any:

    db = _database()
    migrate(db)
    with db.unit_of_work() as uow:
        result = work(uow)
        uow.commit()
    return result


def cmd_admin_init(args: argparse.Namespace) -> int:

    key = _with_uow(service.rotate_admin_key if args.rotate else service.create_admin_key)
    _emit(
        args,
        {"admin_key": key.secret},
        [
            "Platform admin key (shown once; store it safely):",
            f"  {key.secret}",
        ],
    )
    return 0


def cmd_create_merchant(args: argparse.Namespace) -> int:

    created = _with_uow(
        lambda uow: service.create_merchant(
            uow, name=args.name, email=args.email, password=args.password
        )
    )
    _emit(args, _merchant_json(created), _merchant_lines(created))
    return 0


def _merchant_json(created: Any) -> dict[str, Any]:
    merchant = created.merchant
    return {
        "merchant_id": merchant.id,
        "name": merchant.name,
        "email": merchant.email,
        **{f"{key.record.environment}_secret_key": key.secret for key in created.keys},
    }


def _merchant_lines(created: Any) -> list[str]:
    merchant = created.merchant
    return [
        f"Merchant {merchant.id} ({merchant.name}, {merchant.email})",
        *(
            f"  {key.record.environment} secret key: {key.secret}   (shown once)"
            for key in created.keys
        ),
    ]


def cmd_create_partner(args: argparse.Namespace) -> int:

    created = _with_uow(lambda uow: service.create_partner(uow, name=args.name))
    _emit(
        args,
        {
            "partner_id": created.partner.id,
            "name": created.partner.name,
            "partner_key": created.key.secret,
        },
        [
            f"Partner {created.partner.id} ({created.partner.name})",
            f"  partner key: {created.key.secret}   (shown once)",
        ],
    )
    return 0


def cmd_rotate_merchant_key(args: argparse.Namespace) -> int:

    operator = Principal(PrincipalKind.ADMIN, "cli")
    key = _with_uow(
        lambda uow: service.rotate_merchant_key(
            uow,
            operator,
            merchant_id=args.merchant,
            environment=args.environment,
            previous_key_ttl_seconds=args.previous_key_ttl,
        )
    )
    _emit(
        args,
        {"merchant_id": args.merchant, f"{args.environment}_secret_key": key.secret},
        [f"New {args.environment} secret key for {args.merchant}: {key.secret}   (shown once)"],
    )
    return 0


def cmd_rotate_partner_key(args: argparse.Namespace) -> int:

    operator = Principal(PrincipalKind.ADMIN, "cli")
    key = _with_uow(
        lambda uow: service.rotate_partner_key(
            uow,
            operator,
            partner_id=args.partner,
            previous_key_ttl_seconds=args.previous_key_ttl,
        )
    )
    _emit(
        args,
        {"partner_id": args.partner, "partner_key": key.secret},
        [f"New partner key for {args.partner}: {key.secret}   (shown once)"],
    )
    return 0


def cmd_create_internal_key(args: argparse.Namespace) -> int:
    key = _with_uow(service.create_internal_key)
    _emit(
        args,
        {"internal_key": key.secret},
        [
            "Internal key for a hosted web app (set it as FLINT_INTERNAL_KEY; shown once):",
            f"  {key.secret}",
        ],
    )
    return 0


def cmd_set_rate_limit(args: argparse.Namespace) -> int:
    subject = rate_limits.subject_for(
        merchant_id=args.merchant or "",
        partner_id=args.partner or "",
        app_id=args.app or "",
        environment=args.environment or "",
    )

    def change(uow: Any) -> bool:
        if args.default:
            return rate_limits.clear_override(uow.session, subject)
        rate_limits.require_callers_exist(
            uow.session,
            merchant_id=args.merchant or "",
            partner_id=args.partner or "",
            app_id=args.app or "",
        )
        rate_limits.set_override(
            uow.session, subject, reads=args.reads, writes=args.writes, now=uow.now
        )
        return True

    if not args.default and (args.reads is None or args.writes is None):
        print("flint: give --reads and --writes, or --default", file=sys.stderr)
        return 2
    changed = _with_uow(change)
    if args.default:
        data = {"subject": subject, "default": True, "removed": changed}
        line = f"{subject}: back to the default limits"
    else:
        data = {
            "subject": subject,
            "reads_per_second": args.reads,
            "writes_per_second": args.writes,
        }
        line = f"{subject}: {args.reads} reads and {args.writes} writes a second"
    # Servers read overrides again within their cache time.
    _emit(args, data, [line, "  (servers apply it within 10 seconds)"])
    return 0


def cmd_rotate_signing_key(args: argparse.Namespace) -> int:
    key = _with_uow(
        lambda uow: signing.rotate_signing_key(
            uow.session, uow.now, timedelta(seconds=args.publish_ahead)
        )
    )
    _emit(
        args,
        {"kid": key.kid, "activates_at": key.activates_at.isoformat()},
        [
            f"New signing key {key.kid} is published in the JWKS now and signs from "
            f"{key.activates_at.isoformat()}; the previous key stays published until its "
            "tokens expire.",
        ],
    )
    return 0


def cmd_dev_install(args: argparse.Namespace) -> int:
    db = _database()
    migrate(db)
    tokens = dev_install(
        db,
        client_id=args.client_id,
        client_secret=args.client_secret,
        merchant_id=args.merchant,
        scope=args.scope,
        environment=args.environment,
        issuer=Settings.from_env().public_url,
    )
    data = {
        "access_token": tokens.access_token,
        "token_type": "Bearer",
        "expires_in": tokens.expires_in,
        "refresh_token": tokens.refresh_token,
        "scope": " ".join(tokens.scopes),
        "install_id": tokens.install_id,
        "merchant_id": tokens.merchant_id,
        "environment": tokens.environment,
    }
    _emit(
        args,
        data,
        [
            f"Installed on {tokens.merchant_id} ({tokens.environment}): {tokens.install_id}",
            f"  access token   {tokens.access_token}",
            f"  refresh token  {tokens.refresh_token}",
        ],
    )
    return 0


def _iso_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def cmd_admin_jobs_list(args: argparse.Namespace) -> int:
    db = _database()
    migrate(db)
    failures = jobs.list_failures(db, status=args.status)
    data = {
        "job_failures": [
            {
                "job": failure.job,
                "item_id": failure.item_id,
                "merchant_id": failure.merchant_id,
                "environment": failure.environment,
                "status": failure.status,
                "attempts": failure.attempts,
                "error": failure.error,
                "last_failed_at": failure.last_failed_at.isoformat(),
                "next_attempt_at": failure.next_attempt_at.isoformat()
                if failure.next_attempt_at
                else None,
            }
            for failure in failures
        ]
    }
    lines = [
        f"{f.status:<10} {f.job} {f.item_id} merchant={f.merchant_id or '-'} "
        f"attempts={f.attempts} error={f.error}"
        for f in failures
    ]
    _emit(args, data, lines or ["no failed job items"])
    return 0


def cmd_admin_jobs_retry(args: argparse.Namespace) -> int:
    db = _database()
    migrate(db)
    retried = jobs.retry(db, args.item_id, job=args.job)
    if not retried:
        print(f"flint: no failed job item {args.item_id!r}", file=sys.stderr)
        return 1
    _emit(args, {"retried": retried}, [f"{args.item_id}: due at the next sweep"])
    return 0


def _add_jobs_parser(admin_commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    admin_jobs = admin_commands.add_parser(
        "jobs", help="background-job items that failed (retrying or set aside)"
    )
    jobs_commands = admin_jobs.add_subparsers(dest="jobs_command", required=True)
    listing = jobs_commands.add_parser("list", help="list failed items, set-aside ones first")
    listing.add_argument("--status", choices=[jobs.RETRYING, jobs.SET_ASIDE])
    _json_flag(listing)
    listing.set_defaults(handler=cmd_admin_jobs_list)
    again = jobs_commands.add_parser(
        "retry", help="make a failed item due now, with a fresh run of attempts"
    )
    again.add_argument("item_id", help="the item's id, as `list` shows it")
    again.add_argument("--job", help="only this job's failure of the item")
    _json_flag(again)
    again.set_defaults(handler=cmd_admin_jobs_retry)


def cmd_billing_run_cycles(args: argparse.Namespace) -> int:
    db = _database()
    migrate(db)
    # The vault of the acquirer FLINT_ACQUIRER names, as the server's runs use.
    result = cycles.run_cycles(db, acquirer_from_env().vault, args.now)
    data = result.as_dict()
    _emit(args, data, [f"{name}: {count}" for name, count in data.items()])
    return 0


# --- keys -----------------------------------------------------------------------


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    db = _database()
    try:
        done = rotate_kek(db)
    finally:
        db.dispose()
    retired = ", ".join(done.retired) or "none"
    lines = [
        f"{'Resumed' if done.resumed else 'New'} key-encryption key {done.kek_id}: "
        f"{done.rewrapped} sealed values re-wrapped; retired: {retired}.",
    ]
    if done.retired_in_env and done.retired:
        lines.append(f"Remove the retired keys ({retired}) from FLINT_KEK, then restart.")
    _emit(
        args,
        {
            "kek_id": done.kek_id,
            "resumed": done.resumed,
            "rewrapped": done.rewrapped,
            "retired": done.retired,
        },
        lines,
    )
    return 0


def cmd_keys_generate(args: argparse.Namespace) -> int:
    print(new_kek_line())
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    return run_dev(
        DevOptions(
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            hosted_port=args.hosted_port,
            admin_port=args.admin_port,
            plugin_port=args.plugin_port,
            state_dir=args.state_dir,
            password=args.password or secrets.token_urlsafe(12),
        )
    )


def cmd_dev_seed(args: argparse.Namespace) -> int:

    password = args.password or secrets.token_urlsafe(12)
    result = _with_uow(lambda uow: seed(uow, password=password))
    _emit(args, result.as_json(), result.lines())
    return 0


# --- listen ---------------------------------------------------------------------


def cmd_listen(args: argparse.Namespace) -> int:
    """Forwards test-mode events, signed, to a local URL until Ctrl-C."""
    options = ListenOptions.from_flags(
        forward_to=args.forward_to,
        api_key=args.api_key,
        api_url=args.api_url,
        events=args.events,
        state_dir=args.state_dir,
        from_now=args.from_now,
        print_secret=args.print_secret,
    )
    return run_listen(options, out=sys.stdout, err=sys.stderr)


def _add_listen_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    listen = commands.add_parser(
        "listen",
        help="forward test-mode events, signed, to a local URL (like `stripe listen`)",
        description="Follows the event stream as a merchant's test key or an app's "
        "access token and POSTs each event, signed with a local whsec_ secret, to "
        "--forward-to. Resumes where it stopped; at least once.",
    )
    listen.add_argument(
        "--forward-to",
        metavar="URL",
        help="where to POST each event, e.g. http://localhost:3000/webhooks (required)",
    )
    listen.add_argument(
        "--api-key",
        help="a merchant test secret key (sk_test_…) or an app access token; prefer "
        "$FLINT_API_KEY, which keeps it out of shell history",
    )
    listen.add_argument(
        "--api-url",
        help="Flint's REST address (default $FLINT_PUBLIC_URL or http://127.0.0.1:8080)",
    )
    listen.add_argument(
        "--events", metavar="TYPE,TYPE", help="forward only these event types (e.g. order.paid)"
    )
    listen.add_argument(
        "--state-dir",
        default=DEFAULT_STATE_DIR,
        help=f"the signing secret and saved positions (default {DEFAULT_STATE_DIR})",
    )
    listen.add_argument(
        "--from-now", action="store_true", help="ignore the saved position: only new events"
    )
    listen.add_argument(
        "--print-secret", action="store_true", help="print the local signing secret and exit"
    )
    listen.set_defaults(handler=cmd_listen)


# --- parser ---------------------------------------------------------------------


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _edge_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--http-port", type=int, default=8080, help="REST/JSON port (Envoy)")
    parser.add_argument("--http-host", default="127.0.0.1", help="REST/JSON listen address")
    parser.add_argument(
        "--grpc-port", type=int, action="append", help="gRPC server port (default 50051)"
    )
    parser.add_argument("--hosted-port", type=int, default=8081, help="hosted web app port")
    parser.add_argument("--admin-port", type=int, default=9901, help="Envoy admin port")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flint",
        description="Flint: payments for installable ecommerce apps. "
        "The database is FLINT_DATABASE_URL (default sqlite:///./flint.db).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser(
        "up", help="migrate, then run the gRPC server, the hosted web app and Envoy"
    )
    _edge_flags(up)
    up.add_argument(
        "--replicas",
        type=int,
        help="gRPC server processes behind Envoy, on consecutive ports from --grpc-port "
        "(default: one per --grpc-port given)",
    )
    up.add_argument(
        "--workers", type=int, default=1, help="webhook delivery worker processes (default 1)"
    )
    up.set_defaults(handler=cmd_up)

    serve = commands.add_parser("serve", help="run the gRPC server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=50051, help="0 picks a free port")
    serve.add_argument("--grace", type=float, default=10.0, help="seconds for in-flight calls")
    serve.add_argument(
        "--no-sweep",
        action="store_true",
        default=os.environ.get(SWEEP_ENV, "on") == "off",
        help="do not run the upkeep jobs here (another replica does, or a test drives "
        f"them); also ${SWEEP_ENV}=off",
    )
    serve.set_defaults(handler=cmd_serve)

    worker = commands.add_parser("worker", help="send webhook deliveries (run one or several)")
    worker.add_argument("--concurrency", type=int, default=16, help="attempts in flight at once")
    worker.add_argument(
        "--endpoint-concurrency",
        type=int,
        default=4,
        metavar="N",
        help="deliveries of one endpoint in flight at once, across all workers (default 4)",
    )
    worker.add_argument("--poll-interval", type=float, default=0.5, metavar="SECONDS")
    worker.add_argument(
        "--lease-seconds",
        type=float,
        default=60.0,
        help="how long a claimed delivery is held; after it, another worker retries it",
    )
    worker.add_argument("--connect-timeout", type=float, default=5.0, metavar="SECONDS")
    worker.add_argument("--read-timeout", type=float, default=15.0, metavar="SECONDS")
    worker.add_argument(
        "--retry-schedule",
        default="",
        metavar="SECONDS,…",
        help="delays before each retry (default 5s,5m,30m,2h,5h,10h,10h); for testing",
    )
    worker.set_defaults(handler=cmd_worker)

    envoy = commands.add_parser("envoy", help="render the Envoy config and run Envoy")
    _edge_flags(envoy)
    envoy.add_argument("--mode", choices=["serve", "validate"], default="serve")
    envoy.add_argument("--print-config", action="store_true")
    envoy.add_argument("--log-level", default="warn")
    envoy.set_defaults(handler=cmd_envoy)

    hosted = commands.add_parser(
        "hosted",
        help="run the hosted web app (OAuth consent and endpoints); "
        "needs FLINT_INTERNAL_KEY, and FLINT_HOSTED_SECRET with several replicas",
    )
    hosted.add_argument("--host", default="127.0.0.1")
    hosted.add_argument("--port", type=int, default=8081)
    hosted.add_argument("--grpc-target", default="127.0.0.1:50051")
    hosted.add_argument("--public-url", help="the address browsers use (default $FLINT_PUBLIC_URL)")
    hosted.set_defaults(handler=cmd_hosted)

    migrate = commands.add_parser("migrate", help="create or upgrade the database schema")
    migrate.set_defaults(handler=cmd_migrate)

    admin = commands.add_parser("admin", help="operator commands (no server needed)")
    admin_commands = admin.add_subparsers(dest="admin_command", required=True)

    init = admin_commands.add_parser("init", help="create the platform admin key")
    init.add_argument("--rotate", action="store_true", help="replace the existing admin key")
    _json_flag(init)
    init.set_defaults(handler=cmd_admin_init)

    merchant = admin_commands.add_parser("create-merchant", help="create a merchant")
    merchant.add_argument("--name", required=True)
    merchant.add_argument("--email", required=True)
    merchant.add_argument("--password", required=True, help="hosted-page sign-in password")
    _json_flag(merchant)
    merchant.set_defaults(handler=cmd_create_merchant)

    partner = admin_commands.add_parser("create-partner", help="create a partner account")
    partner.add_argument("--name", required=True)
    _json_flag(partner)
    partner.set_defaults(handler=cmd_create_partner)

    rotate_merchant = admin_commands.add_parser(
        "rotate-merchant-key", help="issue a new merchant secret key"
    )
    rotate_merchant.add_argument("--merchant", required=True, help="merchant id, mer_…")
    rotate_merchant.add_argument("--environment", choices=["test", "live"], required=True)
    rotate_merchant.add_argument("--previous-key-ttl", type=int, default=0, metavar="SECONDS")
    _json_flag(rotate_merchant)
    rotate_merchant.set_defaults(handler=cmd_rotate_merchant_key)

    rotate_partner = admin_commands.add_parser("rotate-partner-key", help="issue a new partner key")
    rotate_partner.add_argument("--partner", required=True, help="partner id, par_…")
    rotate_partner.add_argument("--previous-key-ttl", type=int, default=0, metavar="SECONDS")
    _json_flag(rotate_partner)
    rotate_partner.set_defaults(handler=cmd_rotate_partner_key)

    internal = admin_commands.add_parser(
        "create-internal-key", help="issue a key for a hosted web app (FLINT_INTERNAL_KEY)"
    )
    _json_flag(internal)
    internal.set_defaults(handler=cmd_create_internal_key)

    rate = admin_commands.add_parser(
        "set-rate-limit",
        help="set one caller's API rate limits (requests a second), or --default to remove",
        description="The caller: --merchant with --environment (a secret key), --app with "
        "--merchant and --environment (an app's tokens on one install), or --partner.",
    )
    rate.add_argument("--merchant", help="merchant id, mer_…")
    rate.add_argument("--partner", help="partner id, par_…")
    rate.add_argument("--app", help="app id, app_… (with --merchant: one install)")
    rate.add_argument("--environment", choices=["test", "live"])
    rate.add_argument("--reads", type=int, help="read requests a second (also the burst)")
    rate.add_argument("--writes", type=int, help="write requests a second (also the burst)")
    rate.add_argument("--default", action="store_true", help="back to the default limits")
    _json_flag(rate)
    rate.set_defaults(handler=cmd_set_rate_limit)

    rotate_signing = admin_commands.add_parser(
        "rotate-signing-key", help="publish a new access-token signing key"
    )
    rotate_signing.add_argument(
        "--publish-ahead",
        type=int,
        default=int(signing.DEFAULT_PUBLISH_AHEAD.total_seconds()),
        metavar="SECONDS",
        help="how long the new key is published before it signs (default 600)",
    )
    _json_flag(rotate_signing)
    rotate_signing.set_defaults(handler=cmd_rotate_signing_key)
    _add_jobs_parser(admin_commands)

    dev = commands.add_parser(
        "dev",
        help="run Flint with a seeded merchant and the sample plugin (examples/thankyou_plugin) "
        "registered as an app; or `dev seed`, `dev install`",
        description="Without a subcommand: start Flint, seed a test merchant and a partner, "
        "register and start the sample plugin, print what to open, and stay up until Ctrl-C. "
        "The database is FLINT_DATABASE_URL.",
    )
    dev.add_argument("--http-port", type=int, default=8080, help="Flint's REST port (Envoy)")
    dev.add_argument("--grpc-port", type=int, default=50051)
    dev.add_argument("--hosted-port", type=int, default=8081)
    dev.add_argument("--admin-port", type=int, default=9901, help="Envoy admin port")
    dev.add_argument("--plugin-port", type=int, default=3000, help="the sample plugin's port")
    dev.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".flint-dev"),
        help="logs, the plugin's store and the env file (default .flint-dev)",
    )
    dev.add_argument("--password", help="merchant sign-in password (default: random)")
    dev.set_defaults(handler=cmd_dev)
    dev_commands = dev.add_subparsers(dest="dev_command")
    dev_seed = dev_commands.add_parser(
        "seed", help="create a test merchant, a partner and an example app"
    )
    dev_seed.add_argument("--password", help="merchant sign-in password (default: random)")
    _json_flag(dev_seed)
    dev_seed.set_defaults(handler=cmd_dev_seed)
    dev_install_cmd = dev_commands.add_parser(
        "install",
        help="install an app on a merchant without the browser (as if approved) and "
        "print its tokens; local development only",
    )
    dev_install_cmd.add_argument("--client-id", required=True)
    dev_install_cmd.add_argument("--client-secret", required=True)
    dev_install_cmd.add_argument("--merchant", required=True, help="merchant id, mer_…")
    dev_install_cmd.add_argument("--scope", required=True, help="space-separated scopes")
    dev_install_cmd.add_argument("--environment", choices=["test", "live"], default="test")
    _json_flag(dev_install_cmd)
    dev_install_cmd.set_defaults(handler=cmd_dev_install)

    _add_listen_parser(commands)

    keys = commands.add_parser(
        "keys",
        help="the key-encryption key (FLINT_KEK_FILE or FLINT_KEK) that seals stored secrets",
    )
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    keys_rotate = keys_commands.add_parser(
        "rotate",
        help="put a new key-encryption key first in FLINT_KEK_FILE, re-wrap every sealed "
        "secret with it, then drop the old key (resumes an interrupted rotation)",
    )
    _json_flag(keys_rotate)
    keys_rotate.set_defaults(handler=cmd_keys_rotate)
    keys_generate = keys_commands.add_parser(
        "generate", help="print a new key-encryption key line (`<id>:<base64>`)"
    )
    keys_generate.set_defaults(handler=cmd_keys_generate)

    billing = commands.add_parser("billing", help="app billing operations")
    billing_commands = billing.add_subparsers(dest="billing_command", required=True)
    run_cycles = billing_commands.add_parser(
        "run-cycles",
        help="expire, invoice and collect app charges due at --now (the server does "
        "this every 15 s with the real clock)",
    )
    run_cycles.add_argument(
        "--now", type=_iso_time, default=None, help="ISO 8601 time (default: now)"
    )
    _json_flag(run_cycles)
    run_cycles.set_defaults(handler=cmd_billing_run_cycles)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "grpc_port", None) is None and args.command in ("up", "envoy"):
        args.grpc_port = [50051]
    try:
        # `flint up` and `flint dev` make a development KEK when none is set.
        dev_stack = args.command == "up" or (args.command == "dev" and not args.dev_command)
        ensure_dev_kek(Settings.from_env().database_url, create=dev_stack)
        result: int = args.handler(args)
    except FlintError as error:
        print(f"flint: {error.message} ({error.reason})", file=sys.stderr)
        return 1
    except KekError as error:
        # Missing, malformed or wrong key-encryption key: one line, no stack trace.
        print(f"flint: {error}", file=sys.stderr)
        return 1
    except OperationalError as error:
        # Unreachable or unopenable database: say so, without a stack trace.
        print(f"flint: cannot use the database: {error.orig}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    raise SystemExit(main())
