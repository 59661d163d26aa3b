"""Malformed request bodies: INVALID_ARGUMENT and one rate-limited log line, not a traceback.

gRPC Python decodes a request before any servicer code runs; when the bytes are not a valid
message it logs a full traceback and answers INTERNAL, for every such request and before the
caller is authenticated.  :class:`MalformedRequestGuard` is a server interceptor that wraps the
request deserializer of every unary-request method: a body that does not decode becomes a
:class:`Malformed` marker, which the wrapped method answers with INVALID_ARGUMENT (through
:func:`eap.node.api.status.abort_with`) after logging one line through :class:`ThrottledLog`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from eap.node.api.status import abort_with
from eap.node.errors import InvalidArgument

log = logging.getLogger(__name__)

#: Default: at most one log line per method per this many seconds.
LOG_INTERVAL_S = 60.0


class Malformed:
    """Stands for a request body that failed to decode; ``why`` is one short line."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


def _one_line(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:limit]


def lenient(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """``deserializer`` that returns :class:`Malformed` instead of raising."""

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError, or whatever a parser raises on garbage
            return Malformed(_one_line(exc))

    return parse


class ThrottledLog:
    """At most one WARNING line per key per ``interval_s``; the next one counts the rest."""

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, message: str) -> bool:
        """Log ``message`` unless ``key`` logged within the interval; True if it was logged."""
        now = self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            skipped = self._suppressed.pop(key, 0)
        if skipped:
            message += f" ({skipped} more since the last report)"
        self.logger.warning("%s", message)
        return True


class MalformedRequestGuard(grpc.ServerInterceptor):
    """Answer undecodable unary request bodies with INVALID_ARGUMENT (see the module doc)."""

    def __init__(self, throttle: ThrottledLog | None = None) -> None:
        self.throttle = throttle or ThrottledLog(log)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if (
            handler is None
            or not hasattr(handler, "_replace")  # grpc's own handlers are namedtuples
            or handler.request_streaming
            or handler.request_deserializer is None
        ):
            return handler
        method = handler_call_details.method
        if handler.response_streaming:
            return handler._replace(
                request_deserializer=lenient(handler.request_deserializer),
                unary_stream=self._guard(method, handler.unary_stream),
            )
        return handler._replace(
            request_deserializer=lenient(handler.request_deserializer),
            unary_unary=self._guard(method, handler.unary_unary),
        )

    def _guard(self, method: str, behavior: Callable) -> Callable:
        def guarded(request: Any, context: grpc.ServicerContext):
            if isinstance(request, Malformed):
                self._refuse(method, request, context)
            return behavior(request, context)

        return guarded

    def _refuse(self, method: str, request: Malformed, context: grpc.ServicerContext) -> None:
        self.throttle.warning(
            method, f"malformed request body for {method} from {context.peer()}: {request.why}"
        )
        abort_with(context, InvalidArgument(f"malformed request body for {method}"))
