"""A small webhook receiver for Flint: verifies each delivery's Standard Webhooks
signature over the raw body, drops duplicates by `webhook-id`, and writes one
line per verified event.

    python examples/webhook_receiver.py --port 3000 --secret whsec_… --log receiver.log

It answers 200 to a verified event (and to a duplicate of one), 400 to anything
else: a 4xx tells Flint not to retry a delivery it could not verify.
"""

from __future__ import annotations

import argparse
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Lock
from typing import Any, TextIO

from standardwebhooks import Webhook, WebhookVerificationError

PATH = "/webhooks"


class Receiver:
    """What the handler needs: the verifier, the ids already seen, and where
    verified events (`out`) and rejections (`err`) are written."""

    def __init__(self, secret: str, out: TextIO, err: TextIO = sys.stderr) -> None:
        self.webhook = Webhook(secret)
        self.out = out
        self.err = err
        self.seen: set[str] = set()
        self.lock = Lock()

    def handle(self, body: bytes, headers: dict[str, str]) -> int:
        """The status to answer for one delivery."""
        try:
            event: dict[str, Any] = self.webhook.verify(body, headers)
        except (WebhookVerificationError, ValueError) as error:  # ValueError: malformed
            print(f"rejected {headers.get('webhook-id', '?')}: {error}", file=self.err, flush=True)
            return 400
        with self.lock:
            if event["id"] in self.seen:  # deliveries are at least once
                return 200
            self.seen.add(event["id"])
        self.process(event)
        return 200

    def process(self, event: dict[str, Any]) -> None:
        # Your work goes here; answer within 15 s, so queue anything slow.
        self.say(
            f"verified {event['type']} {event['id']} "
            f"(object {event['object_id']}, version {event['object_version']})"
        )

    def say(self, line: str) -> None:
        with self.lock:
            print(line, file=self.out, flush=True)


def handler_for(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the name http.server calls
            if self.path != PATH:
                self.answer(404)
                return
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)  # the raw bytes: verify before parsing
            headers = {name.lower(): value for name, value in self.headers.items()}
            self.answer(receiver.handle(body, headers))

        def answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per event is enough

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Receive and verify Flint webhooks.")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument(
        "--secret",
        default=os.environ.get("FLINT_WEBHOOK_SECRET", ""),
        help="the endpoint's whsec_… secret (default: $FLINT_WEBHOOK_SECRET)",
    )
    parser.add_argument("--log", type=Path, help="append lines to this file (default: stdout)")
    args = parser.parse_args(argv)
    if not args.secret.startswith("whsec_"):
        parser.error("give the endpoint's secret (whsec_…) with --secret or FLINT_WEBHOOK_SECRET")
    out = args.log.open("a") if args.log else sys.stdout
    receiver = Receiver(args.secret, out)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(receiver))
    print(f"listening on http://127.0.0.1:{args.port}{PATH}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if out is not sys.stdout:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
