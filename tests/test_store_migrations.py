"""Migrations build exactly the schema the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from eap.node.store import open_store
from eap.node.store.schema import metadata


def test_migrations_match_declared_schema(db_url):
    store = open_store(db_url)
    store.migrate()  # idempotent: a second upgrade is a no-op
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    store.dispose()
    assert diff == [], diff
