"""Apply the versioned Alembic migrations to a gallery database (SQLite file or PostgreSQL).

Every store runs ``upgrade`` when it opens, so a new release migrates on start. On PostgreSQL an
advisory lock makes replicas that start together migrate one at a time.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from service.gallery import vectors

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK = 0x6C72_6661_6365  # "lrface": pg_advisory_xact_lock key held while migrating


def _config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: sa.Engine) -> str:
    """Bring the schema to the newest revision; returns it."""
    with engine.connect().execution_options(gallery_write=True) as connection, connection.begin():
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        inspector = sa.inspect(connection)
        if inspector.has_table("faces") and not inspector.has_table("alembic_version"):
            # A gallery made before migrations existed has exactly revision 0001's tables.
            command.stamp(_config(connection), "0001")
        command.upgrade(_config(connection), "head")
        if connection.dialect.name == "postgresql" and not vectors.ready(connection) and vectors.available(connection):
            vectors.install(connection)  # pgvector installed on the server after revision 0004 ran without it
        revision = current_revision(connection)
    assert revision is not None
    return revision
