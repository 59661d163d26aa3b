"""Migrations build exactly the schema the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
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


def test_readings_leave_room_for_the_issuance_claim_on_postgres(pg_url):
    """Migration 0020: the readings heap is filled to half, so the claim of every reading
    (``issued_wh = wh``) is a HOT update on its own page, not a new row elsewhere."""
    from eap.node.store import repos

    store = open_store(pg_url)
    with store.engine.connect() as conn:
        opts = conn.exec_driver_sql(
            "SELECT reloptions FROM pg_class WHERE relname = 'readings'"
        ).scalar()
        assert opts == ["fillfactor=50"]
        conn.exec_driver_sql(
            "INSERT INTO readings (device_id, interval_start, interval_end, wh) "
            "SELECT 'dev', g * 3600, g * 3600 + 3600, 5 FROM generate_series(1, 2000) g"
        )
        conn.commit()
        ids = [r for (r,) in conn.exec_driver_sql("SELECT id FROM readings")]
        assert repos.claim_pending(conn, ids) == 2000
        assert repos.claim_pending(conn, ids) == 0  # each reading is claimed once
        hot, updated = conn.exec_driver_sql(
            "SELECT n_tup_hot_upd, n_tup_upd FROM pg_stat_xact_user_tables "
            "WHERE relname = 'readings'"
        ).one()
        conn.commit()
    store.dispose()
    assert updated == 2000
    assert hot >= 0.9 * updated, (hot, updated)  # on full pages (fillfactor 100): almost none


def test_issuance_blobs_are_written_with_lz4_on_postgres(pg_url):
    """Migration 0022: a batch payload and a run's arrays are stored LZ4-compressed (pglz took
    a sixth of a batch's time); the downgrade gives the columns back to the server's default."""
    from alembic import command
    from alembic.config import Config

    from eap.node.store import repos
    from eap.node.store.engine import MIGRATIONS

    store = open_store(pg_url)
    payload = bytes(range(256)) * 4096  # 1 MiB, compressible: stored compressed
    columns = ("payload", "ends", "starts", "stops", "lineage")
    attcompression = (
        "SELECT attname, attcompression FROM pg_attribute WHERE attrelid = "
        "ANY('{batches,bundle_runs}'::regclass[]) AND attname = ANY(%(c)s) ORDER BY attname"
    )
    try:
        with store.engine.begin() as conn:
            if not conn.exec_driver_sql("SHOW default_toast_compression").scalar():
                pytest.skip("server without TOAST compression methods")
            repos.insert_batch(conn, seq=1, count=1, wh=1, merkle_root=b"r", key_id="k",
                               payload=payload, created_at_ms=0)
            method = conn.exec_driver_sql(
                "SELECT pg_column_compression(payload) FROM batches WHERE seq = 1"
            ).scalar()
            declared = dict(conn.exec_driver_sql(attcompression, {"c": list(columns)}).all())
        assert method == "lz4"
        assert declared == dict.fromkeys(columns, "l")
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with store.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0021")
            declared = dict(conn.exec_driver_sql(attcompression, {"c": list(columns)}).all())
            stored = conn.exec_driver_sql("SELECT payload FROM batches WHERE seq = 1").scalar()
        assert declared == dict.fromkeys(columns, "")
        assert bytes(stored) == payload  # written with LZ4, read after the downgrade
    finally:
        store.dispose()
