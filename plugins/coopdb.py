"""Plugin ``coopdb``: a co-operative's own member system in its own SQL database (MariaDB/MySQL).

It is two things, both reading ``[settlement.coopdb]`` of ``eap-node.toml``:

* an **account directory** (``eap_account_directories``): which node account a co-op member
  holds and which member holds a node account, read from the co-op's member table on each
  call.  Nothing about a member (name, address, e-mail...) is copied into the node: only the
  member's reference and account id cross, and the node stores neither;
* a **settlement backend** ``coopdb`` (``eap_settlement_backends``): each executed side of a
  settlement instruction is posted into ledger tables in the co-op's database (created by the
  plugin there, never in the node's), as one balanced entry in one database transaction.

The schema it expects and creates (names configurable, see :class:`CoopDbSettings`):

``members`` (owned by the co-op, never created or written by the plugin)
    ``member_ref`` (unique), ``node_account`` (the member's ``acct_...`` on this node, or
    NULL), and whatever personal columns the co-op keeps; the plugin selects only those two.
``eap_ledger_entries``
    one row per posted instruction side: ``entry_id`` (the receipt reference),
    ``idempotency_key`` (unique), ``transfer_key`` (unique: the instruction id for a transfer
    between two local members, whose two sides are one entry; else the idempotency key),
    ``instruction_id``, ``side``, ``round_id``, ``member_ref`` (the local member of this side),
    ``amount_minor``, ``currency``, ``digest`` (of the terms) and ``posted_at`` (ms).
``eap_ledger_postings``
    ``(entry_id, kind, holder, currency, amount_minor)``: ``kind`` ``member`` (holder a
    ``member_ref``) or ``clearing`` (holder a node id: what this co-op's members paid to (> 0)
    or were paid by (< 0) members of that node).  Credit > 0, debit < 0; each entry sums to 0.
``eap_balances``
    ``(kind, holder, currency) -> balance_minor``, kept in the same transaction as the
    postings.

Errors are :class:`~eap.node.errors.BackendError`: transient when the server is unreachable or
went away, a lock wait timed out or a deadlock was chosen (retry with the same key: nothing is
posted twice); not transient when the instruction is refused (an account no member holds, the
key reused with other terms) or the co-op's schema is wrong.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError, SQLAlchemyError

from eap.node.crypto.keys import now_ms
from eap.node.domain.rules import ACCOUNT_RE, CURRENCY_RE, NODE_ID_RE
from eap.node.errors import BackendError, ConfigError
from eap.plugins import hookimpl

NAME = "coopdb"
MEMBER = "member"
CLEARING = "clearing"
INT64_MAX = 2**63 - 1
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
#: MySQL/MariaDB error codes a retry may get past: the server gone or unreachable, a killed
#: connection or query, a lock wait timeout, a deadlock, too many connections, a shutdown.
TRANSIENT_CODES = frozenset(
    {1040, 1053, 1077, 1078, 1079, 1080, 1152, 1153, 1158, 1159, 1160, 1161, 1205, 1213,
     1317, 1927, 2002, 2003, 2006, 2013, 2014, 2055, 4031}
)
DUPLICATE_KEY = 1062
NO_SUCH_TABLE = 1146
NOT_CONFIGURED = "not configured: set url in [settlement.coopdb] (the co-op's database)"


@dataclass(frozen=True)
class CoopDbSettings:
    """``[settlement.coopdb]``: where the co-op's database is and what its tables are called."""

    #: SQLAlchemy URL of the co-op's database, e.g. ``mysql+pymysql://eap@db/coop``.
    url: str
    members_table: str = "members"
    member_column: str = "member_ref"
    account_column: str = "node_account"
    entries_table: str = "eap_ledger_entries"
    postings_table: str = "eap_ledger_postings"
    balances_table: str = "eap_balances"
    #: Create the three ``eap_`` ledger tables when missing (else they must exist).
    create_tables: bool = True
    connect_timeout_s: int = 5
    #: Per statement: a read or write that takes longer is a transient failure.
    io_timeout_s: int = 30
    #: ``innodb_lock_wait_timeout`` of the plugin's sessions.
    lock_wait_timeout_s: int = 10

    @classmethod
    def from_settings(cls, settings: dict[str, Any] | None) -> CoopDbSettings | None:
        """The settings, or None when no ``url`` is configured (the plugin stays inactive).

        Raises:
            ConfigError: an unknown key, a table or column name that is not an identifier,
                a URL that is not MySQL/MariaDB, a bad timeout.
        """
        table = dict(settings or {})
        if not table.get("url"):
            return None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(f"[settlement.coopdb] unknown keys: {', '.join(unknown)}")
        url = table["url"]
        if not isinstance(url, str) or not url.startswith(("mysql", "mariadb")):
            raise ConfigError(
                "[settlement.coopdb] url must be a MySQL/MariaDB SQLAlchemy URL "
                "(mysql+pymysql://user:password@host/database)"
            )
        for f in fields(cls):
            value = table.get(f.name, f.default)
            if f.name.endswith(("_table", "_column")) and (
                not isinstance(value, str) or not IDENT_RE.match(value)
            ):
                raise ConfigError(f"[settlement.coopdb] {f.name} must be an SQL identifier")
            if f.name.endswith("_s") and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 3600
            ):
                raise ConfigError(f"[settlement.coopdb] {f.name} must be 1..3600 seconds")
        if not isinstance(table.get("create_tables", True), bool):
            raise ConfigError("[settlement.coopdb] create_tables must be true or false")
        return cls(**table)


