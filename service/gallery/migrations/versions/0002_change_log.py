"""Change log that service replicas follow to keep their FAISS index in step with the store.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "changes",
        sa.Column("seq", RowId, primary_key=True, autoincrement=True),
        sa.Column("op", sa.String(8), nullable=False),
        sa.Column("face_id", sa.BigInteger, nullable=True),
        sa.Column("subject_id", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sqlite_autoincrement=True,
    )
    # A gallery that already holds faces starts its log with one 'reload' (replicas read it whole).
    op.execute("INSERT INTO changes (op, created_at) SELECT 'reload', 0 WHERE EXISTS (SELECT 1 FROM faces)")


def downgrade() -> None:
    op.drop_table("changes")
