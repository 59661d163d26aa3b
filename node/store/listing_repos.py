"""Bundle listings rendered by the database: each row as its line of JSON Lines.

``eap-node bundles --json`` prints a bundle as the CLI's machine output gives it,
``json.dumps(machine_record(bundle), sort_keys=True)``: keys sorted, ``", "`` and ``": "``
between them, integers in decimal, enum fields named as the protocol names them (an unknown
number stays a number), strings JSON-quoted with everything outside ASCII escaped.  Building
that text per row in Python costs more than reading the row, so here the database builds it,
one text column per row (SQLite ``printf``, PostgreSQL ``concat``, the enum names from
``CASE`` expressions over :data:`~eap.node.records.enums.FIELD_ENUMS`), in the keyset pages
of :func:`~eap.node.store.repos.bundles_page_query`.

Strings are quoted by the database (SQLite ``json_quote``, PostgreSQL ``to_json``).  For
ASCII other than DEL both escape exactly what Python's ``json`` escapes (``"``, ``\\`` and the
control characters, in the same spellings); non-ASCII characters and DEL they write as they
are, where Python escapes them, so a line holding any is not taken as it is: the caller
renders that row from its record (:func:`bundles_by_id`).
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Iterator, Sequence

from sqlalchemy import (
    Connection,
    Integer,
    String,
    Text,
    case,
    cast,
    func,
    literal_column,
    select,
)
from sqlalchemy.sql.elements import ColumnElement

from eap.node.records.enums import FIELD_ENUMS, Status
from eap.node.records.models import Bundle
from eap.node.store import repos, run_repos
from eap.node.store import schema as t


def _const(s: str) -> ColumnElement:
    """``s`` as an SQL string literal (our own constants: field and enum names, punctuation)."""
    if "'" in s or "\\" in s:
        raise ValueError(f"not a plain constant: {s!r}")
    return literal_column(f"'{s}'", Text)


def _quoted(col: ColumnElement, dialect: str) -> ColumnElement:
    """The JSON string of ``col`` (``null`` for NULL)."""
    if dialect == "sqlite":
        return func.json_quote(col)
    return func.coalesce(cast(func.to_json(col), Text), _const("null"))


def _line(dialect: str) -> ColumnElement:
    """A bundle row as its JSON line (no newline), built by one function call (SQLite
    ``printf``, PostgreSQL ``concat``) rather than a chain of ``||`` copies."""
    c = t.bundles.c
    fmt: list[str] = []  # SQLite: the constants in the format, each value as %s
    args: list[ColumnElement] = []
    for i, name in enumerate(sorted(Bundle.__dataclass_fields__)):
        col = c[name]
        key = ("{" if i == 0 else ", ") + json.dumps(name) + ": "
        fmt.append(key.replace("%", "%%") + "%s")
        if dialect != "sqlite":
            args.append(_const(key))
        if name in FIELD_ENUMS:
            names = {int(m): _const(json.dumps(m.name)) for m in FIELD_ENUMS[name]}
            args.append(case(names, value=col, else_=cast(col, Text)))
        elif isinstance(col.type, Integer):
            args.append(cast(col, Text))
        elif isinstance(col.type, String):
            args.append(_quoted(col, dialect))
        else:  # a new column type needs its rendering here (and in the CLI's machine output)
            raise TypeError(f"bundles.{name}: no JSON rendering for {col.type!r}")
    if dialect == "sqlite":
        return func.printf(_const("".join(fmt) + "}"), *args, type_=Text)
    return func.concat(*args, _const("}"), type_=Text)


_LINES: dict[str, ColumnElement] = {}

#: Per enum field: number -> protocol name.
_NAMES = {key: {int(m): m.name for m in kind} for key, kind in FIELD_ENUMS.items()}
#: The fields that differ between the records of one issuance run.
_PER_RECORD = ("id", "interval_end", "interval_start", "lineage_hash", "serial_end", "serial_start")


def bundle_line(bundle: Bundle) -> str:
    """``bundle`` as its line of JSON Lines (no newline), in Python: what the CLI's machine
    output prints for it (enum fields named, keys sorted); the database renders the same."""
    out = dict(vars(bundle))
    for key, names in _NAMES.items():
        value = out[key]
        if type(value) is int:
            out[key] = names.get(value, value)
    return json.dumps(out, sort_keys=True)


def _run_template(run: run_repos.Run) -> str:
    """A ``%`` format of :func:`bundle_line` for the records of ``run``: the fields the
    records share written out, the others (:data:`_PER_RECORD`) as ``%d``/``%s`` slots taking
    ``(start, end, interval end, interval start, lineage hex, end, start)``."""
    sample = dict(vars(run.bundle(0)))
    for key, names in _NAMES.items():
        if type(sample[key]) is int:
            sample[key] = names.get(sample[key], sample[key])
    parts = []
    for name in sorted(sample):
        if name == "id":  # "issuer/start-end": JSON quotes neither digits, "-" nor "/"
            value = json.dumps(run.issuer + "/")[:-1].replace("%", "%%") + '%d-%d"'
        elif name == "lineage_hash":
            value = '"%s"'
        elif name in _PER_RECORD:
            value = "%d"
        else:
            value = json.dumps(sample[name]).replace("%", "%%")
        parts.append(json.dumps(name) + ": " + value)
    return "{" + ", ".join(parts) + "}"


def run_lines(run: run_repos.Run, indexes) -> Iterator[tuple[tuple[str, int, int], str, str]]:
    """``(key, id, JSON line)`` of the run's records at ``indexes``, from one template."""
    tmpl, issuer, lin = _run_template(run), run.issuer, run.lineage
    serials, ends = run.serials.tolist(), run.ends.tolist()
    starts, stops = run.interval_starts.tolist(), run.interval_ends.tolist()
    for i in indexes:
        s, e = serials[i], ends[i]
        h = lin[i * run_repos.HASH : (i + 1) * run_repos.HASH].hex()
        yield (issuer, s, e), f"{issuer}/{s}-{e}", tmpl % (s, e, stops[i], starts[i], h, e, s)