def _settings_of(ctx: Any) -> dict[str, Any]:
    return ctx if isinstance(ctx, dict) else dict(getattr(ctx, "settings", None) or {})


class CoopDb:
    """One co-op database: its engine and tables (one per settings, shared by threads)."""

    def __init__(self, cfg: CoopDbSettings) -> None:
        self.cfg = cfg
        self.engine: Engine = create_engine(
            cfg.url,
            pool_pre_ping=True,  # a connection the server dropped while idle is replaced
            pool_recycle=600,
            pool_size=4,
            max_overflow=4,
            connect_args={
                "connect_timeout": cfg.connect_timeout_s,
                "read_timeout": cfg.io_timeout_s,
                "write_timeout": cfg.io_timeout_s,
            },
        )
        wait = cfg.lock_wait_timeout_s

        @event.listens_for(self.engine, "connect")
        def _session(dbapi_conn: Any, _record: Any) -> None:
            with dbapi_conn.cursor() as cur:
                cur.execute(f"SET SESSION innodb_lock_wait_timeout = {int(wait)}")

        md = MetaData()
        self.members = Table(
            cfg.members_table,
            md,
            Column(cfg.member_column, String(255)),
            Column(cfg.account_column, String(255)),
        )
        self.entries = Table(
            cfg.entries_table,
            md,
            Column("entry_id", String(40), primary_key=True),
            Column("idempotency_key", String(255), nullable=False, unique=True),
            Column("transfer_key", String(255), nullable=False, unique=True),
            Column("instruction_id", String(255), nullable=False, index=True),
            Column("side", String(6), nullable=False),
            Column("round_id", String(255), nullable=False, index=True),
            Column("member_ref", String(255), nullable=False),
            Column("amount_minor", BigInteger, nullable=False),
            Column("currency", String(3), nullable=False),
            Column("digest", String(64), nullable=False),
            Column("posted_at", BigInteger, nullable=False),
            mysql_engine="InnoDB",
        )
        self.postings = Table(
            cfg.postings_table,
            md,
            Column("entry_id", String(40), primary_key=True),
            Column("kind", String(8), primary_key=True),
            Column("holder", String(255), primary_key=True),
            Column("currency", String(3), primary_key=True),
            Column("amount_minor", BigInteger, nullable=False),
            mysql_engine="InnoDB",
        )
        self.balances = Table(
            cfg.balances_table,
            md,
            Column("kind", String(8), primary_key=True),
            Column("holder", String(255), primary_key=True),
            Column("currency", String(3), primary_key=True),
            Column("balance_minor", BigInteger, nullable=False),
            Column("updated_at", BigInteger, nullable=False),
            mysql_engine="InnoDB",
        )
        self._ready = False
        self._lock = threading.Lock()

    def ready(self) -> None:
        """Create the ledger tables once when allowed and missing."""
        if self._ready:
            return
        with self._lock:
            if not self._ready:
                if self.cfg.create_tables:
                    self.entries.metadata.create_all(
                        self.engine, tables=[self.entries, self.postings, self.balances]
                    )
                self._ready = True

    def where(self) -> str:
        u = self.engine.url
        return f"{u.database or '?'} on {u.host or 'localhost'}:{u.port or 3306}"


