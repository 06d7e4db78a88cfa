"""The pgvector gallery's face counts follow deletes by key (revision 0006): a 'remove' entry says the
face's gallery and whether it had a vector in each space, so another replica's sync subtracts it
instead of recounting the table (0.4 s at 1M faces). Recounts are patched to fail where none may
happen; every count is then checked against a real recount (a real PostgreSQL with pgvector, see
tests/postgres.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import sqlalchemy as sa
from alembic import command

from service.bench import synthetic_embeddings
from service.gallery import schema, vectors
from service.gallery.pgvector import PgvectorGallery
from service.gallery.store import GalleryStore, NewFace
from service.gallery.store import postgres_url as driver_url

V, T = synthetic_embeddings(40, 16, seed=11), synthetic_embeddings(40, 8, seed=11)
GALLERIES = ("default", "lobby", "attic")


def _pair(store: GalleryStore) -> PgvectorGallery:
    teacher = PgvectorGallery(store, 8, "t:1", space="teacher")
    return PgvectorGallery(store, 16, "m:1", teacher=teacher)


def _faces(first: int, count: int, teacher: list[bool]) -> list[NewFace]:
    """Faces ``first..first+count-1`` of V (and of T where ``teacher`` says so)."""
    return [NewFace(f"h{i}", V[i], teacher_embedding=T[i] if t else None) for i, t in zip(range(first, first + count),
            teacher, strict=True)]  # fmt: skip


def _assert_exact(gallery: PgvectorGallery) -> None:
    """Every gallery's count, in both spaces, equals a recount of the table (the method itself, even
    where a test patched it away on the store), and the gallery is at the end of the change log."""
    store = gallery.store
    for space in ("student", "teacher"):
        part = gallery.in_space(space)
        assert isinstance(part, PgvectorGallery)
        seq, counted = GalleryStore.vector_counts_as_of(store, space)
        assert {g: part.count(g) for g in GALLERIES} == {g: counted.get(g, 0) for g in GALLERIES}, space
        assert len(part) == sum(counted.values()) and part.seq == seq == store.last_seq(), space


@contextmanager
def _no_recount(monkeypatch: pytest.MonkeyPatch, *stores: GalleryStore) -> Iterator[None]:
    def recount(space: str = "student") -> tuple[int, dict[str, int]]:
        raise AssertionError(f"a sync recounted the {space} table")

    with monkeypatch.context() as patch:
        for store in stores:
            patch.setattr(store, "vector_counts_as_of", recount)
        yield


def _replicas(postgres_url: str) -> tuple[PgvectorGallery, PgvectorGallery]:
    a, b = _pair(GalleryStore(postgres_url)), _pair(GalleryStore(postgres_url))
    a.load()
    b.load()
    a.create_gallery("lobby")
    a.create_gallery("attic")
    return a, b


def test_deletes_on_one_replica_are_counted_by_another_without_a_recount(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A face, a subject and a whole gallery deleted through replica A: replica B's sync subtracts each
    from the right gallery in each space it had a vector in, without recounting the table."""
    a, b = _replicas(postgres_url)
    ann = a.enroll("ann", _faces(0, 3, [True, True, False]))
    ben = a.enroll("ben", _faces(3, 2, [False, True]))
    a.enroll("cat", _faces(5, 3, [True, True, True]), gallery="lobby")
    a.enroll("eve", _faces(8, 1, [False]), gallery="lobby")
    a.enroll("dan", _faces(9, 2, [True, False]), gallery="attic")
    b.sync()
    _assert_exact(b)
    with _no_recount(monkeypatch, a.store, b.store):
        assert a.delete_face("ann", ann[0].face_id)  # it had a teacher vector
        assert b.sync() == 1 and (b.count(), b.in_space("teacher").count()) == (4, 2)
        assert a.delete_face("ben", ben[0].face_id)  # it had none
        assert b.sync() == 1 and (b.count(), b.in_space("teacher").count()) == (3, 2)
        assert a.delete_subject("cat", "lobby") is not None
        assert b.sync() == 3 and (b.count("lobby"), b.in_space("teacher").count("lobby")) == (1, 0)
        assert a.delete_gallery("attic") == (1, 2)
        assert b.sync() == 2 and (b.count("attic"), b.in_space("teacher").count("attic")) == (0, 0)
        assert b.sync() == 0
    _assert_exact(a)
    _assert_exact(b)
    a.close()
    b.close()


