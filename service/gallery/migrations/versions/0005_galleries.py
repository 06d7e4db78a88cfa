"""Named galleries: a ``galleries`` table, and every subject, face and change-log entry in one gallery.
A subject id is unique within its gallery (the same id may be enrolled in two galleries). Every
existing subject and face moves into the gallery named ``default``, which today's routes use.

SQLite cannot change a primary or foreign key in place, so there ``subjects`` and ``faces`` are
copied into new tables (face ids and the AUTOINCREMENT high-water mark kept: the FAISS index is keyed
by face id and ids are never reused). PostgreSQL alters them in place, which keeps the pgvector
columns and their HNSW indexes. A 'reload' entry tells running followers to rebuild their index.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

DEFAULT = "default"
RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
FACE_COLUMNS = "face_id, subject_id, content_hash, model_version, embedding, chip, created_at, " \
    "teacher_embedding, teacher_version, hr_chip"  # fmt: skip


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        "galleries",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.execute(sa.text("INSERT INTO galleries (name, created_at) VALUES (:n, :t)").bindparams(n=DEFAULT, t=time.time()))
    if bind.dialect.name == "sqlite":
        _sqlite_copy(bind)
    else:
        _postgresql_alter(bind)
    op.add_column("changes", sa.Column("gallery", sa.Text, nullable=True))
    op.execute("INSERT INTO changes (op, created_at) SELECT 'reload', 0 WHERE EXISTS (SELECT 1 FROM faces)")


def _sqlite_copy(bind: sa.Connection) -> None:
    high_water = bind.exec_driver_sql("SELECT seq FROM sqlite_sequence WHERE name = 'faces'").scalar() or 0
    op.create_table(
        "subjects_new",
        sa.Column("gallery", sa.Text, sa.ForeignKey("galleries.name", ondelete="CASCADE"), primary_key=True),
        sa.Column("subject_id", sa.Text, primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "faces_new",
        sa.Column("face_id", RowId, primary_key=True, autoincrement=True),
        sa.Column("gallery", sa.Text, nullable=False),
        sa.Column("subject_id", sa.Text, nullable=False),
        sa.Column("content_hash", sa.Text, nullable=False),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("embedding", sa.LargeBinary, nullable=False),
        sa.Column("chip", sa.LargeBinary, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("teacher_embedding", sa.LargeBinary, nullable=True),
        sa.Column("teacher_version", sa.Text, nullable=True),
        sa.Column("hr_chip", sa.LargeBinary, nullable=True),
        sa.UniqueConstraint("gallery", "subject_id", "content_hash"),
        sa.ForeignKeyConstraint(
            ["gallery", "subject_id"], ["subjects_new.gallery", "subjects_new.subject_id"], ondelete="CASCADE"
        ),
        sqlite_autoincrement=True,
    )
    op.execute(f"INSERT INTO subjects_new (gallery, subject_id, created_at) SELECT '{DEFAULT}', subject_id, created_at "
               "FROM subjects")  # fmt: skip
    op.execute(f"INSERT INTO faces_new (gallery, {FACE_COLUMNS}) SELECT '{DEFAULT}', {FACE_COLUMNS} FROM faces")
    # Children first: dropping a parent with foreign keys on deletes its children's rows (an implicit DELETE).
    op.execute("DROP TABLE faces")
    op.execute("DROP TABLE subjects")
    op.execute("ALTER TABLE subjects_new RENAME TO subjects")  # faces_new's reference follows the rename
    op.execute("ALTER TABLE faces_new RENAME TO faces")
    op.create_index("faces_by_subject", "faces", ["gallery", "subject_id"])
    op.execute(
        sa.text("UPDATE sqlite_sequence SET seq = :s WHERE name = 'faces' AND seq < :s").bindparams(s=high_water)
    )
    op.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) SELECT 'faces', :s WHERE :s > 0 AND NOT EXISTS "
                       "(SELECT 1 FROM sqlite_sequence WHERE name = 'faces')").bindparams(s=high_water))  # fmt: skip


def _postgresql_alter(bind: sa.Connection) -> None:
    inspector = sa.inspect(bind)
    for table in ("subjects", "faces"):
        op.add_column(table, sa.Column("gallery", sa.Text, nullable=False, server_default=DEFAULT))
        op.alter_column(table, "gallery", server_default=None)
    for fk in inspector.get_foreign_keys("faces"):
        if fk["referred_table"] == "subjects" and fk["name"]:
            op.drop_constraint(fk["name"], "faces", type_="foreignkey")
    for unique in inspector.get_unique_constraints("faces"):
        if unique["name"] and set(unique["column_names"]) == {"subject_id", "content_hash"}:
            op.drop_constraint(unique["name"], "faces", type_="unique")
    pk = inspector.get_pk_constraint("subjects")["name"] or "subjects_pkey"
    op.drop_constraint(pk, "subjects", type_="primary")
    op.create_primary_key("subjects_pkey", "subjects", ["gallery", "subject_id"])
    op.create_foreign_key("subjects_gallery_fkey", "subjects", "galleries", ["gallery"], ["name"], ondelete="CASCADE")
    op.create_unique_constraint("faces_gallery_subject_hash_key", "faces", ["gallery", "subject_id", "content_hash"])
    op.create_foreign_key("faces_subject_fkey", "faces", "subjects", ["gallery", "subject_id"],
                          ["gallery", "subject_id"], ondelete="CASCADE")  # fmt: skip
    op.drop_index("faces_by_subject", "faces")
    op.create_index("faces_by_subject", "faces", ["gallery", "subject_id"])


def downgrade() -> None:
    raise NotImplementedError("galleries cannot be folded back into one: restore a backup taken before 0005")
