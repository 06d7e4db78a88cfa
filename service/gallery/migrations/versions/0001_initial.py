"""Initial gallery schema: subjects, faces (embedding, content hash, model version, chip).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "meta",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "subjects",
        sa.Column("subject_id", sa.Text, primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "faces",
        sa.Column("face_id", RowId, primary_key=True, autoincrement=True),
        sa.Column("subject_id", sa.Text, sa.ForeignKey("subjects.subject_id", ondelete="CASCADE"), nullable=False),
        sa.Column("content_hash", sa.Text, nullable=False),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("embedding", sa.LargeBinary, nullable=False),
        sa.Column("chip", sa.LargeBinary, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("subject_id", "content_hash"),
        sqlite_autoincrement=True,  # face ids are never reused: the FAISS index is keyed by them
    )
    op.create_index("faces_by_subject", "faces", ["subject_id"])


def downgrade() -> None:
    op.drop_index("faces_by_subject", "faces")
    op.drop_table("faces")
    op.drop_table("subjects")
    op.drop_table("meta")
