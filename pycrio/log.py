"""Daemon logging: one line per event, UTC timestamps, the RPC's request id when there is one."""

from __future__ import annotations

import contextvars
import logging
import sys
import time

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")

_LEVELS = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO, "debug": logging.DEBUG}


class _LineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        stamp += f".{int(record.created % 1 * 1_000_000):06d}Z"
        rid = request_id.get()
        text = record.getMessage()
        if record.exc_info:
            text += " | " + self.formatException(record.exc_info)
        text = text.replace("\\", "\\\\").replace("\n", "\\n")
        rid_part = f" req={rid}" if rid else ""
        return f"{stamp} {record.levelname.lower():7s} {record.name}{rid_part}: {text}"


def setup(level: str, stream=None) -> None:
    """Route the pycrio loggers to stream (stderr) at level."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_LineFormatter())
    root = logging.getLogger("pycrio")
    root.handlers[:] = [handler]
    root.propagate = False
    set_level(level)


def set_level(level: str) -> None:
    logging.getLogger("pycrio").setLevel(_LEVELS[level])
