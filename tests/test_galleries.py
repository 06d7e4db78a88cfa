"""Named galleries without HTTP: every engine keeps galleries apart (FAISS in one process, FAISS
replicas following the change log, the persisted FAISS index, pgvector), pgvector's filtered search
keeps its recall for a small gallery inside a large table, and migration 0005 moves a revision-0004
gallery (SQLite and PostgreSQL) into the gallery 'default'."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from alembic import command

from service.bench import synthetic_embeddings, synthetic_probes
from service.gallery import schema, vectors
from service.gallery.gallery import Gallery
from service.gallery.index import FaceIndex
from service.gallery.pgvector import PgvectorGallery
from service.gallery.store import GalleryStore, NewFace, UnknownGallery
from service.gallery.store import postgres_url as driver_url


def _unit(seed: int, dim: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def _subjects(gallery: Gallery, query: np.ndarray, name: str = "default") -> set[str]:
    return {m.subject_id for m in gallery.search(query, 10, gallery=name)}


def _two_galleries(gallery: Gallery) -> None:
    """'alice' in both galleries (different faces), 'bob' in lobby only, 'carol' in default only."""
    assert gallery.create_gallery("lobby") and not gallery.create_gallery("lobby")
    gallery.enroll("alice", [NewFace("a", _unit(1))])
    gallery.enroll("carol", [NewFace("c", _unit(3))])
    gallery.enroll("alice", [NewFace("a", _unit(11))], gallery="lobby")  # same subject id and hash, other gallery
    gallery.enroll("bob", [NewFace("b", _unit(2))], gallery="lobby")


def _check_apart(gallery: Gallery) -> None:
    assert _subjects(gallery, _unit(2)) == {"alice", "carol"}  # bob is not in the default gallery
    assert _subjects(gallery, _unit(3), "lobby") == {"alice", "bob"}  # carol is not in lobby
    assert gallery.search(_unit(1), 1)[0].score == pytest.approx(1.0, abs=1e-5)
    assert gallery.search(_unit(1), 1, gallery="lobby")[0].score < 0.99  # default alice's face is not lobby's
    assert gallery.search(_unit(11), 1, gallery="lobby")[0].subject_id == "alice"
    assert gallery.search(_unit(1), 5, gallery="nope") == []


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_faiss_keeps_galleries_apart(store_url: str, kind: str) -> None:
    gallery = Gallery(GalleryStore(store_url), 8, "m:1", FaceIndex(8, kind))
    gallery.load()
    _two_galleries(gallery)
    _check_apart(gallery)
    assert len(gallery) == 4 and gallery.count() == 2 and gallery.count("lobby") == 2
    assert gallery.subject_scores("alice", _unit(11), "lobby") == pytest.approx((1.0, 1.0, 1), abs=1e-5)
    assert gallery.get_subject("bob") is None and gallery.get_subject("bob", "lobby") is not None
    counts = {g.name: (g.subject_count, g.face_count) for g in gallery.list_galleries()}
    assert counts == {"default": (2, 2), "lobby": (2, 2)}
    with pytest.raises(UnknownGallery):
        gallery.enroll("x", [NewFace("x", _unit(5))], gallery="nope")
    with pytest.raises(ValueError, match="cannot be deleted"):
        gallery.delete_gallery("default")
    assert gallery.delete_subject("alice", "lobby") == [3] and _subjects(gallery, _unit(1)) == {"alice", "carol"}
    assert gallery.delete_gallery("lobby") == (1, 1) and gallery.delete_gallery("lobby") is None
    assert gallery.search(_unit(2), 5, gallery="lobby") == [] and len(gallery) == 2 and not gallery.has_gallery("lobby")
    gallery.close()


def test_replicas_follow_galleries_through_the_change_log(store_url: str) -> None:
    writer = Gallery(GalleryStore(store_url), 8, "m:1", FaceIndex(8, "flat"))
    reader = Gallery(GalleryStore(store_url), 8, "m:1", FaceIndex(8, "flat"))
    writer.load()
    reader.load()
    _two_galleries(writer)
    assert reader.sync() == 4
    _check_apart(reader)
    writer.delete_gallery("lobby")
    assert reader.sync() == 2 and len(reader) == 2 and reader.search(_unit(2), 5, gallery="lobby") == []
    reopened = Gallery(GalleryStore(store_url), 8, "m:1", FaceIndex(8, "flat"))  # built from the store
    reopened.load()
    assert _subjects(reopened, _unit(2)) == {"alice", "carol"} and len(reopened) == 2
    for gallery in (writer, reader, reopened):
        gallery.close()


def test_the_persisted_index_keeps_galleries_apart(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'gallery.sqlite3'}"
    first = Gallery(GalleryStore(store_url), 8, "m:1", FaceIndex(8, "hnsw"), persist_dir=tmp_path)
    first.load()
    _two_galleries(first)
    first.close()
    assert (tmp_path / "index-student.faiss").exists() and (tmp_path / "index-student.lobby.faiss").exists()
    writer = GalleryStore(store_url)  # after the save: a face in lobby, a delete in lobby
    writer.add_faces("dave", [NewFace("d", _unit(4))], "m:1", gallery="lobby")
    writer.delete_subject("bob", "lobby")

    def reopen() -> Gallery:
        gallery = Gallery(GalleryStore(store_url), 8, "m:1", FaceIndex(8, "hnsw"), persist_dir=tmp_path)
        gallery.store.snapshot = lambda *_: pytest.fail("built from the store")  # type: ignore[method-assign]
        gallery.load()
        return gallery

    second = reopen()
    assert _subjects(second, _unit(4), "lobby") == {"alice", "dave"}
    assert _subjects(second, _unit(4)) == {"alice", "carol"}
    second.delete_gallery("lobby")
    second.close()
    assert not (tmp_path / "index-student.lobby.faiss").exists()  # a deleted gallery's file goes
    third = reopen()
    assert len(third) == 2 and third.search(_unit(4), 5, gallery="lobby") == []
    third.close()
    writer.close()


def test_pgvector_keeps_galleries_apart(postgres_url: str) -> None:
    store = GalleryStore(postgres_url)
    gallery = PgvectorGallery(store, 8, "m:1", ef_search=40)
    gallery.load()
    _two_galleries(gallery)
    _check_apart(gallery)
    other = PgvectorGallery(GalleryStore(postgres_url), 8, "m:1")  # a replica: no sync needed to search
    other.load()
    gallery.delete_gallery("lobby")
    assert other.search(_unit(2), 5, gallery="lobby") == [] and _subjects(other, _unit(2)) == {"alice", "carol"}
    other.close()
    gallery.close()


def _exact(vecs: np.ndarray, subjects: list[str], query: np.ndarray, top_k: int) -> list[str]:
    best: dict[str, float] = {}
    scores = vecs @ query
    for i in np.argsort(-scores):
        best.setdefault(subjects[i], float(scores[i]))
    return sorted(best, key=lambda s: -best[s])[:top_k]


def test_pgvector_small_galleries_inside_a_large_table_keep_their_recall(postgres_url: str) -> None:
    """3,000 faces in 'default', 1,200 in 'medium' (under a third: the HNSW walk, filtered, goes on past its
    first ef_search candidates: pgvector's iterative scan) and 12 in 'small' (scanned exactly). Without
    the iterative scan a filtered walk of 40 candidates would hold about 11 faces of 'medium', not 28."""
    store = GalleryStore(postgres_url)
    gallery = PgvectorGallery(store, 16, "m:1", ef_search=40)
    gallery.load()  # the HNSW index exists before the faces arrive
    sizes = {"default": 3000, "medium": 1200, "small": 12}
    vecs, subject_index = synthetic_embeddings(sum(sizes.values()), 16, with_subjects=True, seed=3)
    start, members = 0, {}
    for name, size in sizes.items():
        gallery.create_gallery(name)
        rows = [(f"{name}-{int(subject_index[i])}", f"h{i}", vecs[i]) for i in range(start, start + size)]
        store.import_faces(rows, "m:1", gallery=name)
        members[name] = (vecs[start : start + size], [r[0] for r in rows])
        start += size
    gallery.sync()
    assert not gallery.scan_exactly("default", 28) and not gallery.scan_exactly("medium", 28)
    assert gallery.scan_exactly("small", 28)
    probes, _ = synthetic_probes(len(vecs), 16, 30, seed=4)
    for name in sizes:
        hits = 0
        for query in probes:
            found = [m.subject_id for m in gallery.search(query, 5, gallery=name)]
            assert found and all(s.startswith(name + "-") for s in found), name  # never another gallery's face
            expected = _exact(*members[name], query, 5)
            hits += found[0] == expected[0]
            if name == "small":
                assert found == expected
        assert hits >= 0.9 * len(probes), f"{name}: rank-1 equal to exact search in {hits} of {len(probes)}"
        rows = store.vector_search("student", 16, probes[0], 28, 40, gallery.scan_exactly(name, 28), name)
        assert len(rows) == min(28, sizes[name])  # a filtered walk still returns all it is asked for
    store.close()


def _revision_0004_with_data(url: str) -> None:
    """A gallery at revision 0004 with two subjects, three faces (one deleted: the id high-water mark is 4)."""
    engine = sa.create_engine(driver_url(url))
    with engine.begin() as conn:
        command.upgrade(schema._config(conn), "0004")
        pg = conn.dialect.name == "postgresql" and vectors.ready(conn)
        conn.exec_driver_sql("INSERT INTO subjects VALUES ('ann', 1.0), ('ben', 2.0)")
        for face_id, subject, seed in ((1, "ann", 1), (2, "ann", 2), (3, "ben", 3), (4, "ben", 4)):
            conn.execute(
                sa.text(
                    "INSERT INTO faces (face_id, subject_id, content_hash, model_version, embedding, created_at"
                    + (
                        ", embedding_vec) VALUES (:i, :s, :h, 'm:1', :e, 1.0, CAST(:v AS vector))"
                        if pg
                        else ") VALUES (:i, :s, :h, 'm:1', :e, 1.0)"
                    )
                ),  # fmt: skip
                {
                    "i": face_id,
                    "s": subject,
                    "h": f"h{face_id}",
                    "e": _unit(seed).tobytes(),
                    "v": vectors.literal(_unit(seed)),
                },  # fmt: skip
            )
        conn.exec_driver_sql("DELETE FROM faces WHERE face_id = 4")
        if pg:  # keep the sequence where a BIGSERIAL would be after inserting face 4
            conn.exec_driver_sql("SELECT setval(pg_get_serial_sequence('faces', 'face_id'), 4)")
    engine.dispose()


def test_migration_0005_moves_a_0004_gallery_into_default(store_url: str) -> None:
    _revision_0004_with_data(store_url)
    store = GalleryStore(store_url)
    assert store.revision == schema.head_revision() == "0006"
    assert [(g.name, g.subject_count, g.face_count) for g in store.list_galleries()] == [("default", 2, 3)]
    assert [f.face_id for f in store.get_subject("ann").faces] == [1, 2]  # type: ignore[union-attr]
    assert store.changes_since(0)[-1].op == "reload"
    engine_gallery = PgvectorGallery(store, 8, "m:1") if store.pgvector else Gallery(store, 8, "m:1")
    engine_gallery.load()
    assert engine_gallery.search(_unit(3), 1)[0].subject_id == "ben"
    store.create_gallery("lobby")
    added = store.add_faces("ann", [NewFace("h1", _unit(9))], "m:1", gallery="lobby")  # same id and hash: allowed
    assert added[0].created and added[0].face_id > 4  # ids are never reused (the index is keyed by them)
    assert not store.add_faces("ann", [NewFace("h1", _unit(1))], "m:1")[0].created  # still unique per gallery
    engine_gallery.sync()
    assert engine_gallery.search(_unit(9), 1, gallery="lobby")[0].subject_id == "ann"
    assert engine_gallery.search(_unit(9), 1)[0].score < 0.99
    assert store.delete_gallery("lobby") == (1, [added[0].face_id])  # the cascade stays inside the gallery
    assert store.list_galleries()[0].face_count == 3
    engine_gallery.close()


def test_gallery_names_never_leave_the_index_folder(tmp_path: Path) -> None:
    """A gallery name becomes part of an index file's name: the store refuses a name that is not one
    (a '/' or '..', a trailing newline) and the index file refuses to name a path with it, so a
    tampered ``index-student.json`` is not used (the index is built from the store)."""
    import json

    from service.gallery.gallery import IndexFile

    store_url = f"sqlite:///{tmp_path / 'gallery.sqlite3'}"
    store = GalleryStore(store_url)
    for bad in ("../../evil", "a/b", "lobby\n", "", "x" * 129, "é"):
        with pytest.raises(ValueError, match="not a gallery name"):
            store.create_gallery(bad)
        with pytest.raises(ValueError, match="not a gallery name"):
            IndexFile(tmp_path, "student").path(bad)
    assert [g.name for g in store.list_galleries()] == ["default"]
    store.close()
    first = Gallery(GalleryStore(store_url), 8, "m:1", FaceIndex(8, "flat"), persist_dir=tmp_path)
    first.load()
    first.enroll("ann", [NewFace("a", _unit(1))])
    first.close()
    meta = tmp_path / "index-student.json"
    written = json.loads(meta.read_text())
    written["galleries"]["../outside"] = written["galleries"]["default"]
    meta.write_text(json.dumps(written))
    second = Gallery(GalleryStore(store_url), 8, "m:1", FaceIndex(8, "flat"), persist_dir=tmp_path)
    second.load()  # the file is not used: built from the store
    assert len(second) == 1 and second.search(_unit(1), 1)[0].subject_id == "ann"
    assert "../outside" not in json.loads(meta.read_text())["galleries"]
    second.close()