_dbs: dict[CoopDbSettings, CoopDb] = {}
_dbs_lock = threading.Lock()


def database(ctx: Any) -> CoopDb:
    """The co-op database of ``ctx`` (a backend context, or its settings table).

    Raises:
        BackendError: (not transient) the plugin is not configured; ConfigError: badly.
    """
    try:
        cfg = CoopDbSettings.from_settings(_settings_of(ctx))
    except ConfigError as exc:  # an operator fixes the config; retrying does not help
        raise BackendError(str(exc), transient=False, backend=NAME) from exc
    if cfg is None:
        raise BackendError(NOT_CONFIGURED, transient=False, backend=NAME)
    with _dbs_lock:
        db = _dbs.get(cfg)
        if db is None:
            db = _dbs[cfg] = CoopDb(cfg)
    return db


def close_all() -> None:
    """Close every pooled connection (tests, shutdown)."""
    with _dbs_lock:
        for db in _dbs.values():
            db.engine.dispose()
        _dbs.clear()


def _code(exc: BaseException) -> int | None:
    orig = getattr(exc, "orig", None)
    args = getattr(orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _failure(exc: SQLAlchemyError, what: str) -> BackendError:
    """A database error as a ``BackendError``, transient when a retry may get past it."""
    code = _code(exc)
    transient = (
        code in TRANSIENT_CODES
        or (isinstance(exc, DBAPIError) and exc.connection_invalidated)
        or (code is None and isinstance(exc, DBAPIError))  # the driver lost the socket
    )
    detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    err = BackendError(f"coopdb: {what}: {detail}", transient=transient, backend=NAME)
    err.__cause__ = exc
    return err


def _refuse(message: str) -> BackendError:
    return BackendError(f"coopdb: {message}", transient=False, backend=NAME)


# --- account directory -----------------------------------------------------------------------


def lookup(db: CoopDb, member_ref: str) -> str | None:
    """The node account (``acct_...``) member ``member_ref`` holds, or None."""
    m = db.members.c
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(m[db.cfg.account_column]).where(m[db.cfg.member_column] == member_ref)
        ).all()
    accounts = {r[0] for r in rows if r[0]}
    if len(accounts) > 1:
        raise _refuse(f"member {member_ref!r} has several node accounts in {db.cfg.members_table}")
    return accounts.pop() if accounts else None


def members_for(conn: Any, db: CoopDb, accounts: list[str]) -> dict[str, str]:
    """``{account: member_ref}`` for the accounts some member holds (each by one member).

    Raises:
        BackendError: (not transient) an account held by several members.
    """
    m = db.members.c
    acol, mcol = m[db.cfg.account_column], m[db.cfg.member_column]
    found: dict[str, set[str]] = {}
    for acct, ref in conn.execute(select(acol, mcol).where(acol.in_(accounts))):
        found.setdefault(acct, set()).add(ref)
    dup = sorted(a for a, refs in found.items() if len(refs) > 1)
    if dup:
        raise _refuse(f"account {dup[0]} is held by several members in {db.cfg.members_table}")
    return {a: refs.pop() for a, refs in found.items()}


