"""What a delete's change-log entry needs for a follower to count it without recounting the table:
whether the deleted face had an embedding in each space (``had_student``, ``had_teacher``; the entry's
``gallery`` says where, since revision 0005). Written with the delete, in its transaction. NULL on
'add' and 'reload' entries, on every entry older than this revision, and where the writer could not
tell (PostgreSQL without pgvector): a follower that meets one recounts, as before.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("changes", sa.Column("had_student", sa.Boolean, nullable=True))
    op.add_column("changes", sa.Column("had_teacher", sa.Boolean, nullable=True))


def downgrade() -> None:
    # In place (SQLite 3.35+ drops a column itself): a rebuilt table would lose seq's AUTOINCREMENT, and
    # positions in the log could then repeat after a prune.
    with op.batch_alter_table("changes", recreate="never") as batch:
        batch.drop_column("had_teacher")
        batch.drop_column("had_student")
