"""A second embedding per face (the teacher's, for large faces: see the model card's routing), the
model that made it, and the face's HR chip (150 px) so any future model can re-embed the gallery.
Existing faces keep their student embedding; `lrface gallery reembed` adds the teacher's.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("faces") as batch:
        batch.add_column(sa.Column("teacher_embedding", sa.LargeBinary, nullable=True))
        batch.add_column(sa.Column("teacher_version", sa.Text, nullable=True))
        batch.add_column(sa.Column("hr_chip", sa.LargeBinary, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("faces") as batch:
        batch.drop_column("hr_chip")
        batch.drop_column("teacher_version")
        batch.drop_column("teacher_embedding")