def _local(node_id: str | None, account: str) -> str | None:
    node, sep, acct = account.partition("/")
    if not sep:
        acct = account
    elif node_id and node != node_id:
        return None
    return acct if ACCOUNT_RE.match(acct) else None


class CoopDirectory:
    """The account directory: the co-op's members and the node accounts they hold.

    Every method takes the plugin's context (``ctx.settings`` is ``[settlement.coopdb]``; a
    plain settings dict is accepted too) and reads the co-op's database on each call: the node
    keeps no copy of the member table.
    """

    name = NAME

    def lookup(self, ctx: Any, member_ref: str) -> str | None:
        """The node account id (``acct_...``) of member ``member_ref``, None if it has none.

        Raises:
            BackendError: not configured, or the database failed (transient when retryable).
        """
        db = database(ctx)
        try:
            return lookup(db, member_ref)
        except SQLAlchemyError as exc:
            raise _failure(exc, f"looking up member {member_ref!r}") from exc

    def member_for(self, ctx: Any, account: str) -> str | None:
        """The ``member_ref`` holding ``account`` (``acct_...`` or ``<this node>/acct_...``),
        None for an account of another node or that no member holds."""
        db = database(ctx)
        acct = _local(getattr(ctx, "node_id", None), account)
        if acct is None:
            return None
        try:
            with db.engine.connect() as conn:
                return members_for(conn, db, [acct]).get(acct)
        except SQLAlchemyError as exc:
            raise _failure(exc, f"looking up account {account!r}") from exc

    def health(self, ctx: Any) -> dict:
        return health(ctx)


def health(ctx: Any) -> dict:
    """``{"ok", "detail"}``: "not configured" until ``[settlement.coopdb] url`` is set."""
    try:
        cfg = CoopDbSettings.from_settings(_settings_of(ctx))
    except ConfigError as exc:
        return {"ok": False, "detail": str(exc)}
    if cfg is None:
        return {"ok": False, "detail": NOT_CONFIGURED}
    db = database(ctx)
    try:
        with db.engine.connect() as conn:
            members = conn.execute(select(func.count()).select_from(db.members)).scalar_one()
            try:
                entries = conn.execute(select(func.count()).select_from(db.entries)).scalar_one()
                ledger = f"{entries} ledger entries"
            except ProgrammingError as exc:
                if _code(exc) != NO_SUCH_TABLE:
                    raise
                ledger = "ledger tables not created yet"
    except SQLAlchemyError as exc:
        return {"ok": False, "detail": str(_failure(exc, f"reading {db.where()}"))}
    return {"ok": True, "detail": f"{members} members, {ledger} in {db.where()}"}


# --- settlement backend ----------------------------------------------------------------------


@dataclass(frozen=True)
class Leg:
    kind: str  # MEMBER (holder: a local acct_..., later its member_ref) or CLEARING (a node id)
    holder: str
    #: Credit > 0, debit < 0.
    amount_minor: int


def _party(value: Any, what: str) -> tuple[str, str]:
    node, sep, acct = str(value).partition("/")
    if not sep or not NODE_ID_RE.match(node) or not ACCOUNT_RE.match(acct):
        raise _refuse(f"{what} {value!r} is not '<node id>/acct_...'")
    return node, acct