def bundle_lines_page(
    conn: Connection,
    *,
    owner: str | None,
    status: int | None,
    device: str | None,
    after: str,
    limit: int,
) -> list[tuple[str, str]]:
    """One keyset page of bundles (the rows of
    :func:`~eap.node.store.repos.bundles_page_query`) as ``(id, JSON line)``; a line is
    exact where it is all printable ASCII (see the module docstring)."""
    dialect = conn.dialect.name
    line = _LINES.get(dialect)
    if line is None:
        line = _LINES[dialect] = _line(dialect).label("line")
    c = t.bundles.c
    q = repos.bundles_page_query(
        owner=owner, status=status, device=device, after=after, limit=limit
    ).with_only_columns(c.id, line, c.issuer, c.serial_start, c.serial_end)
    rows = [((r[2], r[3], r[4]), r[0], r[1]) for r in conn.execute(q)]
    if status and status != int(Status.ACTIVE):
        return [(i, x) for _, i, x in rows]
    fresh = _fresh_lines(conn, owner=owner, device=device, after=after)
    merged = heapq.merge(rows, fresh, key=lambda r: r[0])
    return [(i, x) for _, i, x in itertools.islice(merged, limit)]


def _fresh_lines(conn: Connection, *, owner, device, after: str):
    """Lines of the run records without a row matching the filters, past ``after``."""
    key = repos.bundle_page_key(after) if after else None
    for run in run_repos.iter_runs(
        conn, owner=owner, device=device, after=None if key is None else key[:2]
    ):
        yield from run_lines(run, run_repos.fresh_indexes(conn, run, key))


def bundles_by_id(conn: Connection, ids: Sequence[str]) -> dict[str, Bundle]:
    """The bundles of ``ids`` that exist, by id."""
    if not ids:
        return {}
    c = t.bundles.c
    cols = [c[f] for f in Bundle.__dataclass_fields__]
    out = {r.id: Bundle(*r) for r in conn.execute(select(*cols).where(c.id.in_(list(ids))))}
    for i in ids:
        if i not in out:  # a record still in its issuance run
            found = repos.get_bundle(conn, i)
            if found is not None:
                out[i] = found[0]
    return out
