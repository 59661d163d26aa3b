"""Alembic environment: runs migrations on the connection handed over by ``Store.migrate``."""

from alembic import context

from eap.node.store.schema import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # offline/autogenerate from the command line: use the configured URL
    from sqlalchemy import create_engine

    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    connection = engine.connect()

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
