"""The gallery searched in PostgreSQL with pgvector (a real server with the vector extension, see
tests/postgres.py): the migration, both embedding spaces, equality with exact search, replicas that see
each other's writes at once, and what happens on a PostgreSQL without pgvector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psycopg
import pytest
import sqlalchemy as sa
from alembic import command

from lrface.settings import Settings
from service.bench import synthetic_embeddings, synthetic_probes
from service.gallery import schema, vectors
from service.gallery.gallery import Gallery, open_gallery
from service.gallery.pgvector import PgvectorGallery
from service.gallery.store import GalleryStore, NewFace
from service.gallery.store import postgres_url as driver_url
from tests.postgres import fresh_database


def _pair(store: GalleryStore, ef_search: int = 40) -> PgvectorGallery:
    teacher = PgvectorGallery(store, 8, "t:1", space="teacher", ef_search=ef_search)
    return PgvectorGallery(store, 16, "m:1", teacher=teacher, ef_search=ef_search)


def _exact(vectors_: np.ndarray, subjects: list[str], query: np.ndarray, top_k: int) -> list[tuple[str, float]]:
    """Brute force in numpy: each subject by its best face."""
    scores = vectors_ @ query
    best: dict[str, float] = {}
    for i in np.argsort(-scores):
        best.setdefault(subjects[i], float(scores[i]))
    return sorted(best.items(), key=lambda kv: -kv[1])[:top_k]


def test_migration_installs_pgvector_and_fills_existing_faces(postgres_url: str) -> None:
    """A gallery made before pgvector (revision 0003) gets the extension and its faces' vectors."""
    engine = sa.create_engine(driver_url(postgres_url))
    with engine.begin() as conn:
        command.upgrade(schema._config(conn), "0003")
        conn.exec_driver_sql("INSERT INTO subjects VALUES ('old', 1.0)")
        conn.execute(
            sa.text(
                "INSERT INTO faces (subject_id, content_hash, model_version, embedding, created_at,"
                " teacher_embedding, teacher_version) VALUES ('old', 'h', 'm:1', :e, 1.0, :t, 't:1')"
            ),  # fmt: skip
            {"e": np.full(16, 0.25, np.float32).tobytes(), "t": np.full(8, 8**-0.5, np.float32).tobytes()},
        )
    engine.dispose()
    store = GalleryStore(postgres_url)
    assert store.revision == "0006" and store.pgvector
    with store.engine.connect() as conn:
        row = conn.exec_driver_sql("SELECT embedding_vec::text, vector_dims(teacher_vec) FROM faces").one()
        assert conn.exec_driver_sql("SELECT extname FROM pg_extension WHERE extname = 'vector'").scalar() == "vector"
    assert row[0] == "[" + ",".join(["0.25"] * 16) + "]" and row[1] == 8
    gallery = _pair(store)
    gallery.load()
    assert gallery.search(np.full(16, 0.25, np.float32), 1)[0].subject_id == "old"
    assert gallery.in_space("teacher").search(np.full(8, 8**-0.5, np.float32), 1)[0].score == pytest.approx(1.0)
    assert len(gallery) == 1 and len(gallery.in_space("teacher")) == 1
    store.close()


def test_search_equals_exact_search_in_both_spaces(postgres_url: str) -> None:
    """On a small gallery the HNSW walk (ef_search above the gallery size) returns exactly what brute
    force does, through the index (the plan names it), and faces without a teacher embedding are
    absent from the teacher's space."""
    store = GalleryStore(postgres_url)
    student, subject_index = synthetic_embeddings(300, 16, with_subjects=True)
    teacher_vectors = synthetic_embeddings(300, 8, seed=5)
    subjects = [f"s{int(s):03d}" for s in subject_index]
    has_teacher = np.arange(300) % 3 != 0  # a third enrolled before the teacher served
    gallery = _pair(store, ef_search=400)
    gallery.load()  # the HNSW indexes exist before the faces arrive: each insert goes into the graph
    for subject in dict.fromkeys(subjects):
        rows = [i for i in range(300) if subjects[i] == subject]
        gallery.enroll(
            subject,
            [NewFace(f"h{i}", student[i], teacher_embedding=teacher_vectors[i] if has_teacher[i] else None)
             for i in rows],
        )  # fmt: skip
    assert len(gallery) == 300 and len(gallery.in_space("teacher")) == int(has_teacher.sum())
    probes, _ = synthetic_probes(300, 16, 25)
    for query in probes:
        found = [(m.subject_id, m.score) for m in gallery.search(query, 5)]
        expected = _exact(student, subjects, query, 5)
        assert [s for s, _ in found] == [s for s, _ in expected]
        assert np.allclose([s for _, s in found], [s for _, s in expected], atol=1e-5)
        assert gallery.search(query, 5, exact=True) == gallery.search(query, 5)
    t_probes, _ = synthetic_probes(300, 8, 10, seed=5)
    t_subjects = [s for s, keep in zip(subjects, has_teacher, strict=True) if keep]
    for query in t_probes:
        found = [m.subject_id for m in gallery.in_space("teacher").search(query, 3)]
        assert found == [s for s, _ in _exact(teacher_vectors[has_teacher], t_subjects, query, 3)]
    with store.engine.connect() as conn, conn.begin():
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # a 300-row table is otherwise scanned
        plan = "\n".join(conn.exec_driver_sql(
            f"EXPLAIN SELECT face_id FROM faces ORDER BY embedding_vec::vector(16) <#> '{vectors.literal(probes[0])}'"
            "::vector(16) LIMIT 5"
        ).scalars())  # fmt: skip
    assert vectors.index_name("student", 16) in plan
    store.close()


