"""Alembic environment: migrations run on the connection ``service.gallery.schema`` hands over."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run gallery migrations through `lrface gallery migrate` (service.gallery.schema.upgrade)")
context.configure(connection=connection, target_metadata=None, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
