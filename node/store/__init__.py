"""Storage behind repositories: SQLAlchemy Core tables, engines, migrations and bulk paths.

SQLite (WAL) is the embedded default; PostgreSQL is selected by URL.  Domain code talks to
the repositories in :mod:`eap.node.store.repos` inside a unit of work; nothing outside this
package writes SQL.
"""

from eap.node.store.engine import Store, open_store

__all__ = ["Store", "open_store"]
