"""Migrations build exactly the schema the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from eap.node.store import open_store
from eap.node.store.engine import SCHEMA_HEAD
from eap.node.store.schema import metadata


def test_schema_head_constant_is_alembic_head():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from eap.node.store.engine import MIGRATIONS, SCHEMA_HEAD

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_current_head() == SCHEMA_HEAD


def test_migrations_match_declared_schema(db_url):
    store = open_store(db_url)
    assert store.schema_revision() == SCHEMA_HEAD
    store.migrate()  # idempotent: a second upgrade is a no-op
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    store.dispose()
    assert diff == [], diff
