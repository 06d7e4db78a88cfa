"""The gallery's tables as SQLAlchemy Core objects, for queries. The DDL itself lives in the
versioned Alembic migrations (``service/gallery/migrations``), never here."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from lrface.settings import GALLERY_NAME_RE


class Vector(sa.types.UserDefinedType[Any]):
    """pgvector's ``vector`` (bound as its text form, ``service.gallery.vectors.literal``)."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "vector"


# 64-bit ids on PostgreSQL; SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData()

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

DEFAULT_GALLERY = "default"  # every gallery made before revision 0005, and today's /gallery/... routes


def is_gallery_name(name: str) -> bool:
    """1-128 of A-Z a-z 0-9 . _ - from a letter or digit (no '/', so safe in the index files' names)."""
    return GALLERY_NAME_RE.fullmatch(name) is not None  # fullmatch: '$' alone lets a trailing newline through


# Revision 0005: named galleries. A subject id is unique within its gallery; faces carry their gallery.
galleries = sa.Table(
    "galleries",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

subjects = sa.Table(
    "subjects",
    metadata,
    sa.Column("gallery", sa.Text, sa.ForeignKey("galleries.name", ondelete="CASCADE"), primary_key=True),
    sa.Column("subject_id", sa.Text, primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

faces = sa.Table(
    "faces",
    metadata,
    sa.Column("face_id", RowId, primary_key=True, autoincrement=True),
    sa.Column("gallery", sa.Text, nullable=False),
    sa.Column("subject_id", sa.Text, nullable=False),
    sa.Column("content_hash", sa.Text, nullable=False),
    sa.Column("model_version", sa.Text, nullable=False),
    sa.Column("embedding", sa.LargeBinary, nullable=False),
    sa.Column("chip", sa.LargeBinary, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    # Revision 0003: the teacher's embedding (large faces are matched in its space) and the HR chip.
    sa.Column("teacher_embedding", sa.LargeBinary, nullable=True),
    sa.Column("teacher_version", sa.Text, nullable=True),
    sa.Column("hr_chip", sa.LargeBinary, nullable=True),
    # Revision 0004, PostgreSQL with pgvector only: the embeddings again, as vectors the database searches.
    sa.Column("embedding_vec", Vector, nullable=True),
    sa.Column("teacher_vec", Vector, nullable=True),
    sa.ForeignKeyConstraint(["gallery", "subject_id"], ["subjects.gallery", "subjects.subject_id"], ondelete="CASCADE"),
)

# The embedding spaces a face can be searched in: (embedding column, model column).
SPACES = {
    "student": (faces.c.embedding, faces.c.model_version),
    "teacher": (faces.c.teacher_embedding, faces.c.teacher_version),
}

# The change log replicas follow: one row per added or removed face, or one 'reload' row after a bulk
# rewrite. ``seq`` grows in commit order (writers serialise), so "everything after seq N" is exact.
# A 'remove' row also says whether the face had an embedding in each space (revision 0006), so a
# follower keeping counts subtracts it without recounting; NULL: unknown (older rows, 'add', 'reload',
# and deletes written by a PostgreSQL store without pgvector).
changes = sa.Table(
    "changes",
    metadata,
    sa.Column("seq", RowId, primary_key=True, autoincrement=True),
    sa.Column("op", sa.String(8), nullable=False),
    sa.Column("face_id", sa.BigInteger, nullable=True),
    sa.Column("subject_id", sa.Text, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("gallery", sa.Text, nullable=True),  # revision 0005; NULL on older entries: the default gallery
    sa.Column("had_student", sa.Boolean, nullable=True),  # revision 0006, on 'remove' entries
    sa.Column("had_teacher", sa.Boolean, nullable=True),
)