def test_replicas_see_an_enrolment_and_a_delete_at_once(postgres_url: str) -> None:
    """Two processes on one database: neither holds a copy, so the other's search sees a write the
    moment it commits, with no sync in between; the counts follow at the next sync."""
    a, b = _pair(GalleryStore(postgres_url)), _pair(GalleryStore(postgres_url))
    a.load()
    b.load()
    v = synthetic_embeddings(3, 16, seed=9)
    t = synthetic_embeddings(1, 8, seed=9)[0]
    a.enroll("alice", [NewFace("a1", v[0], teacher_embedding=t)])
    assert [m.subject_id for m in b.search(v[0], 1)] == ["alice"]  # no sync in between
    assert b.in_space("teacher").search(t, 1)[0].subject_id == "alice"
    b.enroll("bob", [NewFace("b1", v[1])])
    assert a.search(v[1], 1)[0].subject_id == "bob"
    assert a.delete_subject("alice")
    assert [m.subject_id for m in b.search(v[0], 5)] == ["bob"] and b.in_space("teacher").search(t, 1) == []
    assert len(b) == 2 and b.sync() == 1 and len(b) == 1 and len(b.in_space("teacher")) == 0
    assert b.seq == a.seq == a.store.last_seq()
    a.close()
    b.close()


def test_enrolments_are_counted_without_a_recount_and_counts_stay_exact(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An enrolment's sync counts the new rows by key (a recount of the whole table cost 0.4 s at 1M
    faces), and so does a delete (tests/test_pgvector_counts.py). Through enrolments and deletes in two
    galleries, with and without teacher embeddings, the counts equal a recount."""
    store = GalleryStore(postgres_url)
    gallery = _pair(store)
    gallery.load()
    store.create_gallery("lobby")
    v, t = synthetic_embeddings(12, 16, seed=3), synthetic_embeddings(12, 8, seed=3)

    def recount(space: str = "student") -> tuple[int, dict[str, int]]:
        raise AssertionError("a sync recounted the table")

    with monkeypatch.context() as patch:
        patch.setattr(store, "vector_counts_as_of", recount)
        gallery.enroll("a", [NewFace("a1", v[0], teacher_embedding=t[0]), NewFace("a2", v[1])])
        gallery.enroll("b", [NewFace("b1", v[2], teacher_embedding=t[2])], gallery="lobby")
        gallery.enroll("c", [NewFace(f"c{i}", v[i], teacher_embedding=t[i]) for i in range(3, 8)], gallery="lobby")
        assert (gallery.count(), gallery.count("lobby"), len(gallery)) == (2, 6, 8)
        teacher = gallery.in_space("teacher")
        assert (teacher.count(), teacher.count("lobby"), len(teacher)) == (1, 6, 7)
        assert gallery.delete_subject("c", "lobby") is not None  # counted by key too
        gallery.enroll("d", [NewFace("d1", v[8])], gallery="lobby")
    for space, part in (("student", gallery), ("teacher", teacher)):
        counted = store.vector_counts_as_of(space)[1]
        assert {name: part.count(name) for name in ("default", "lobby")} == {
            name: counted.get(name, 0) for name in ("default", "lobby")
        }
        assert len(part) == sum(counted.values())
    assert gallery.seq == store.last_seq()
    store.close()


def test_a_recount_and_its_change_log_position_come_from_one_snapshot(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An enrolment by another replica committed while a gallery recounts its faces is counted once:
    the recount and the change-log position it is followed from are read together (read apart, the
    enrolment was in the recount and counted again by the next sync)."""
    store, other_store = GalleryStore(postgres_url), GalleryStore(postgres_url)
    gallery, other = _pair(store), _pair(other_store)
    other.load()
    v, t = synthetic_embeddings(3, 16, seed=5), synthetic_embeddings(3, 8, seed=5)
    other.enroll("a", [NewFace("a1", v[0], teacher_embedding=t[0])])
    counts_by_gallery = vectors.counts_by_gallery
    late: list[int] = []

    def enrolment_during_the_recount(conn: sa.Connection, space: str) -> dict[str, int]:
        if not late:  # the first recount only, between its change-log read and its count
            late.append(1)
            other.enroll("b", [NewFace("b1", v[1], teacher_embedding=t[1]), NewFace("b2", v[2])])
        return counts_by_gallery(conn, space)

    with monkeypatch.context() as patch:
        patch.setattr(vectors, "counts_by_gallery", enrolment_during_the_recount)
        gallery.load()
    assert late
    gallery.sync()
    assert (len(gallery), gallery.count()) == (3, 3)
    teacher = gallery.in_space("teacher")
    assert len(teacher) == sum(store.vector_counts_as_of("teacher")[1].values()) == 2
    assert gallery.seq == store.last_seq()
    store.close()
    other_store.close()


