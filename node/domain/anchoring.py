"""The durable anchor queue: every issuance batch reaches every anchoring plugin, once.

The issuance transaction writes one ``anchor_queue`` row per anchoring plugin (those that
implement ``eap_batch_issued``) beside the batch itself, so a batch is either issued *and*
queued or neither.  :func:`drain` then hands queued batches to their plugin in seq order, each
call bounded by ``[plugins] timeout_s``, and marks a row done only after its plugin returned.
A plugin that is down (raises, hangs) keeps its rows and blocks only itself: issuance goes on
and the queue catches up on the next drain, which runs right after each issuance, in
``eap-node serve`` every ``[plugins] anchor_interval_s`` seconds and on
``eap-node anchor catch-up``.

Nothing is sent twice to a plugin that answered, except after a crash between its answer and
the row being marked done: then the batch is sent again with the same seq, which is why the
hook must be idempotent per ``(node_id, seq)`` (the built-in ``anchor_log`` is).  The same
holds across replicas of one node: one drains at a time, and one killed mid-drain leaves its
rows to the next drain elsewhere, which sends at most the one in flight again.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Connection, and_, case, func, insert, select, update

from eap.node import batches
from eap.node.crypto.keys import now_ms
from eap.node.domain import plugin_calls
from eap.node.errors import EapError
from eap.node.store import schema as t
from eap.node.telemetry.ops import traced

log = logging.getLogger(__name__)

HOOK = "eap_batch_issued"
#: One drain at a time per database: the serve worker of every replica, issuance and the CLI
#: may overlap (:mod:`eap.node.store.coordination`; a dead drainer's lock is released with it).
DRAIN_LOCK = "anchor-drain"


def anchoring_plugins(plugins: Any) -> list[str]:
    """Names of the loaded plugins implementing the anchoring hook, in call order."""
    return [name for name, _ in plugin_calls.impls(plugins, HOOK)]


def enqueue(conn: Connection, plugins: Any, seq: int) -> int:
    """Queue batch ``seq`` for every anchoring plugin, inside the issuance transaction."""
    names = anchoring_plugins(plugins)
    if names:
        at = now_ms()
        conn.execute(
            insert(t.anchor_queue),
            [{"seq": seq, "plugin": name, "enqueued_at_ms": at} for name in names],
        )
    return len(names)


@traced(
    "eap.anchor",
    lambda d: {"anchored": d["anchored"], "failed": len(d["failed"]), "pending": d["pending"]},
)
def drain(node: Any, *, limit: int = 1000) -> dict:
    """Send queued batches to their plugins, oldest first; stop a plugin at its first failure.

    Returns:
        ``{"anchored": n, "failed": {plugin: error}, "pending": m}`` (pending: rows still
        waiting afterwards, including those of plugins not loaded in this process).
    """
    timeout_s = plugin_calls.timeout_of(node)
    anchored, failed = 0, {}
    with node.store.coordinator.exclusive(DRAIN_LOCK, wait=True):
        for plugin, impl in plugin_calls.impls(node.plugins, HOOK):
            with node.store.read() as conn:
                b = t.batches.c
                rows = conn.execute(
                    select(t.anchor_queue.c.seq, b.count, b.wh, b.merkle_root, b.key_id,
                           b.signature)
                    .join(t.batches, b.seq == t.anchor_queue.c.seq)
                    .where(
                        t.anchor_queue.c.plugin == plugin,
                        t.anchor_queue.c.anchored_at_ms.is_(None),
                    )
                    .order_by(t.anchor_queue.c.seq)
                    .limit(limit)
                ).all()
            for row in rows:
                kwargs = {
                    "node_id": node.node_id,
                    "seq": row.seq,
                    "count": row.count,
                    "wh": row.wh,
                    "merkle_root": bytes(row.merkle_root),
                    "signature": _signature(node, row),
                    "key_id": row.key_id,
                    "home": str(node.config.home),
                }
                try:
                    plugin_calls.call(impl, kwargs, timeout_s, plugin)
                except EapError as exc:
                    log.warning("anchoring batch %s with %s failed: %s", row.seq, plugin, exc)
                    _record_failure(node, row.seq, plugin, str(exc))
                    failed[plugin] = str(exc)
                    break
                mark_done(node, row.seq, plugin)
                anchored += 1
    return {"anchored": anchored, "failed": failed, "pending": pending_count(node)}


def _signature(node: Any, row: Any) -> bytes:
    """A queued batch's signature: its own column, or inside the payload of a batch stored
    before the column was (migration 0023)."""
    if row.signature is not None:
        return bytes(row.signature)
    with node.store.read() as conn:
        payload = conn.execute(select(t.batches.c.payload).where(t.batches.c.seq == row.seq))
        return batches.parse(payload.scalar_one()).signature


def mark_done(node: Any, seq: int, plugin: str) -> None:
    """Record that ``plugin`` anchored batch ``seq``."""
    with node.store.transaction() as conn:
        conn.execute(
            update(t.anchor_queue)
            .where(
                t.anchor_queue.c.seq == seq,
                t.anchor_queue.c.plugin == plugin,
                t.anchor_queue.c.anchored_at_ms.is_(None),
            )
            .values(anchored_at_ms=now_ms(), attempts=t.anchor_queue.c.attempts + 1)
        )


def _record_failure(node: Any, seq: int, plugin: str, error: str) -> None:
    with node.store.transaction() as conn:
        conn.execute(
            update(t.anchor_queue)
            .where(t.anchor_queue.c.seq == seq, t.anchor_queue.c.plugin == plugin)
            .values(attempts=t.anchor_queue.c.attempts + 1, last_error=error[:2000])
        )


def pending_count(node: Any) -> int:
    with node.store.read() as conn:
        return int(
            conn.execute(
                select(func.count()).where(t.anchor_queue.c.anchored_at_ms.is_(None))
            ).scalar_one()
        )


def status(node: Any) -> list[dict]:
    """Per plugin with queued rows (loaded or not): anchored and pending counts, the oldest
    pending seq and the last error: ``[{plugin, loaded, anchored, pending, oldest_pending,
    last_error}]``."""
    loaded = set(anchoring_plugins(node.plugins))
    q = t.anchor_queue.c
    with node.store.read() as conn:
        counts = conn.execute(
            select(
                q.plugin,
                func.count(q.anchored_at_ms).label("anchored"),
                func.sum(_is_pending()).label("pending"),
                func.min(_pending_seq()).label("oldest"),
            ).group_by(q.plugin)
        ).all()
        errors = dict(
            conn.execute(
                select(q.plugin, q.last_error).where(
                    and_(q.anchored_at_ms.is_(None), q.last_error != "")
                )
            ).all()
        )
    out = {
        r.plugin: {
            "plugin": r.plugin,
            "loaded": r.plugin in loaded,
            "anchored": int(r.anchored or 0),
            "pending": int(r.pending or 0),
            "oldest_pending": r.oldest,
            "last_error": errors.get(r.plugin, ""),
        }
        for r in counts
    }
    for name in loaded - set(out):
        out[name] = {
            "plugin": name,
            "loaded": True,
            "anchored": 0,
            "pending": 0,
            "oldest_pending": None,
            "last_error": "",
        }
    return [out[k] for k in sorted(out)]


def _is_pending():
    return case((t.anchor_queue.c.anchored_at_ms.is_(None), 1), else_=0)


def _pending_seq():
    return case((t.anchor_queue.c.anchored_at_ms.is_(None), t.anchor_queue.c.seq), else_=None)
