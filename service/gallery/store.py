"""The durable gallery store: subjects, faces, embeddings, model version, content hash, a small face
chip for re-embedding, timestamps, and the change log replicas follow.

One class serves both back ends through SQLAlchemy Core:

- **SQLite** (default, one file under ``LRFACE_GALLERY_DIR``): WAL mode with ``synchronous=FULL``;
  writers take ``BEGIN IMMEDIATE``.
- **PostgreSQL** (``LRFACE_DATABASE_URL``), shared by several service replicas: writers take one
  transaction-level advisory lock, so change-log sequence numbers are committed in order.

Every write is one transaction committed before the caller acknowledges it, so a crash at any moment
loses nothing acknowledged and leaves no half subject. The schema comes from versioned migrations.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from service.gallery import schema, vectors
from service.gallery.schema import MIGRATION_LOCK
from service.gallery.tables import DEFAULT_GALLERY, SPACES, changes, faces, galleries, is_gallery_name, meta, subjects

WRITE_LOCK = 0x6C72_6661_6366  # pg_advisory_xact_lock key every writer holds until it commits


@dataclass
class NewFace:
    content_hash: str
    embedding: np.ndarray
    chip_png: bytes | None = None
    teacher_embedding: np.ndarray | None = None  # the teacher's, where the service routes large faces to it
    hr_chip_png: bytes | None = None  # the face at 150 px, for re-embedding by any future model


@dataclass
class FaceRecord:
    face_id: int
    subject_id: str
    content_hash: str
    model_version: str
    created_at: float
    created: bool = True  # False when the same image was already enrolled for this subject
    gallery: str = DEFAULT_GALLERY


@dataclass
class SubjectRecord:
    subject_id: str
    created_at: float
    faces: list[FaceRecord] = field(default_factory=list)


@dataclass
class GalleryRecord:
    name: str
    created_at: float
    subject_count: int
    face_count: int


class UnknownGallery(LookupError):
    """The named gallery does not exist."""

    def __init__(self, name: str) -> None:
        super().__init__(f"gallery {name!r} does not exist")
        self.name = name


# The change log's position: the last seq written (0 before any change).
_LAST_SEQ = sa.select(sa.func.coalesce(sa.func.max(changes.c.seq), 0))


@dataclass(frozen=True)
class Change:
    seq: int
    op: str  # 'add' | 'remove' | 'reload'
    face_id: int | None
    subject_id: str | None
    gallery: str | None = None  # None on entries older than revision 0005 (and on 'reload'): the default
    # On 'remove' entries since revision 0006: whether the face had an embedding in each space (as searched:
    # its pgvector column on a pgvector store). None: unknown (older entries, or PostgreSQL without pgvector).
    had_student: bool | None = None
    had_teacher: bool | None = None

    def had(self, space: str) -> bool | None:
        """Whether the removed face had an embedding in ``space`` (None: unknown)."""
        return self.had_teacher if space == "teacher" else self.had_student


@dataclass
class Snapshot:
    """Every face and the change-log position they are consistent with."""

    face_ids: np.ndarray
    subject_ids: list[str]
    vectors: np.ndarray
    seq: int
    galleries: list[str] = field(default_factory=list)  # each face's gallery


def postgres_url(url: str) -> str:
    """``postgresql://`` / ``postgres://`` URLs run on the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _blob(vector: np.ndarray) -> bytes:
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1 or not np.all(np.isfinite(array)):
        raise ValueError("an embedding must be a finite 1-d vector")
    return array.tobytes()


def _vectors(blobs: Sequence[bytes]) -> np.ndarray:
    return np.stack([np.frombuffer(b, dtype=np.float32) for b in blobs])


