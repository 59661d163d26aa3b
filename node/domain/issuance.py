"""Issuance: signed batches of record bundles from the readings not yet issued.

:func:`issue_all` (``eap-node issue``) streams through every pending reading with keyset
pagination by reading id, a window of up to 2,000,000 readings at a time, and issues each
window in device order in signed batches of ``batch_size`` readings: each batch is its own
transaction (readings claimed, bundles, batch, custody, journal, anchor queue) under its own
idempotency key derived from the request id.  Nothing is loaded whole, and issuers are
serialised per batch (PostgreSQL: an advisory lock; SQLite: the write lock).  A crash loses
at most the batch in flight (rolled back); running again (same request id or a new one)
issues what is still pending, so every reading is issued exactly once.

:func:`issue_one` (the ``IssueRecords`` RPC) issues one such batch of at most
``[limits] max_batch_records`` readings per call; a client calls again until nothing is issued.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import Connection

from eap.node import batches, kernels
from eap.node.domain import anchoring, idempotency
from eap.node.domain.ledger import now_ms
from eap.node.errors import Aborted, FieldViolation, NotFound, invalid
from eap.node.federation import crashpoints
from eap.node.records.models import IssueAllResult, IssueResult, Principal
from eap.node.store import custody_repos, repos, run_repos

if TYPE_CHECKING:
    from eap.node.domain.node import Node

#: Called with (readings done, readings pending at the start) after each batch.
Progress = Callable[[int, int], None]


def check_batch_size(node: Node, batch_size: int | None) -> int:
    """``batch_size`` or the configured default, within ``1..[limits] max_batch_records``."""
    limit = node.config.max_batch_records
    size = limit if batch_size is None else batch_size
    if not 1 <= size <= limit:
        raise invalid("batch_size", f"must be between 1 and {limit} ([limits] max_batch_records)")
    return size


def _device_filter(conn: Connection, device: str) -> str:
    if not device:
        return ""
    dev = repos.get_device(conn, device)
    if dev is None:
        raise NotFound(f"no device {device}", [FieldViolation("device", "unknown device")])
    return dev.id


def _batch_key(request_id: str, k: int) -> str:
    """The idempotency key of batch ``k`` of a run (at most 128 characters)."""
    base = request_id if len(request_id) <= 96 else hashlib.sha256(request_id.encode()).hexdigest()
    return f"{base}#batch{k}"


def issue_one(
    node: Node,
    *,
    request_id: str,
    device: str = "",
    since: int = 0,
    principal: Principal | None = None,
) -> IssueResult:
    """Issue one signed batch of at most ``[limits] max_batch_records`` pending readings."""
    principal = principal or Principal.operator()
    node._operator_only(principal, "issue records")
    if since < 0:
        raise invalid("since", "must be >= 0")
    size = node.config.max_batch_records

    def rows(conn: Connection) -> repos.PendingReadings:
        found = repos.pending_page(conn, 0, size, _device_filter(conn, device), since, lock=True)
        return repos.PendingReadings.of_rows(found)

    return _run_batch(
        node,
        request_id=request_id,
        principal=principal,
        payload={"device": device, "since": since},
        rows=rows,
    )[0]


#: ``issue_all`` reads this many batches' worth of pending readings at once (at most
#: :data:`MAX_WINDOW`, 88 MB) and cuts its batches from them in device order.  The deeper a
#: window, the more hours of each device it holds, and the fewer times each page of the
#: bundles' device index is rewritten: meter files come hour by hour, so at 100,000 meters a
#: window of 500,000 readings held five hours of each, and each page of that index was
#: written (and committed) five times a day's issuance instead of about once.
WINDOW_BATCHES = 20
MAX_WINDOW = 2_000_000


class _Taken(Aborted):
    """Another issuer took some of a batch's readings after they were read."""


