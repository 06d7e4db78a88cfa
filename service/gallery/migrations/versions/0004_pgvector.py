"""pgvector on PostgreSQL: the ``vector`` extension and a vector column per embedding space, filled
from the stored embeddings, so replicas search the gallery in the database (``service.gallery.vectors``).
The HNSW index is made per model dimension when a service first serves that model. A server without
pgvector (or a user who may not create it) is left as it was: replicas then search in memory (FAISS).
SQLite galleries are unchanged.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

from service.gallery import vectors

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    vectors.install(op.get_bind())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE faces DROP COLUMN IF EXISTS teacher_vec, DROP COLUMN IF EXISTS embedding_vec")
