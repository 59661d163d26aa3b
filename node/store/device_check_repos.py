"""Repositories of the duplicate-device check (:mod:`eap.node.domain.sybil`): published tags,
peers' tags, per-peer tags of local meters and the duplicate alerts.  Every function takes an
open connection inside the caller's unit of work; none stores or returns a meter id."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, and_, func, insert, select
from sqlalchemy.exc import IntegrityError

from eap.node.store import schema as t


def add_own_tag(conn: Connection, device_id: str, tag: bytes, at_ms: int) -> None:
    conn.execute(insert(t.device_tags).values(device_id=device_id, tag=tag, added_at_ms=at_ms))


def own_tags_after(conn: Connection, after_seq: int, limit: int) -> list[tuple[int, bytes]]:
    rows = conn.execute(
        select(t.device_tags.c.seq, t.device_tags.c.tag)
        .where(t.device_tags.c.seq > after_seq)
        .order_by(t.device_tags.c.seq)
        .limit(limit)
    ).all()
    return [(int(r.seq), bytes(r.tag)) for r in rows]


def own_tag_count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(t.device_tags)).scalar_one())


def devices_without_own_tag(conn: Connection, limit: int) -> list[tuple[str, str]]:
    """``(device id, meter id)`` of devices registered before the check existed."""
    d, g = t.devices, t.device_tags
    rows = conn.execute(
        select(d.c.id, d.c.meter_id)
        .select_from(d.outerjoin(g, g.c.device_id == d.c.id))
        .where(g.c.seq.is_(None))
        .order_by(d.c.registered_at_ms, d.c.id)
        .limit(limit)
    ).all()
    return [(r.id, r.meter_id) for r in rows]


def peer_cursor(conn: Connection, peer: str) -> int:
    got = conn.execute(
        select(func.max(t.peer_device_tags.c.seq)).where(t.peer_device_tags.c.peer == peer)
    ).scalar_one()
    return int(got or 0)


def peer_tag_count(conn: Connection, peer: str) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(t.peer_device_tags)
            .where(t.peer_device_tags.c.peer == peer)
        ).scalar_one()
    )


def add_peer_tags(conn: Connection, peer: str, tags: Sequence[tuple[int, bytes]]) -> None:
    if tags:
        conn.execute(
            insert(t.peer_device_tags), [{"peer": peer, "seq": s, "tag": g} for s, g in tags]
        )


def peer_has_tag(conn: Connection, peer: str, tag: bytes) -> bool:
    return (
        conn.execute(
            select(t.peer_device_tags.c.seq)
            .where(and_(t.peer_device_tags.c.peer == peer, t.peer_device_tags.c.tag == tag))
            .limit(1)
        ).first()
        is not None
    )


def devices_unchecked_for(conn: Connection, peer: str, limit: int) -> list[tuple[str, str]]:
    """``(device id, meter id)`` of local devices with no tag under ``peer``'s key yet."""
    d, p = t.devices, t.device_peer_tags
    rows = conn.execute(
        select(d.c.id, d.c.meter_id)
        .select_from(d.outerjoin(p, and_(p.c.device_id == d.c.id, p.c.peer == peer)))
        .where(p.c.device_id.is_(None))
        .order_by(d.c.registered_at_ms, d.c.id)
        .limit(limit)
    ).all()
    return [(r.id, r.meter_id) for r in rows]


def add_peer_checks(conn: Connection, rows: Iterable[tuple[str, str, bytes]], at_ms: int) -> None:
    """Store ``(device id, peer, tag under the peer's key)``; existing pairs are kept."""
    for device_id, peer, tag in rows:
        try:
            with conn.begin_nested():
                conn.execute(
                    insert(t.device_peer_tags).values(
                        device_id=device_id, peer=peer, tag=tag, checked_at_ms=at_ms
                    )
                )
        except IntegrityError:
            pass


def matches(conn: Connection, peer: str) -> list[tuple[str, str, bytes]]:
    """``(device id, local ref, tag)`` of local devices whose tag under ``peer``'s key the peer
    publishes: meters registered at both nodes."""
    p, g, d = t.device_peer_tags, t.peer_device_tags, t.devices
    rows = conn.execute(
        select(p.c.device_id, d.c.local_ref, p.c.tag)
        .select_from(
            p.join(g, and_(g.c.peer == p.c.peer, g.c.tag == p.c.tag)).join(
                d, d.c.id == p.c.device_id
            )
        )
        .where(p.c.peer == peer)
        .distinct()
    ).all()
    return [(r.device_id, r.local_ref, bytes(r.tag)) for r in rows]


def add_duplicate(
    conn: Connection,
    *,
    peer: str,
    device_id: str,
    local_ref: str,
    action: str,
    peer_tag: bytes,
    at_ms: int,
) -> bool:
    """Record an alert; False if the same one exists already."""
    try:
        with conn.begin_nested():
            conn.execute(
                insert(t.device_duplicates).values(
                    peer=peer,
                    device_id=device_id,
                    local_ref=local_ref,
                    action=action,
                    peer_tag=peer_tag,
                    detected_at_ms=at_ms,
                )
            )
        return True
    except IntegrityError:
        return False


def duplicates(conn: Connection) -> list:
    dd = t.device_duplicates
    return list(conn.execute(select(dd).order_by(dd.c.id)).all())