def issue_all(
    node: Node,
    *,
    request_id: str,
    device: str = "",
    since: int = 0,
    batch_size: int | None = None,
    principal: Principal | None = None,
    progress: Progress | None = None,
) -> IssueAllResult:
    """Issue every pending reading (of ``device``, from ``since``) in signed batches.

    Pending readings are read a window at a time by reading id (keyset pagination, never
    everything at once); each window is put in device order and cut into batches, so a batch
    covers few devices and few owners (the bundle indexes by device and by owner are then
    written in few places).  Each batch claims its readings first in its own transaction; if
    another issuer took any since the window was read, the batch rolls back and the window is
    read again.

    A replay of ``request_id`` returns the first run's batches; after a crash it replays the
    committed batches and goes on with what is still pending.  An error stops the run: the
    batches committed before it stay issued.
    """
    principal = principal or Principal.operator()
    node._operator_only(principal, "issue records")
    if since < 0:
        raise invalid("since", "must be >= 0")
    size = check_batch_size(node, batch_size)
    idempotency.check_request_id(request_id)
    with node.store.read() as conn:
        dev_filter = _device_filter(conn, device)
        # the total is for the progress bar only: counting is a scan of every reading
        total = repos.count_pending(conn, dev_filter, since)[0] if progress else 0
    window = max(size, min(MAX_WINDOW, size * WINDOW_BATCHES))
    out = IssueAllResult()
    done, after_id, k = 0, 0, 0
    if progress:
        progress(0, total)
    while True:
        with node.store.read() as conn:
            todo = repos.pending_window(conn, after_id, window, dev_filter, since)
        last_window = len(todo) < window
        read_to = int(todo.ids.max()) if len(todo) else after_id
        todo, pos = todo.device_major(), 0
        while pos < len(todo) or last_window:
            part = todo.take(slice(pos, pos + size))
            try:
                result, fresh = _run_batch(
                    node,
                    request_id=_batch_key(request_id, k),
                    principal=principal,
                    payload={"device": device, "since": since, "batch_size": size, "batch": k},
                    rows=lambda _conn, part=part: part,
                )
            except _Taken:
                break  # read the window again: what is still pending
            k += 1
            if not result.batch_seq:
                return out  # nothing was pending (or, in a replay, nothing more was then)
            if fresh:
                pos += len(part)
            out.batches += 1
            out.bundles += result.bundles
            out.wh += result.wh
            out.batch_seqs.append(result.batch_seq)
            done += len(part) if fresh else result.bundles
            if progress:
                progress(min(done, max(total, done)), max(total, done))
            crashpoints.hit("issue.after_batch_commit")
        else:
            after_id = read_to


def _run_batch(
    node: Node,
    *,
    request_id: str,
    principal: Principal,
    payload: dict,
    rows: Callable[[Connection], repos.PendingReadings],
) -> tuple[IssueResult, bool]:
    """One batch in its own transaction, over ``rows(conn)`` read in it: (result, fresh);
    ``fresh`` is false when the result is a replay of the request id's first run."""
    fresh: list[IssueResult] = []

    def op(conn: Connection) -> IssueResult:
        repos.lock_issuance(conn)
        pending = rows(conn)
        if not len(pending):
            return IssueResult()
        result = issue_rows(node, conn, pending)
        # queued in the issuance transaction: a crash after the commit loses no anchor
        anchoring.enqueue(conn, node.plugins, result.batch_seq)
        crashpoints.hit("issue.in_batch_txn")
        fresh.append(result)
        return result

    result = idempotency.run(
        node.store,
        request_id=request_id,
        operation="issue",
        principal=principal,
        payload=payload,
        result_type=IssueResult,
        fn=op,
    )
    if fresh and result.batch_seq:
        node._anchor()
        node.record_event(
            "issued",
            request_id,
            batch_seq=result.batch_seq,
            bundles=result.bundles,
            wh=result.wh,
        )
    return result, bool(fresh)


