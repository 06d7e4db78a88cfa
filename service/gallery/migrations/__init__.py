"""Alembic migrations of the gallery schema (SQLite and PostgreSQL); applied by ``service.gallery.schema``."""