def plan(node_id: str, item: dict) -> list[Leg]:
    """The two legs of one side of one instruction at node ``node_id`` (they sum to zero).

    ``debit``: the local payer pays the payee when it is local, else ``clearing`` of the
    payee's node; ``credit``: the local payee is paid by the payer when local, else by
    ``clearing`` of the payer's node.

    Raises:
        BackendError: (not transient) malformed, or not this node's side.
    """
    payer_node, payer = _party(item.get("payer"), "payer")
    payee_node, payee = _party(item.get("payee"), "payee")
    currency, amount, side = item.get("currency"), item.get("amount_minor"), item.get("side")
    if not isinstance(currency, str) or not CURRENCY_RE.match(currency):
        raise _refuse(f"currency {currency!r} is not an ISO 4217 code")
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= INT64_MAX:
        raise _refuse(f"amount_minor {amount!r} is not a positive int64")
    if (payer_node, payer) == (payee_node, payee):
        raise _refuse(f"payer and payee are the same account {item['payer']}")
    payer_leg = Leg(MEMBER, payer, -amount) if payer_node == node_id else None
    payee_leg = Leg(MEMBER, payee, amount) if payee_node == node_id else None
    if side == "debit":
        if payer_leg is None:
            raise _refuse(f"debit side of {item['payer']}: the payer is not an account of "
                          f"{node_id}")
        return [payer_leg, payee_leg or Leg(CLEARING, payee_node, amount)]
    if side == "credit":
        if payee_leg is None:
            raise _refuse(f"credit side of {item['payee']}: the payee is not an account of "
                          f"{node_id}")
        return [payer_leg or Leg(CLEARING, payer_node, -amount), payee_leg]
    raise _refuse(f"side must be debit or credit, not {side!r}")


def _digest(item: dict) -> str:
    """SHA-256 of the instruction's terms (not the side: both sides describe one payment)."""
    terms = {
        k: item.get(k)
        for k in ("instruction_id", "round_id", "payer", "payee", "amount_minor", "currency")
    }
    return hashlib.sha256(json.dumps(terms, sort_keys=True).encode()).hexdigest()


def post(db: CoopDb, node_id: str, item: dict, idempotency_key: str) -> dict:
    """Post one side of one instruction once, in one transaction; ``{"reference", "at_ms"}``.

    A replay of the key (or, for a transfer between two local members, the other side's key)
    returns the first receipt; the key with other terms is refused.

    Raises:
        BackendError: transient (server gone, lock timeout, deadlock: nothing was posted by
            this call) or not (malformed, an account no member holds, key reused).
    """
    legs = plan(node_id, item)
    digest = _digest(item)
    local = all(leg.kind == MEMBER for leg in legs)
    transfer_key = f"{item['instruction_id']}:transfer" if local else idempotency_key
    try:
        db.ready()
        try:
            return _post_once(db, item, idempotency_key, transfer_key, digest, legs)
        except IntegrityError as exc:
            if _code(exc) != DUPLICATE_KEY:
                raise
            # A concurrent call posted the same key first and this transaction rolled back;
            # the second try sees its entry.
            return _post_once(db, item, idempotency_key, transfer_key, digest, legs)
    except SQLAlchemyError as exc:
        raise _failure(exc, f"posting {idempotency_key}") from exc