def issue_rows(node: Node, conn: Connection, rows: repos.PendingReadings) -> IssueResult:
    """Claim, validate, hash, sign and store one batch over ``rows`` (pending readings, each
    issued in full) inside the caller's transaction (which holds the issuance lock).

    Raises:
        Aborted: another issuer took some of the readings since they were read.
    """
    if len(rows) > node.config.max_batch_records:
        rows = rows.take(slice(0, node.config.max_batch_records))
    n = len(rows)
    if repos.claim_pending(conn, rows.ids) != n:
        raise _Taken("readings were issued concurrently; read them again")
    remaining = rows.wh - rows.issued
    # the batch's own device dictionary, in first-seen order
    uniq, first, inverse = np.unique(rows.device, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    dev_codes = rank[inverse].astype(np.int32)
    dev_table = [rows.devices[i] for i in uniq[order].tolist()]
    devs = repos.issuance_devices(conn, dev_table)
    d = [devs[x] for x in dev_table]
    zone_codes, zones = batches.encode_dictionary([x.zone for x in d])
    owner_codes, owners = batches.encode_dictionary([x.owner for x in d])

    def per_dev(attr: str, dtype) -> np.ndarray:
        return np.array([getattr(x, attr) for x in d], dtype)[dev_codes]

    base = repos.bump(conn, "serial", int(remaining.sum()))
    serial_ends = base + np.cumsum(remaining)
    arrays = {
        "serial_start": serial_ends - remaining,
        "serial_end": serial_ends,
        "interval_start": rows.starts,
        "interval_end": rows.ends,
        "device": dev_codes,
        "source": per_dev("source", np.uint8),
        "technology": per_dev("technology", np.uint8),
        "renewable_ppm": per_dev("renewable_ppm", np.uint32),
        "carbon_mg": per_dev("carbon_mg", np.uint32),
        "zone": zone_codes[dev_codes],
        "owner": owner_codes[dev_codes],
    }
    # Zero-Wh readings issue nothing; everything else goes through the core's rule check.
    live = remaining > 0
    arrays = {k: v[live] for k, v in arrays.items()}
    capacity = per_dev("capacity_w", np.int64)[live]
    cols = batches.Columns(arrays, dev_table, zones, owners)
    codes = kernels.validate(arrays, capacity_w=capacity, metered_wh=remaining[live])
    kernels.raise_for_codes(codes, "records violate issuance rules")
    leaves = cols.leaf_hashes()
    root = kernels.merkle_root(leaves)
    seq = repos.bump(conn, "batch") + 1
    at = now_ms()
    key_id, signature = node.keys.sign(batches.header_bytes(node.node_id, seq, len(cols), root))
    msg = batches.to_proto(
        cols,
        issuer=node.node_id,
        seq=seq,
        root=root,
        created_at_ms=at,
        key_id=key_id,
        signature=signature,
    )
    wh = int(remaining[live].sum())
    repos.insert_batch(
        conn,
        seq=seq,
        count=len(cols),
        wh=wh,
        merkle_root=root,
        key_id=key_id,
        payload=msg.SerializeToString(),
        created_at_ms=at,
        signature=signature,
    )
    issuer = node.node_id
    m = len(arrays["serial_start"])
    # Stored as runs, one row per device of the batch (run_repos): a record gets its own
    # bundles row on its first change.
    run_repos.insert_runs(
        conn,
        issuer=issuer,
        batch_seq=seq,
        issued_at_ms=at,
        records={
            "serial_start": arrays["serial_start"],
            "serial_end": arrays["serial_end"],
            "interval_start": arrays["interval_start"],
            "interval_end": arrays["interval_end"],
            "device": arrays["device"],
        },
        devices=[
            {
                "device_id": dev_table[i],
                "source": x.source,
                "technology": x.technology,
                "renewable_ppm": x.renewable_ppm,
                "carbon_mg": x.carbon_mg,
                "zone": x.zone,
                "cell": x.cell,
                "owner": x.owner,
            }
            for i, x in enumerate(d)
        ],
        lineage=kernels.issued_lineages(
            leaves, issuer, arrays["serial_start"], arrays["serial_end"]
        ).tobytes(),
    )
    custody_repos.add_range(conn, int(base), int(base) + wh, issuer, at)
    repos.journal(
        conn,
        [
            {
                "at_ms": at,
                "action": "issue",
                "bundle_id": None,
                "from_owner": None,
                "to_owner": None,
                "wh": wh,
                "request_id": f"batch:{seq}",
            }
        ],
    )
    return IssueResult(bundles=m, wh=wh, batch_seq=seq, merkle_root=root)
