"""Set-up shared by the federation benches: nodes with TLS on loopback that trust each other,
and throw-away PostgreSQL databases.  The bench scripts run as ``python bench/NAME.py``, so
this directory is on ``sys.path`` and they ``import fednodes``."""

from __future__ import annotations

import socket
import sys
import uuid
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_home(root: Path, name: str, node_id: str, db: str | None, ca: Path):
    """A fresh node under ``root/name`` (``db`` None: SQLite) with a certificate from the CA
    at ``ca``, sync rounds off and a generous peer rate limit; the opened node."""
    from eap.node.config import create_home
    from eap.node.crypto import issue_node_cert
    from eap.node.domain.node import Node
    from eap.node.federation.settings import update_settings

    cfg = create_home(
        root / name, node_id, "ES", db, f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}",
        operator_signed=True,
    )
    update_settings(root / name, sync_interval_s=0, rate_per_s=1000.0, burst=1000)
    node = Node.initialise(cfg)
    issue_node_cert(ca, node_id, root / name / "tls")
    return node


def trust(a, b) -> None:
    """``a`` trusts ``b`` (adds ``b``'s descriptor to ``a``'s trust list)."""
    from eap.node.federation.descriptor import describe
    from eap.node.federation.peers import TrustList

    TrustList(a.store, a.node_id).add_descriptor(describe(b))


def pg_database(admin: str) -> str | None:
    """A new, empty PostgreSQL database's URL, or None (said on stderr) without a server."""
    try:
        import psycopg

        name = f"eap_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return f"{admin.rsplit('/', 1)[0]}/{name}"
    except Exception as exc:
        print(f"PostgreSQL unavailable ({exc}); skipping it", file=sys.stderr)
        return None


def drop_database(admin: str, url: str) -> None:
    import psycopg

    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
