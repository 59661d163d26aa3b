"""Log output: plain text or one JSON object per line, with the current trace and span ids.

``configure(fmt, level)`` installs one handler on the root logger (stderr).  A JSON line has
``timestamp`` (UTC, RFC 3339 with milliseconds), ``level``, ``logger``, ``message``,
``trace_id`` and ``span_id`` (empty outside a span) and, for a logged exception,
``exception`` (its type and traceback).  Log records never carry private fields: the node
logs ids, counts and Wh, not labels, meter ids, locations, beneficiaries or tokens (a test
runs a whole flow at DEBUG and searches the output for them).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import TextIO

from eap.node.telemetry.core import current_ids
from eap.node.telemetry.settings import LOG_FORMATS

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_MARK = "_eap_telemetry_handler"


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        trace_id, span_id = current_ids()
        entry = {
            "timestamp": dt.datetime.fromtimestamp(record.created, dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "trace_id": trace_id,
            "span_id": span_id,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(
    fmt: str = "text", level: int | str = logging.INFO, stream: TextIO | None = None
) -> logging.Handler:
    """Route the root logger to ``stream`` (stderr) as ``fmt`` (``text`` or ``json``),
    replacing a handler installed by an earlier call; returns the handler.

    Raises:
        ValueError: an unknown format.
    """
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {list(LOG_FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    setattr(handler, _MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