class GalleryStore:
    def __init__(self, url: str, pool_size: int = 4, max_overflow: int = 2) -> None:
        self.url = sa.make_url(postgres_url(url))
        self.dialect = self.url.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported gallery database {self.url.render_as_string()}: use SQLite or PostgreSQL")
        if self.dialect == "sqlite":
            self.engine = sa.create_engine(self.url, connect_args={"timeout": 30})
            sa.event.listen(self.engine, "connect", _sqlite_connect)
            sa.event.listen(self.engine, "begin", _sqlite_begin)
        else:
            # At most pool_size + max_overflow connections per process: with the defaults, 5 replicas of 2
            # workers hold at most 60 of PostgreSQL's default max_connections (100).
            self.engine = sa.create_engine(self.url, pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow)
        self.revision = schema.upgrade(self.engine)
        with self._read() as conn:
            self.pgvector = vectors.ready(conn)  # embeddings also kept as vectors PostgreSQL searches

    @classmethod
    def sqlite(cls, directory: Path) -> GalleryStore:
        directory.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{directory / 'gallery.sqlite3'}")

    def describe(self) -> str:
        if self.dialect == "sqlite":
            return f"sqlite:{self.url.database}"
        return self.url.set(drivername="postgresql").render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        with self.engine.connect().execution_options(gallery_write=True) as conn, conn.begin():
            if self.dialect == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")
            yield conn

    @contextmanager
    def _read(self, consistent: bool = False) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            if consistent and self.dialect == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():  # SQLite in WAL mode: one snapshot from the first read on
                yield conn

    def _insert(self, table: sa.Table) -> Any:
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    @staticmethod
    def _log(
        conn: sa.Connection,
        op: str,
        entries: Iterable[tuple[int | None, str | None]],
        now: float,
        gallery: str | None = None,
        had: Sequence[tuple[bool | None, bool | None]] = (),
    ) -> None:
        """One change-log row an entry ``(face_id, subject_id)``; ``had``, for 'remove' entries, says
        per entry whether the face had an embedding in the student's and the teacher's space."""
        rows = [{"op": op, "face_id": f, "subject_id": s, "created_at": now, "gallery": gallery} for f, s in entries]
        for row, (student, teacher) in zip(rows, had, strict=False):
            row["had_student"], row["had_teacher"] = student, teacher
        if rows:
            conn.execute(changes.insert(), rows)

    def _delete_faces(self, conn: sa.Connection, where: sa.ColumnElement[bool], gallery: str, now: float) -> list[int]:
        """Delete the faces of ``gallery`` that ``where`` selects and log each removal, in the caller's
        transaction, with whether the face had an embedding in each space, so a follower keeping counts
        subtracts it without recounting the table. Returns their ids, in order. Read, then deleted: the
        transaction holds the write lock, so no other writer comes between (and SQLite 3.40's ``DELETE ...
        RETURNING`` gave ``teacher_embedding IS NOT NULL`` as true for a NULL)."""
        if self.pgvector:  # what PgvectorGallery counts
            had: list[sa.ColumnElement[Any]] = [faces.c.embedding_vec.is_not(None), faces.c.teacher_vec.is_not(None)]
        elif self.dialect == "sqlite":  # what the FAISS index holds
            had = [faces.c.embedding.is_not(None), faces.c.teacher_embedding.is_not(None)]
        else:  # PostgreSQL without pgvector: a face may lack the vectors a later pgvector replica counts
            had = []
        selected = (faces.c.gallery == gallery) & where
        rows = conn.execute(
            sa.select(faces.c.face_id, faces.c.subject_id, *had).where(selected).order_by(faces.c.face_id)
        ).all()
        if rows:
            conn.execute(faces.delete().where(selected))
        flags = [(bool(r[2]), bool(r[3])) if had else (None, None) for r in rows]
        self._log(conn, "remove", [(int(r[0]), r[1]) for r in rows], now, gallery, flags)
        return [int(r[0]) for r in rows]

    @staticmethod
    def _check_gallery(conn: sa.Connection, gallery: str) -> None:
        if conn.execute(sa.select(galleries.c.name).where(galleries.c.name == gallery)).first() is None:
            raise UnknownGallery(gallery)

    # -- galleries ----------------------------------------------------------------------------------

    def create_gallery(self, name: str) -> bool:
        """Create an empty gallery; False when it exists already. ValueError for a malformed name (it
        names the gallery's index files)."""
        if not is_gallery_name(name):
            raise ValueError(f"{name!r} is not a gallery name: 1-128 of A-Z a-z 0-9 . _ - from a letter or digit")
        with self._write() as conn:
            insert = self._insert(galleries).values(name=name, created_at=time.time()).on_conflict_do_nothing()
            created = conn.execute(insert.returning(galleries.c.name)).first()
        return created is not None

    def delete_gallery(self, name: str) -> tuple[int, list[int]] | None:
        """Delete a gallery with its subjects and faces: ``(subjects deleted, face ids)``, None when unknown."""
        if name == DEFAULT_GALLERY:
            raise ValueError("the default gallery cannot be deleted")
        now = time.time()
        with self._write() as conn:
            if conn.execute(sa.select(galleries.c.name).where(galleries.c.name == name)).first() is None:
                return None
            ids = self._delete_faces(conn, sa.true(), name, now)
            gone = conn.execute(subjects.delete().where(subjects.c.gallery == name)).rowcount
            conn.execute(galleries.delete().where(galleries.c.name == name))
        return int(gone), ids

    def gallery_exists(self, name: str) -> bool:
        with self._read() as conn:
            return conn.execute(sa.select(galleries.c.name).where(galleries.c.name == name)).first() is not None

    def list_galleries(self, names: Iterable[str] | None = None) -> list[GalleryRecord]:
        """Every gallery (or those of ``names`` that exist) with its subject and face counts, by name."""
        subject_counts = (
            sa.select(subjects.c.gallery, sa.func.count().label("n")).group_by(subjects.c.gallery).subquery()
        )
        face_counts = sa.select(faces.c.gallery, sa.func.count().label("n")).group_by(faces.c.gallery).subquery()
        query = (
            sa.select(
                galleries.c.name,
                galleries.c.created_at,
                sa.func.coalesce(subject_counts.c.n, 0),
                sa.func.coalesce(face_counts.c.n, 0),
            )
            .select_from(
                galleries.outerjoin(subject_counts, subject_counts.c.gallery == galleries.c.name).outerjoin(
                    face_counts, face_counts.c.gallery == galleries.c.name
                )
            )
            .order_by(galleries.c.name)
        )
        if names is not None:
            query = query.where(galleries.c.name.in_(list(names)))
        with self._read() as conn:
            return [GalleryRecord(r[0], float(r[1]), int(r[2]), int(r[3])) for r in conn.execute(query)]

    # -- writes -------------------------------------------------------------------------------------

    def add_faces(
        self,
        subject_id: str,
        new_faces: list[NewFace],
        model_version: str,
        teacher_version: str | None = None,
        gallery: str = DEFAULT_GALLERY,
    ) -> list[FaceRecord]:
        """Add faces to a subject of ``gallery`` (created when new) in one transaction; repeats are
        reported, not added. Raises :class:`UnknownGallery`."""
        now = time.time()
        records: list[FaceRecord] = []
        with self._write() as conn:
            self._check_gallery(conn, gallery)
            conn.execute(
                self._insert(subjects)
                .values(gallery=gallery, subject_id=subject_id, created_at=now)
                .on_conflict_do_nothing()
            )
            for face in new_faces:
                row = conn.execute(
                    sa.select(faces.c.face_id, faces.c.model_version, faces.c.created_at).where(
                        faces.c.gallery == gallery,
                        faces.c.subject_id == subject_id,
                        faces.c.content_hash == face.content_hash,
                    )
                ).first()
                if row is not None:
                    records.append(
                        FaceRecord(
                            row[0], subject_id, face.content_hash, row[1], row[2], created=False, gallery=gallery
                        )
                    )
                    continue
                face_id = conn.execute(
                    faces.insert()
                    .values(
                        gallery=gallery,
                        subject_id=subject_id,
                        content_hash=face.content_hash,
                        model_version=model_version,
                        embedding=_blob(face.embedding),
                        chip=face.chip_png,
                        created_at=now,
                        teacher_embedding=None if face.teacher_embedding is None else _blob(face.teacher_embedding),
                        teacher_version=None if face.teacher_embedding is None else teacher_version,
                        hr_chip=face.hr_chip_png,
                        **self._vector_values(face.embedding, face.teacher_embedding),
                    )
                    .returning(faces.c.face_id)
                ).scalar_one()
                records.append(
                    FaceRecord(int(face_id), subject_id, face.content_hash, model_version, now, gallery=gallery)
                )
            self._log(conn, "add", [(r.face_id, subject_id) for r in records if r.created], now, gallery)
        return records

    def import_faces(
        self, rows: list[tuple[str, str, np.ndarray]], model_version: str, gallery: str = DEFAULT_GALLERY
    ) -> None:
        """Bulk insert ``(subject_id, content_hash, embedding)`` rows into ``gallery`` in one transaction
        (seeding, migration)."""
        now = time.time()
        with self._write() as conn:
            self._check_gallery(conn, gallery)
            conn.execute(
                self._insert(subjects).on_conflict_do_nothing(),
                [{"gallery": gallery, "subject_id": s, "created_at": now} for s in dict.fromkeys(r[0] for r in rows)],
            )
            conn.execute(
                self._insert(faces).on_conflict_do_nothing(),
                [
                    {
                        "gallery": gallery,
                        "subject_id": sid,
                        "content_hash": h,
                        "model_version": model_version,
                        "embedding": _blob(v),
                        "chip": None,
                        "created_at": now,
                        **self._vector_values(v, None),
                    }
                    for sid, h, v in rows
                ],
            )
            self._log(conn, "reload", [(None, None)], now)

    def delete_subject(self, subject_id: str, gallery: str = DEFAULT_GALLERY) -> list[int] | None:
        """Delete a subject of ``gallery`` and its faces; returns their face ids, or None when unknown."""
        now = time.time()
        with self._write() as conn:
            subject = sa.select(subjects.c.subject_id).where(
                subjects.c.gallery == gallery, subjects.c.subject_id == subject_id
            )
            if conn.execute(subject).first() is None:
                return None
            ids = self._delete_faces(conn, faces.c.subject_id == subject_id, gallery, now)
            conn.execute(subjects.delete().where(subjects.c.gallery == gallery, subjects.c.subject_id == subject_id))
        return ids

    def delete_face(self, subject_id: str, face_id: int, gallery: str = DEFAULT_GALLERY) -> bool:
        with self._write() as conn:
            where = (faces.c.subject_id == subject_id) & (faces.c.face_id == face_id)
            return bool(self._delete_faces(conn, where, gallery, time.time()))

    def replace_embeddings(
        self, updates: list[tuple[int, np.ndarray]], model_version: str, space: str = "student"
    ) -> None:
        vector, model = SPACES[space]
        with self._write() as conn:
            if updates:
                column = vectors.COLUMNS[space] if self.pgvector else None
                if column:  # a model of another size: its vectors cannot go into the old dimension's index
                    vectors.drop_other_indexes(conn, space, int(np.asarray(updates[0][1]).size))
                conn.execute(
                    faces.update().where(faces.c.face_id == sa.bindparam("fid")),
                    [
                        {"fid": fid, vector.name: _blob(v), model.name: model_version}
                        | ({column: vectors.literal(v)} if column else {})
                        for fid, v in updates
                    ],
                )
            self._log(conn, "reload", [(None, None)], time.time())

    def _vector_values(self, student: np.ndarray, teacher: np.ndarray | None) -> dict[str, str | None]:
        if not self.pgvector:
            return {}
        return {"embedding_vec": vectors.literal(student), "teacher_vec": vectors.literal(teacher)}

    def prune_changes(self, through: int, older_than: float) -> int:
        """Delete change-log entries up to ``through`` that are older than ``older_than`` seconds (every
        live reader, syncing every fraction of a second, has passed them); a reader still behind them
        finds itself before :meth:`pruned_through` and loads afresh. Returns how many were deleted."""
        cutoff = time.time() - older_than
        with self._write() as conn:
            last = conn.execute(
                sa.select(sa.func.max(changes.c.seq)).where(changes.c.seq <= through, changes.c.created_at < cutoff)
            ).scalar_one()
            if last is None:
                return 0
            deleted = conn.execute(changes.delete().where(changes.c.seq <= last)).rowcount
            conn.execute(self._insert(meta).values(key="changes_pruned_through", value=str(int(last)))
                         .on_conflict_do_update(index_elements=["key"], set_={"value": str(int(last))}))  # fmt: skip
        return int(deleted)

    # -- reads --------------------------------------------------------------------------------------

    def pruned_through(self) -> int:
        """The last change-log entry pruned (0: none): a reader at an older position must reload."""
        with self._read() as conn:
            value = conn.execute(sa.select(meta.c.value).where(meta.c.key == "changes_pruned_through")).scalar()
        return int(value) if value is not None else 0

    def subjects_by_face(self, space: str = "student") -> dict[int, tuple[str, str]]:
        """``{face_id: (gallery, subject_id)}`` of every face with an embedding in ``space``."""
        vector = SPACES[space][0]
        with self._read() as conn:
            rows = conn.execute(
                sa.select(faces.c.face_id, faces.c.gallery, faces.c.subject_id).where(vector.is_not(None))
            )
            return {int(r[0]): (r[1], r[2]) for r in rows}

    def count_faces(self, space: str = "student") -> tuple[int, int]:
        """``(change-log position, faces with an embedding in space)``, read together."""
        vector = SPACES[space][0]
        with self._read(consistent=True) as conn:
            seq = conn.execute(_LAST_SEQ).scalar_one()
            count = conn.execute(sa.select(sa.func.count()).where(vector.is_not(None))).scalar_one()
        return int(seq), int(count)

    def last_seq(self) -> int:
        with self._read() as conn:
            return int(conn.execute(_LAST_SEQ).scalar_one())

    def count_changes_since(self, seq: int) -> int:
        with self._read() as conn:
            return int(conn.execute(sa.select(sa.func.count()).where(changes.c.seq > seq)).scalar_one())

    def ensure_vector_index(self, space: str, dim: int) -> bool:
        """The HNSW index of ``space`` at ``dim`` (built once, by the first process to serve the model:
        replicas starting together wait on the migration lock). True when built now."""
        with self._write() as conn:
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            return vectors.ensure_index(conn, space, dim)

    def vector_search(
        self,
        space: str,
        dim: int,
        query: np.ndarray,
        limit: int,
        ef_search: int,
        exact: bool = False,
        gallery: str = DEFAULT_GALLERY,
    ) -> list[tuple[int, str, float]]:
        with self._read() as conn:
            return vectors.search(conn, space, dim, query, limit, ef_search, exact, gallery)

    def vector_counts(self) -> dict[str, int]:
        with self._read() as conn:
            return vectors.counts(conn)

    def vector_counts_as_of(self, space: str = "student") -> tuple[int, dict[str, int]]:
        """``(last seq, {gallery: faces with a vector in space})`` from one snapshot (galleries without any
        are absent): the counts hold exactly the changes up to that seq, so a follower that applies the
        changes after it counts each once."""
        with self._read(consistent=True) as conn:
            seq = int(conn.execute(_LAST_SEQ).scalar_one())
            return seq, vectors.counts_by_gallery(conn, space)

    def get_subject(self, subject_id: str, gallery: str = DEFAULT_GALLERY) -> SubjectRecord | None:
        with self._read() as conn:
            created = conn.execute(
                sa.select(subjects.c.created_at).where(
                    subjects.c.gallery == gallery, subjects.c.subject_id == subject_id
                )
            ).scalar_one_or_none()
            if created is None:
                return None
            rows = conn.execute(
                sa.select(faces.c.face_id, faces.c.content_hash, faces.c.model_version, faces.c.created_at)
                .where(faces.c.gallery == gallery, faces.c.subject_id == subject_id)
                .order_by(faces.c.face_id)
            ).all()
        records = [FaceRecord(r[0], subject_id, r[1], r[2], r[3], gallery=gallery) for r in rows]
        return SubjectRecord(subject_id, created, records)

    def list_subjects(
        self, offset: int, limit: int, gallery: str = DEFAULT_GALLERY
    ) -> tuple[list[tuple[str, int, float]], int]:
        """``[(subject_id, face count, created_at)]`` of ``gallery`` ordered by id, and its subject count."""
        joined = subjects.outerjoin(
            faces, (faces.c.gallery == subjects.c.gallery) & (faces.c.subject_id == subjects.c.subject_id)
        )
        with self._read() as conn:
            total = conn.execute(
                sa.select(sa.func.count()).select_from(subjects).where(subjects.c.gallery == gallery)
            ).scalar_one()
            rows = conn.execute(
                sa.select(subjects.c.subject_id, sa.func.count(faces.c.face_id), subjects.c.created_at)
                .select_from(joined)
                .where(subjects.c.gallery == gallery)
                .group_by(subjects.c.subject_id, subjects.c.created_at)
                .order_by(subjects.c.subject_id)
                .limit(limit)
                .offset(offset)
            ).all()
        return [(r[0], int(r[1]), r[2]) for r in rows], int(total)

    def embeddings(
        self, subject_id: str | None = None, space: str = "student", gallery: str | None = None
    ) -> tuple[np.ndarray, list[str], np.ndarray]:
        """``(face_ids, subject_ids, (N, D) embeddings)`` of every face, or of one subject's faces, in
        ``space`` ('student', or 'teacher': only the faces that have one); of every gallery, or of one
        (a subject is looked up in ``gallery``, the default one when not given)."""
        where: sa.ColumnElement[bool] = sa.true()
        if subject_id is not None:
            where = (faces.c.subject_id == subject_id) & (faces.c.gallery == (gallery or DEFAULT_GALLERY))
        elif gallery is not None:
            where = faces.c.gallery == gallery
        with self._read() as conn:
            ids, _, subject_ids, vectors = self._rows(conn, where, space)
        return ids, subject_ids, vectors

    @staticmethod
    def _rows(
        conn: sa.Connection, where: Any, space: str = "student"
    ) -> tuple[np.ndarray, list[str], list[str], np.ndarray]:
        """``(face_ids, galleries, subject_ids, (N, D) embeddings)`` of the faces ``where`` selects."""
        vector = SPACES[space][0]
        query = (
            sa.select(faces.c.face_id, faces.c.gallery, faces.c.subject_id, vector)
            .where(vector.is_not(None), where)
            .order_by(faces.c.face_id)
        )
        rows = conn.execute(query).all()
        if not rows:
            return np.zeros(0, dtype=np.int64), [], [], np.zeros((0, 0), dtype=np.float32)
        ids = np.asarray([r[0] for r in rows], dtype=np.int64)
        return ids, [r[1] for r in rows], [r[2] for r in rows], _vectors([r[3] for r in rows])

    def faces_by_id(
        self, face_ids: Sequence[int], space: str = "student"
    ) -> tuple[np.ndarray, list[str], list[str], np.ndarray]:
        """``(face_ids, galleries, subject_ids, embeddings)`` of the given face ids (those still present)."""
        with self._read() as conn:
            return self._rows(conn, faces.c.face_id.in_([int(i) for i in face_ids]), space)

    def snapshot(self, space: str = "student") -> Snapshot:
        with self._read(consistent=True) as conn:
            seq = conn.execute(_LAST_SEQ).scalar_one()
            ids, gallery_names, subject_ids, vectors = self._rows(conn, sa.true(), space)
        return Snapshot(ids, subject_ids, vectors, int(seq), gallery_names)

    def changes_since(self, seq: int, limit: int = 10_000) -> list[Change]:
        with self._read() as conn:
            return self._changes(conn, seq, limit)

    @staticmethod
    def _changes(conn: sa.Connection, seq: int, limit: int) -> list[Change]:
        rows = conn.execute(
            sa.select(
                changes.c.seq,
                changes.c.op,
                changes.c.face_id,
                changes.c.subject_id,
                changes.c.gallery,
                changes.c.had_student,
                changes.c.had_teacher,
            )
            .where(changes.c.seq > seq)
            .order_by(changes.c.seq)
            .limit(limit)
        ).all()
        return [
            Change(
                int(r[0]),
                r[1],
                None if r[2] is None else int(r[2]),
                r[3],
                r[4],
                None if r[5] is None else bool(r[5]),
                None if r[6] is None else bool(r[6]),
            )
            for r in rows
        ]

    def changes_and_added_vectors(self, space: str, seq: int, limit: int) -> tuple[list[Change], dict[str, int]]:
        """The change-log entries after ``seq`` (at most ``limit``) and ``{gallery: how many of the faces
        their 'add' entries name have a vector in space}``, from one snapshot: a face enrolled there is
        absent only if its 'remove' is in the snapshot too, so among the entries unless ``limit`` cut them
        short (then recount), and a follower that skips such a 'remove' counts each face once."""
        with self._read(consistent=True) as conn:
            pending = self._changes(conn, seq, limit)
            added = [c.face_id for c in pending if c.op == "add" and c.face_id is not None]
            return pending, vectors.counts_of_faces(conn, space, added)

    def chips(self) -> list[tuple[int, bytes | None, bytes | None]]:
        """``(face_id, canonical chip PNG, HR chip PNG)`` of every face (None where not kept)."""
        with self._read() as conn:
            query = sa.select(faces.c.face_id, faces.c.chip, faces.c.hr_chip).order_by(faces.c.face_id)
            return [(int(r[0]), r[1], r[2]) for r in conn.execute(query)]

    def model_versions(self, space: str = "student") -> set[str]:
        """The models whose embeddings the gallery holds in ``space``."""
        model = SPACES[space][1]
        with self._read() as conn:
            return set(conn.execute(sa.select(model).where(model.is_not(None)).distinct()).scalars())


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (see _sqlite_begin)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("gallery_write") else "BEGIN")


def open_store(database_url: str | None, gallery_dir: Path, pool_size: int = 4, max_overflow: int = 2) -> GalleryStore:
    """PostgreSQL when ``database_url`` is set (a connection pool of ``pool_size`` + ``max_overflow``),
    else the SQLite file under ``gallery_dir``."""
    if database_url:
        return GalleryStore(database_url, pool_size, max_overflow)
    return GalleryStore.sqlite(gallery_dir)