def test_open_gallery_picks_pgvector_and_reembedding_to_another_size_keeps_working(
    postgres_url: str, tmp_path: Path
) -> None:
    settings = Settings(database_url=postgres_url, gallery_dir=tmp_path / "unused")
    gallery = open_gallery(settings, 16, "m:1", teacher=(8, "t:1"))
    assert isinstance(gallery, PgvectorGallery) and isinstance(gallery.teacher, PgvectorGallery)
    assert gallery.index.active_kind == "pgvector-hnsw" and gallery.index.device == "postgresql"
    v = synthetic_embeddings(2, 16)
    records = gallery.enroll("x", [NewFace("h", v[0])])
    faiss_one = open_gallery(settings.model_copy(update={"gallery_engine": "faiss"}), 16, "m:1")
    assert type(faiss_one) is Gallery and faiss_one.search(v[0], 1)[0].subject_id == "x"
    faiss_one.close()
    # `lrface gallery reembed` into a model of another size: the old dimension's index gives way.
    wider = synthetic_embeddings(1, 24)[0]
    gallery.store.replace_embeddings([(records[0].face_id, wider)], "m:2")
    gallery.close()
    wide = open_gallery(settings, 24, "m:2")
    assert wide.search(wider, 1)[0].score == pytest.approx(1.0, abs=1e-5)
    with wide.store.engine.connect() as conn:
        names = set(conn.exec_driver_sql("SELECT indexname FROM pg_indexes WHERE tablename = 'faces'").scalars())
    assert vectors.index_name("student", 24) in names and vectors.index_name("student", 16) not in names
    wide.close()


def test_a_server_without_pgvector_for_this_user_falls_back_to_faiss_or_is_refused(
    postgres_admin_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A database user who may not create the extension (pgvector is not a trusted extension): the
    gallery migrates and is served from memory with a warning, or refused with gallery_engine=pgvector."""
    admin = fresh_database(postgres_admin_url, f"lrface_plain_{id(tmp_path)}")
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS plain_user")
        conn.execute("CREATE ROLE plain_user LOGIN")
        conn.execute(f'ALTER DATABASE "{admin.rsplit("/", 1)[1]}" OWNER TO plain_user')
    url = admin.replace("postgresql://lrface@", "postgresql://plain_user@")
    settings = Settings(database_url=url, gallery_dir=tmp_path / "unused")
    with caplog.at_level("WARNING", logger="lrface.gallery"):
        gallery = open_gallery(settings, 16, "m:1")
    assert type(gallery) is Gallery and not gallery.store.pgvector
    assert "cannot create the vector extension" in caplog.text and "in this process's memory" in caplog.text
    v = synthetic_embeddings(1, 16)[0]
    gallery.enroll("x", [NewFace("h", v)])
    assert gallery.search(v, 1)[0].subject_id == "x"
    gallery.close()
    with pytest.raises(RuntimeError, match="no vector extension"):
        open_gallery(settings.model_copy(update={"gallery_engine": "pgvector"}), 16, "m:1")
    # Once the owner installs it, the next start fills the vectors and searches in the database.
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
    upgraded = open_gallery(settings, 16, "m:1")
    assert isinstance(upgraded, PgvectorGallery) and upgraded.search(v, 1)[0].subject_id == "x"
    upgraded.close()