def _post_once(
    db: CoopDb, item: dict, key: str, transfer_key: str, digest: str, legs: list[Leg]
) -> dict:
    e = db.entries.c
    with db.engine.begin() as conn:
        first = conn.execute(
            select(e.entry_id, e.digest, e.posted_at).where(
                (e.idempotency_key == key) | (e.transfer_key == transfer_key)
            )
        ).first()
        if first is not None:
            if first.digest != digest:
                raise _refuse(
                    f"idempotency key {key!r} was posted with other terms (entry {first.entry_id})"
                )
            return {"reference": first.entry_id, "at_ms": int(first.posted_at)}
        accounts = sorted({leg.holder for leg in legs if leg.kind == MEMBER})
        members = members_for(conn, db, accounts)
        missing = [a for a in accounts if a not in members]
        if missing:
            raise _refuse(f"no member of the co-op holds account {missing[0]}")
        legs = [
            Leg(leg.kind, members[leg.holder], leg.amount_minor) if leg.kind == MEMBER else leg
            for leg in legs
        ]
        mine = legs[0] if item["side"] == "debit" else legs[1]
        at, entry_id = now_ms(), "cd_" + uuid.uuid4().hex
        # The entry first: its unique keys make a concurrent poster of the same key wait here.
        conn.execute(
            insert(db.entries).values(
                entry_id=entry_id,
                idempotency_key=key,
                transfer_key=transfer_key,
                instruction_id=str(item["instruction_id"]),
                side=item["side"],
                round_id=str(item.get("round_id", "")),
                member_ref=mine.holder,
                amount_minor=item["amount_minor"],
                currency=item["currency"],
                digest=digest,
                posted_at=at,
            )
        )
        currency = item["currency"]
        for leg in sorted(legs, key=lambda g: (g.kind, g.holder)):  # one lock order: no cycles
            up = mysql_insert(db.balances).values(
                kind=leg.kind,
                holder=leg.holder,
                currency=currency,
                balance_minor=leg.amount_minor,
                updated_at=at,
            )
            conn.execute(
                up.on_duplicate_key_update(
                    balance_minor=db.balances.c.balance_minor + up.inserted.balance_minor,
                    updated_at=up.inserted.updated_at,
                )
            )
        conn.execute(
            insert(db.postings),
            [
                {
                    "entry_id": entry_id,
                    "kind": leg.kind,
                    "holder": leg.holder,
                    "currency": currency,
                    "amount_minor": leg.amount_minor,
                }
                for leg in legs
            ],
        )
    return {"reference": entry_id, "at_ms": at}


def check(db: CoopDb) -> list[str]:
    """What is wrong with the co-op's EAP ledger, one line each (empty: every invariant holds):
    every entry's postings sum to zero; every balance is the sum of its postings; the
    balances of a currency sum to zero."""
    e, p, b = db.entries.c, db.postings.c, db.balances.c
    problems: list[str] = []
    with db.engine.connect() as conn:
        for entry_id, total, n in conn.execute(
            select(e.entry_id, func.sum(p.amount_minor), func.count(p.entry_id))
            .select_from(db.entries.outerjoin(db.postings, p.entry_id == e.entry_id))
            .group_by(e.entry_id)
        ):
            if not n:
                problems.append(f"entry {entry_id} has no postings")
            elif int(total) != 0:
                problems.append(f"entry {entry_id} does not balance: {int(total)}")
        sums = {
            (k, h, c): int(s)
            for k, h, c, s in conn.execute(
                select(p.kind, p.holder, p.currency, func.sum(p.amount_minor)).group_by(
                    p.kind, p.holder, p.currency
                )
            )
        }
        totals: dict[str, int] = {}
        for k, h, c, bal in conn.execute(select(b.kind, b.holder, b.currency, b.balance_minor)):
            totals[c] = totals.get(c, 0) + int(bal)
            if sums.pop((k, h, c), 0) != int(bal):
                problems.append(f"{k} {h} {c}: balance {int(bal)} is not the sum of postings")
        problems += [f"postings on {k} {h} {c} but no balance row" for k, h, c in sorted(sums)]
        problems += [f"balances in {c} sum to {t}, not 0" for c, t in sorted(totals.items()) if t]
    return problems


class CoopDbBackend:
    """Settlement backend ``coopdb``: posts into the co-op's own database."""

    name = NAME

    def execute(self, ctx: Any, item: dict, idempotency_key: str) -> dict:
        return post(database(ctx), ctx.node_id, item, idempotency_key)

    def execute_many(self, ctx: Any, batch: list[tuple[dict, str]]) -> list:
        """Item by item, one transaction each (a failure of one leaves the others posted)."""
        db = database(ctx)
        out: list[dict | BackendError] = []
        for item, key in batch:
            try:
                out.append(post(db, ctx.node_id, item, key))
            except BackendError as exc:
                out.append(exc)
        return out

    def health(self, ctx: Any) -> dict:
        return health(ctx)


_DIRECTORY = CoopDirectory()
_BACKEND = CoopDbBackend()


@hookimpl
def eap_account_directories():
    return [_DIRECTORY]


@hookimpl
def eap_settlement_backends():
    return [_BACKEND]