def test_a_face_enrolled_and_deleted_since_the_last_sync_is_counted_by_neither(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In one batch of pending changes: faces enrolled then deleted (one face, a subject, a whole
    gallery), beside an enrolment that stays and a delete of a face counted before. The enrolment's row is
    gone, so the delete must not be subtracted either."""
    a, b = _replicas(postgres_url)
    keep = a.enroll("keep", _faces(0, 2, [True, True]))
    a.enroll("old", _faces(2, 1, [True]), gallery="lobby")
    b.sync()
    with _no_recount(monkeypatch, a.store, b.store):
        x = a.enroll("x", _faces(10, 3, [True, False, True]), gallery="lobby")
        assert a.delete_face("x", x[0].face_id, "lobby")
        a.enroll("y", _faces(13, 1, [True]))
        assert a.delete_subject("x", "lobby") is not None
        a.enroll("z", _faces(14, 2, [True, True]), gallery="attic")
        assert a.delete_gallery("attic") == (1, 2)
        assert a.delete_face("keep", keep[0].face_id)
        b.sync()
        assert (b.count(), b.count("lobby"), b.count("attic")) == (2, 1, 0)
        assert (b.in_space("teacher").count(), b.in_space("teacher").count("lobby")) == (2, 1)
    _assert_exact(b)
    a.close()
    b.close()


def test_a_delete_committed_while_enrolments_are_counted_is_counted_once(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pending entries and the rows of the faces they enrol are read in one snapshot: a face deleted
    between the two reads is counted as enrolled (its row is in the snapshot) and subtracted by the next
    sync. Read apart, it was counted by neither read and then subtracted: one face short."""
    a, b = _replicas(postgres_url)
    a.enroll("base", _faces(0, 2, [True, True]))
    b.sync()
    a.enroll("late", _faces(2, 1, [True]))
    counts_of_faces = vectors.counts_of_faces
    deleted: list[int] = []

    def delete_during_the_count(conn: sa.Connection, space: str, face_ids: list[int]) -> dict[str, int]:
        if not deleted and conn.engine is b.store.engine:  # B's first count (its teacher space syncs first)
            deleted.append(1)
            assert a.delete_subject("late") is not None
        return counts_of_faces(conn, space, face_ids)

    with _no_recount(monkeypatch, a.store, b.store):
        with monkeypatch.context() as patch:
            patch.setattr(vectors, "counts_of_faces", delete_during_the_count)
            b.sync()
        assert deleted
        b.sync()
        assert (len(b), len(b.in_space("teacher"))) == (2, 2)
    _assert_exact(b)
    a.close()
    b.close()


def test_entries_that_do_not_say_what_the_face_had_still_recount(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete whose entry says what the face had is counted by key; one written before revision 0006
    (NULL there), or before 0005 (no gallery), or a 'reload', recounts, and the counts stay exact."""
    a, b = _replicas(postgres_url)
    faces = a.enroll("ann", _faces(0, 4, [True, True, False, True]), gallery="lobby")
    b.sync()
    recounts: list[str] = []
    recount = b.store.vector_counts_as_of

    def counted(space: str = "student") -> tuple[int, dict[str, int]]:
        recounts.append(space)
        return recount(space)

    monkeypatch.setattr(b.store, "vector_counts_as_of", counted)

    def delete_and_age(face_id: int, age: str) -> None:
        assert a.delete_face("ann", face_id, "lobby")
        with a.store.engine.begin() as conn:
            conn.exec_driver_sql(f"UPDATE changes SET {age} WHERE seq = (SELECT max(seq) FROM changes)")

    assert a.delete_face("ann", faces[0].face_id, "lobby")
    assert b.sync() == 1 and recounts == []  # counted by key
    _assert_exact(b)
    delete_and_age(faces[1].face_id, "had_student = NULL, had_teacher = NULL")  # as before 0006
    assert b.sync() == 1 and recounts == ["teacher", "student"]
    _assert_exact(b)
    recounts.clear()
    delete_and_age(faces[2].face_id, "gallery = NULL")  # as before 0005 (the default gallery, it says)
    assert b.sync() == 1 and recounts == ["teacher", "student"]
    _assert_exact(b)
    recounts.clear()
    a.store.import_faces([("bulk", "hb", V[20])], "m:1", gallery="lobby")  # a 'reload'
    assert b.sync() == 1 and recounts == ["teacher", "student"]
    _assert_exact(b)
    a.close()
    b.close()


def test_remove_entries_say_the_gallery_and_the_embeddings_the_face_had(store_url: str) -> None:
    """On both back ends, every path that deletes faces logs, in its transaction, the face's gallery and
    whether it had an embedding in each space; 'add' entries, and entries migrated from revision 0005,
    leave that unknown (None)."""
    engine = sa.create_engine(driver_url(store_url))
    with engine.begin() as conn:  # a revision-0005 gallery whose log already holds a delete
        command.upgrade(schema._config(conn), "0005")
        conn.exec_driver_sql("INSERT INTO changes (op, face_id, subject_id, created_at, gallery) "
                             "VALUES ('remove', 99, 'gone', 1.0, 'default')")  # fmt: skip
    engine.dispose()
    store = GalleryStore(store_url)
    assert store.revision == schema.head_revision() == "0006"
    old = store.changes_since(0)[-1]
    assert (old.op, old.had("student"), old.had("teacher")) == ("remove", None, None)
    store.create_gallery("lobby")
    ann = store.add_faces("ann", _faces(0, 2, [True, False]), "m:1", "t:1")
    store.add_faces("ben", _faces(2, 2, [False, True]), "m:1", "t:1", gallery="lobby")
    store.add_faces("cat", _faces(4, 1, [True]), "m:1", "t:1")
    seq = store.last_seq()
    assert all(c.had("student") is None and c.had("teacher") is None for c in store.changes_since(old.seq))
    assert store.delete_face("ann", ann[1].face_id)
    assert not store.delete_face("ann", ann[1].face_id)  # nothing deleted: nothing logged
    assert store.delete_subject("cat") == [5]
    assert store.delete_gallery("lobby") == (1, [3, 4])
    logged = [
        (c.op, c.face_id, c.subject_id, c.gallery, c.had_student, c.had_teacher) for c in store.changes_since(seq)
    ]
    assert logged == [
        ("remove", 2, "ann", "default", True, False),
        ("remove", 5, "cat", "default", True, True),
        ("remove", 3, "ben", "lobby", True, False),
        ("remove", 4, "ben", "lobby", True, True),
    ]
    assert np.array_equal(store.embeddings(space="teacher")[0], [1])
    store.close()


def test_a_postgresql_store_without_pgvector_leaves_what_a_deleted_face_had_unknown(postgres_url: str) -> None:
    """Without pgvector's columns a delete cannot say which vectors a later pgvector replica counted for
    the face: its entry leaves them None, and such a follower recounts."""
    store = GalleryStore(postgres_url)
    store.pgvector = False  # as on a PostgreSQL server without the extension
    ann = store.add_faces("ann", _faces(0, 1, [True]), "m:1", "t:1")
    seq = store.last_seq()
    assert store.delete_face("ann", ann[0].face_id)
    (entry,) = store.changes_since(seq)
    assert (entry.op, entry.gallery, entry.had("student"), entry.had("teacher")) == ("remove", "default", None, None)
    store.close()


def test_revision_0006_downgrades_in_place_and_the_log_keeps_counting_up(store_url: str) -> None:
    """Down to 0005 the two columns go and nothing else changes: on SQLite the table is not rebuilt, so
    ``seq`` keeps its AUTOINCREMENT and a position is never given twice, even after the log is pruned."""
    store = GalleryStore(store_url)
    ann = store.add_faces("ann", _faces(0, 2, [True, False]), "m:1", "t:1")
    assert store.delete_face("ann", ann[1].face_id)
    last = store.last_seq()
    store.close()
    engine = sa.create_engine(driver_url(store_url))
    with engine.begin() as conn:
        command.downgrade(schema._config(conn), "0005")
    with engine.begin() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("changes")}
        assert "had_student" not in columns and "had_teacher" not in columns and "gallery" in columns
        conn.exec_driver_sql("DELETE FROM changes")  # pruned to nothing
        conn.exec_driver_sql("INSERT INTO changes (op, face_id, subject_id, created_at, gallery) "
                             "VALUES ('remove', 1, 'ann', 2.0, 'default')")  # fmt: skip
        assert conn.exec_driver_sql("SELECT max(seq) FROM changes").scalar() == last + 1
    engine.dispose()
    again = GalleryStore(store_url)  # upgraded to the head again
    assert again.revision == "0006" and again.changes_since(last)[0].had("student") is None
    again.close()
