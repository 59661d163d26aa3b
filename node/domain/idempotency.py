"""Idempotent mutations: a replayed request id returns the first result, unchanged."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection

from eap.node.domain.rules import REQUEST_ID_RE, Checker
from eap.node.errors import EapError, invalid
from eap.node.records.models import Principal, Serialisable
from eap.node.store import Store, repos
from eap.node.telemetry.ops import mark_replayed

R = TypeVar("R", bound=Serialisable)


def request_hash(operation: str, principal: Principal, payload: dict[str, Any]) -> str:
    body = json.dumps(
        {"op": operation, "by": principal.name, "req": payload}, sort_keys=True, default=str
    )
    return hashlib.sha256(body.encode()).hexdigest()


def check_request_id(request_id: str) -> None:
    """:class:`InvalidArgument` unless ``request_id`` is 1..128 printable ASCII characters."""
    check = Checker()
    check.text(
        request_id,
        "request_id",
        max_len=128,
        pattern=REQUEST_ID_RE,
        hint="1..128 printable ASCII characters",
    )
    check.done()


def run(
    store: Store,
    *,
    request_id: str,
    operation: str,
    principal: Principal,
    payload: dict[str, Any],
    result_type: type[R],
    fn: Callable[[Connection], R],
    replay: Callable[[R], R] | None = None,
) -> R:
    """Run ``fn`` in one transaction, recording its result under ``request_id``.

    A replay of the same id and content returns the stored first result (through ``replay`` if
    given, e.g. to blank a one-time secret); the same id with other content is rejected.
    """
    check_request_id(request_id)
    digest = request_hash(operation, principal, payload)

    def stored() -> R | None:
        with store.read() as conn:
            row = repos.get_idempotent(conn, request_id)
        if row is None:
            return None
        if row.operation != operation or row.request_hash != digest:
            raise invalid("request_id", "already used for a different request")
        first = result_type.from_dict(json.loads(row.response))
        return replay(first) if replay else first

    first = stored()
    if first is not None:
        mark_replayed()
        return first
    try:
        with store.transaction() as conn:
            result = fn(conn)
            repos.put_idempotent(
                conn, request_id, operation, digest, result.to_dict(), int(time.time() * 1000)
            )
        return result
    except EapError:
        # A concurrent copy of this request may have committed first, and its effect made this
        # one fail (whatever the error: the bundle moved away, was split, changed owner, or
        # the id raced on insert): every copy answers with the first result.
        first = stored()
        if first is not None:
            return first
        raise
