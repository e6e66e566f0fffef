"""Structured log lines: an event name and key=value fields, one line each.
Never pass a secret, token or card number as a field."""

from __future__ import annotations

import json
import logging
import os
import sys

# json.dumps(value, default=str), without building an encoder for every field of
# every line (a log line per RPC makes that a measurable share of a call).
_encode = json.JSONEncoder(default=str).encode


class _LineFormatter(logging.Formatter):
    # `flint up` names each child, so the lines of its many processes can be told apart.
    process = os.environ.get("FLINT_PROCESS", "")

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        parts = [self.formatTime(record), record.levelname.lower(), record.getMessage()]
        if self.process:
            parts.append(f"process={json.dumps(self.process)}")
        parts += [f"{key}={_encode(value)}" for key, value in fields.items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Alembic narrates every migration step at INFO; keep start-up output short.
    logging.getLogger("alembic").setLevel(logging.WARNING)


def log_event(
    logger: logging.Logger, event: str, *, level: int = logging.INFO, **fields: object
) -> None:
    logger.log(level, event, extra={"fields": fields})
