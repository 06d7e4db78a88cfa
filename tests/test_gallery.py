"""The store and the FAISS index without HTTP: writes, deletes, index kinds, version checks."""

from __future__ import annotations

import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from service.bench import synthetic_embeddings
from service.gallery.gallery import Gallery, GalleryVersionMismatch, IndexFile
from service.gallery.index import FaceIndex
from service.gallery.schema import head_revision
from service.gallery.store import GalleryStore, NewFace


def _unit(seed: int, dim: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_index_add_search_remove(kind: str) -> None:
    vectors = synthetic_embeddings(400, 16)
    index = FaceIndex(16, kind)
    index.add(np.arange(400), vectors)
    assert len(index) == 400 and index.active_kind == kind
    scores, ids = index.search(vectors[7], 3)
    assert ids[0] == 7 and scores[0] == pytest.approx(1.0, abs=1e-5) and len(ids) == 3
    index.remove([7])
    assert len(index) == 399
    assert 7 not in index.search(vectors[7], 10)[1]
    ids, stored = index.contents()  # read back from FAISS: the index keeps no second copy
    order = np.argsort(ids)
    assert np.array_equal(ids[order], np.delete(np.arange(400), 7))
    assert np.allclose(stored[order], np.delete(vectors, 7, axis=0))


def test_auto_switches_to_hnsw_at_threshold() -> None:
    index = FaceIndex(8, "auto", hnsw_threshold=50)
    index.add(np.arange(49), synthetic_embeddings(49, 8))
    assert index.active_kind == "flat"
    index.add(np.arange(49, 60), synthetic_embeddings(11, 8, seed=2))
    assert index.active_kind == "hnsw" and len(index) == 60


def test_hnsw_skips_the_deleted_inside_faiss_and_compacts_aside() -> None:
    """Deleted faces are skipped by an ID selector during the search (a full k of live faces, no
    over-fetch); compaction builds the new graph outside the lock, and writes made meanwhile survive."""
    vectors = synthetic_embeddings(100, 8)
    index = FaceIndex(8, "hnsw")
    index.add(np.arange(100), vectors)
    index.remove(list(range(30)))
    found = index.search(vectors[3], 20)[1]
    assert len(found) == 20 and all(i >= 30 for i in found) and index.wants_compaction()
    extra = synthetic_embeddings(2, 8, seed=7)
    build = index._build

    def build_while_writes_arrive(ids: np.ndarray, vecs: np.ndarray) -> object:
        built = build(ids, vecs)
        index.add(np.array([500, 501]), extra)  # an enrolment and a delete during the build:
        index.remove([40])  # the index (and its lock) stayed usable
        assert index.search(extra[0], 1)[1][0] == 500
        return built

    index._build = build_while_writes_arrive  # type: ignore[method-assign]
    assert index.compact()
    assert len(index) == 71 and index.dead == 1 and not index.wants_compaction()
    assert index.search(extra[1], 1)[1][0] == 501 and 40 not in index.search(vectors[40], 10)[1]
    assert set(index.ids().tolist()) == set(range(30, 100)) | {500, 501}


def test_store_transactions_and_idempotence(store_url: str) -> None:
    store = GalleryStore(store_url)
    first = store.add_faces("alice", [NewFace("h1", _unit(1)), NewFace("h2", _unit(2))], "m:1")
    again = store.add_faces("alice", [NewFace("h1", _unit(1))], "m:1")
    assert [r.created for r in first] == [True, True] and not again[0].created
    assert again[0].face_id == first[0].face_id
    with pytest.raises(Exception):  # noqa: B017 - an embedding that is not an array of numbers
        store.add_faces("bob", [NewFace("h3", _unit(3)), NewFace("h4", object())], "m:1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        store.add_faces("bob", [NewFace("h3", _unit(3)), NewFace("h5", _unit(4) * np.nan)], "m:1")
    assert store.get_subject("bob") is None  # nothing half-written
    assert [c.op for c in store.changes_since(0)] == ["add", "add"]  # nor logged
    store.close()
    reopened = GalleryStore(store_url)
    ids, subjects, vectors = reopened.embeddings()
    assert subjects == ["alice", "alice"] and np.allclose(vectors[0], _unit(1))
    assert reopened.delete_subject("alice") == [int(i) for i in ids]
    assert reopened.delete_subject("alice") is None
    assert [(c.op, c.face_id) for c in reopened.changes_since(2)] == [("remove", int(i)) for i in ids]
    reopened.close()


def test_gallery_search_groups_faces_by_subject(store_url: str) -> None:
    gallery = Gallery(GalleryStore(store_url), 8, "m:1", FaceIndex(8, "flat"))
    gallery.load()
    gallery.enroll("alice", [NewFace("a1", _unit(1)), NewFace("a2", _unit(1) * 0.9 + _unit(5) * 0.1)])
    gallery.enroll("bob", [NewFace("b1", _unit(2))])
    matches = gallery.search(_unit(1), 5)
    assert [m.subject_id for m in matches] == ["alice", "bob"]
    best, mean, count = gallery.subject_scores("alice", _unit(1)) or (0, 0, 0)
    assert count == 2 and best == pytest.approx(1.0, abs=1e-5) and mean < best
    gallery.close()


def test_gallery_refuses_other_model_version(store_url: str) -> None:
    store = GalleryStore(store_url)
    store.add_faces("alice", [NewFace("h", _unit(1))], "old:1")
    with pytest.raises(GalleryVersionMismatch, match="reembed"):
        Gallery(store, 8, "new:2").load()
    store.close()


def test_bulk_import(store_url: str) -> None:
    store = GalleryStore(store_url)
    store.import_faces([(f"s{i // 2}", f"h{i}", _unit(i)) for i in range(10)], "m:1")
    rows, total = store.list_subjects(0, 100)
    assert total == 5 and all(count == 2 for _, count, _ in rows)
    assert [c.op for c in store.changes_since(0)] == ["reload"]
    store.close()


def test_second_process_follows_the_change_log(store_url: str) -> None:
    """Two galleries on one database (as two replicas): each sees the other's writes after sync()."""
    writer = Gallery(GalleryStore(store_url), 8, "m:1", FaceIndex(8, "flat"))
    reader = Gallery(GalleryStore(store_url), 8, "m:1", FaceIndex(8, "flat"))
    writer.load()
    reader.load()
    writer.enroll("alice", [NewFace("a1", _unit(1)), NewFace("a2", _unit(2))])
    writer.enroll("bob", [NewFace("b1", _unit(3))])
    assert reader.search(_unit(3), 1) == []
    assert reader.sync() == 3 and reader.sync() == 0
    assert reader.search(_unit(3), 1)[0].subject_id == "bob" and len(reader) == 3
    bob_face = writer.get_subject("bob").faces[0].face_id  # type: ignore[union-attr]
    writer.delete_subject("alice")
    reader.enroll("carol", [NewFace("c1", _unit(4))])
    assert writer.sync() == 1  # carol's add: its own writes were applied, in log order, as it made them
    assert reader.sync() == 0  # its enrolment applied the log up to its own entry, alice's removes included
    for gallery in (writer, reader):
        assert len(gallery) == 2 and {m.subject_id for m in gallery.search(_unit(1), 5)} == {"bob", "carol"}
    writer.store.import_faces([("dave", "d1", _unit(5))], "m:1")  # a bulk write: replicas reload
    assert reader.sync() == 1 and reader.search(_unit(5), 1)[0].subject_id == "dave" and len(reader) == 3
    assert reader.search(_unit(3), 1)[0].face_id == bob_face
    writer.close()
    reader.close()


def test_concurrent_writers_lose_nothing(store_url: str) -> None:
    """Writers in several threads (each with its own store, as separate processes would be)."""
    follower = Gallery(GalleryStore(store_url), 8, "m:1", FaceIndex(8, "flat"))
    follower.load()
    stores = [GalleryStore(store_url) for _ in range(4)]

    def write(worker: int) -> None:
        for n in range(15):
            stores[worker].add_faces(f"w{worker}-{n}", [NewFace("h", _unit(100 * worker + n))], "m:1")
            if n % 3 == 0:
                follower.sync()  # syncs interleaved with commits must not skip any change

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(4)))
    follower.sync()
    assert len(follower) == 60
    assert [c.seq for c in stores[0].changes_since(0)] == list(range(1, 61))
    for store in stores:
        store.close()
    follower.close()


def test_schema_is_migrated_and_legacy_galleries_are_adopted(tmp_path: Path) -> None:
    legacy = tmp_path / "gallery.sqlite3"
    with sqlite3.connect(legacy) as conn:  # the schema galleries had before migrations existed
        conn.executescript(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "CREATE TABLE subjects (subject_id TEXT PRIMARY KEY, created_at REAL NOT NULL);"
            "CREATE TABLE faces (face_id INTEGER PRIMARY KEY AUTOINCREMENT, subject_id TEXT NOT NULL"
            " REFERENCES subjects(subject_id) ON DELETE CASCADE, content_hash TEXT NOT NULL,"
            " model_version TEXT NOT NULL, embedding BLOB NOT NULL, chip BLOB, created_at REAL NOT NULL,"
            " UNIQUE (subject_id, content_hash));"
        )
        conn.execute("INSERT INTO subjects VALUES ('old', 1.0)")
        conn.execute("INSERT INTO faces VALUES (7, 'old', 'h', 'm:1', ?, NULL, 1.0)", (_unit(9).tobytes(),))
    store = GalleryStore.sqlite(tmp_path)
    assert store.revision == head_revision() == "0006"
    gallery = Gallery(store, 8, "m:1", FaceIndex(8, "flat"))
    gallery.load()
    assert gallery.search(_unit(9), 1)[0].face_id == 7 and gallery.seq == store.last_seq() == 2  # 0002, 0005: reload
    assert store.add_faces("new", [NewFace("n", _unit(1))], "m:1")[0].face_id == 8
    store.close()


def test_store_rejects_other_databases() -> None:
    with pytest.raises(ValueError, match="SQLite or PostgreSQL"):
        GalleryStore("mysql://user@localhost/db")


def test_a_face_deleted_between_its_commit_and_indexing_never_comes_back(store_url: str) -> None:
    """The interleaving that once resurrected faces: enrol commits, a delete and a change-log sync run
    before the enrolling writer touches the index. The index follows the log, so it stays deleted."""
    gallery = Gallery(GalleryStore(store_url), 8, "m:1")
    other = Gallery(GalleryStore(store_url), 8, "m:1")  # a second worker / replica on the same store
    commit = gallery.store.add_faces

    def add_then_interleave(subject_id: str, faces: list[NewFace], *versions: str | None) -> list:  # type: ignore[type-arg]
        records = commit(subject_id, faces, *versions)
        other.delete_subject(subject_id)  # another process deletes the subject ...
        gallery.sync()  # ... and this process's follower applies the log
        return records

    gallery.store.add_faces = add_then_interleave  # type: ignore[method-assign]
    gallery.enroll("eve", [NewFace("e1", _unit(5))])
    assert gallery.store.get_subject("eve") is None
    assert len(gallery) == 0 and gallery.search(_unit(5), 3) == []
    other.sync()
    assert len(other) == 0


HAMMER_FACES = int(os.environ.get("LRFACE_HAMMER_FACES", "240"))


def test_concurrent_enrol_and_delete_never_leave_a_deleted_subject_searchable(store_url: str) -> None:
    """Four threads enrol faces of one subject and delete the subject or one of its faces, while two
    processes' change followers sync every millisecond; afterwards no deleted face is searchable in
    either process. ``LRFACE_HAMMER_FACES`` sets the number of enrolments (``make reliability``)."""
    gallery = Gallery(GalleryStore(store_url), 8, "m:1")
    follower = Gallery(GalleryStore(store_url), 8, "m:1")
    from service.gallery.gallery import ChangeFollower

    followers = [ChangeFollower(gallery, 0.001), ChangeFollower(follower, 0.001)]
    for f in followers:
        f.start()
    vectors = [_unit(100 + i) for i in range(HAMMER_FACES)]

    def hammer(worker: int) -> None:
        for i in range(worker, len(vectors), 4):
            gallery.enroll("target", [NewFace(f"t{i}", vectors[i])])
            if i % 3 == 0:
                gallery.delete_subject("target")
            elif i % 3 == 1:
                record = gallery.store.get_subject("target")
                if record and record.faces:
                    gallery.delete_face("target", record.faces[0].face_id)

    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(hammer, range(4)))
        gallery.delete_subject("target")
    finally:
        for f in followers:
            f.stop()
    for g in (gallery, follower):
        g.sync()
        assert len(g) == 0 and g.store.get_subject("target") is None
        assert all(not g.search(v, 5) for v in vectors), "a deleted face is still searchable"
    deleted = sum(1 for c in gallery.store.changes_since(0, limit=10**6) if c.op == "remove")
    print(f"{store_url.split(':')[0]}: {len(vectors)} enrolments, {deleted} faces deleted concurrently, 0 resurrected")


def test_a_second_space_follows_the_same_enrolments_and_deletions(store_url: str) -> None:
    """The teacher's embeddings (large faces are matched there) are written by the same enrolment and
    kept in step by the same change log; faces enrolled without one are absent from its index."""
    store = GalleryStore(store_url)
    teacher = Gallery(store, 4, "t:1", FaceIndex(4, "flat"), space="teacher")
    gallery = Gallery(store, 8, "m:1", FaceIndex(8, "flat"), teacher=teacher)
    gallery.load()
    t_vec = np.array([0.0, 1.0, 0.0, 0.0], np.float32)
    gallery.enroll("ann", [NewFace("a", _unit(1), teacher_embedding=t_vec, hr_chip_png=b"png")])
    store.add_faces("old", [NewFace("o", _unit(2))], "m:1")  # enrolled before the teacher served
    gallery.sync()
    assert len(gallery) == 2 and len(teacher) == 1
    assert gallery.in_space("teacher").search(t_vec, 3)[0].subject_id == "ann"
    assert store.model_versions("teacher") == {"t:1"} and store.chips()[0][2] == b"png"
    other = Gallery(GalleryStore(store_url), 8, "m:1", teacher=Gallery(store, 4, "t:2", space="teacher"))
    with pytest.raises(GalleryVersionMismatch, match="teacher embeddings of model"):
        other.check_versions()
    gallery.delete_subject("ann")
    assert len(teacher) == 0 and gallery.in_space("teacher").search(t_vec, 3) == []
    with pytest.raises(ValueError, match="no teacher"):
        Gallery(store, 8, "m:1").in_space("teacher")


def test_one_node_index_is_persisted_and_a_restart_replays_only_newer_changes(tmp_path: Path) -> None:
    """The index is kept beside the SQLite gallery with the change-log position it reflects: a restart
    loads it (no build from the store) and replays what other writers committed since; a file that does
    not fit (corrupt, another model) is rebuilt from the store, never used."""
    store_url = f"sqlite:///{tmp_path / 'gallery.sqlite3'}"
    v = synthetic_embeddings(6, 8)
    first = Gallery(GalleryStore(store_url), 8, "m:1", FaceIndex(8, "hnsw"), persist_dir=tmp_path)
    first.load()
    for i in range(4):
        first.enroll(f"s{i}", [NewFace(f"h{i}", v[i])])
    first.delete_subject("s0")  # a tombstone inside the saved graph
    first.close()
    assert (tmp_path / "index-student.faiss").exists()
    writer = GalleryStore(store_url)  # after the save: one more face and one delete
    writer.add_faces("s4", [NewFace("h4", v[4])], "m:1")
    writer.delete_subject("s1")

    def reopen() -> Gallery:
        gallery = Gallery(GalleryStore(store_url), 8, "m:1", FaceIndex(8, "hnsw"), persist_dir=tmp_path)
        gallery.store.snapshot = lambda *_: pytest.fail("built from the store")  # type: ignore[method-assign]
        return gallery

    second = reopen()
    second.load()
    assert {m.subject_id for m in second.search(v[0], 10)} == {"s2", "s3", "s4"} and len(second) == 3
    assert second.seq == writer.last_seq()
    second.close()
    (tmp_path / "index-student.faiss").write_bytes(b"not an index")  # corrupt: rebuilt, not trusted
    third = Gallery(GalleryStore(store_url), 8, "m:1", FaceIndex(8, "hnsw"), persist_dir=tmp_path)
    third.load()
    assert {m.subject_id for m in third.search(v[0], 10)} == {"s2", "s3", "s4"}
    third.close()  # writes a good file again
    with pytest.raises(ValueError, match="the service runs m:2"):  # another model's index is never used
        IndexFile(tmp_path, "student").read(FaceIndex(8), "m:2", 8)
    again = reopen()  # the file close() wrote is used again (the store is not read to build)
    again.load()
    assert len(again) == 3
    again.close()
    writer.close()


def test_the_change_log_is_pruned_and_a_reader_behind_it_reloads(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'gallery.sqlite3'}"
    writer = Gallery(GalleryStore(store_url), 8, "m:1", FaceIndex(8, "flat"))
    reader = Gallery(GalleryStore(store_url), 8, "m:1", FaceIndex(8, "flat"))
    writer.load()
    reader.load()
    for i in range(5):
        writer.enroll(f"s{i}", [NewFace(f"h{i}", _unit(i))])
    assert writer.store.prune_changes(4, older_than=0) == 4  # the reader has not read them
    assert writer.store.pruned_through() == 4 and [c.seq for c in writer.store.changes_since(0)] == [5]
    assert reader.sync() >= 1 and len(reader) == 5 and reader.seq == 5  # behind the pruned log: reloaded
    assert reader.search(_unit(2), 1)[0].subject_id == "s2"
    writer.close()
    reader.close()


def test_a_reload_builds_aside_while_searches_go_on(tmp_path: Path) -> None:
    """A rebuild (start-up, or a bulk import's 'reload') builds the new index outside the search lock
    and swaps it in: searches answer from the old index meanwhile."""
    import threading

    gallery = Gallery(GalleryStore(f"sqlite:///{tmp_path / 'g.sqlite3'}"), 8, "m:1", FaceIndex(8, "flat"))
    gallery.load()
    gallery.enroll("alice", [NewFace("a", _unit(1))])
    building, release = threading.Event(), threading.Event()
    original = FaceIndex.rebuild

    def slow_rebuild(self: FaceIndex, ids: np.ndarray, vectors: np.ndarray) -> None:
        building.set()
        release.wait(30)
        original(self, ids, vectors)

    gallery.store.import_faces([("bob", "b", _unit(2))], "m:1")  # logs a 'reload'
    FaceIndex.rebuild = slow_rebuild  # type: ignore[method-assign]
    try:
        syncing = threading.Thread(target=gallery.sync)
        syncing.start()
        assert building.wait(30)
        assert gallery.search(_unit(1), 1)[0].subject_id == "alice"  # not blocked by the build
        release.set()
        syncing.join(30)
    finally:
        FaceIndex.rebuild = original  # type: ignore[method-assign]
        release.set()
    assert gallery.search(_unit(2), 1)[0].subject_id == "bob" and len(gallery) == 2
    gallery.close()


def test_benchmark_generator_reproduces_the_measured_similarities() -> None:
    """`lrface bench gallery` draws vectors whose same- and different-person cosine match what was
    measured on the student's LFW embeddings (here: given numbers), so its recall is measured on a
    gallery as hard as the real one."""
    from service.gallery_bench import EmbeddingFit

    fit = EmbeddingFit(same_mean=0.48, same_std=0.19, diff_mean=0.01, diff_std=0.2, images=0, people=0).solve(64)
    vectors, subjects = fit.draw(2000, 64, seed=3)
    sims = vectors @ vectors.T
    upper = np.triu(np.ones_like(sims, dtype=bool), 1)
    same = (subjects[:, None] == subjects[None, :]) & upper
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert sims[same].mean() == pytest.approx(0.48, abs=0.03)
    assert sims[~same & upper].mean() == pytest.approx(0.01, abs=0.03)
    assert sims[~same & upper].std() == pytest.approx(0.2, abs=0.04)


def test_gallery_list_command_shows_each_gallery_with_its_counts(tmp_path: Path) -> None:
    """`lrface gallery list`: the store's galleries, their subjects and faces, without loading a model."""
    import subprocess
    import sys

    store = GalleryStore.sqlite(tmp_path)
    store.create_gallery("lobby")
    store.add_faces("alice", [NewFace("h1", _unit(1)), NewFace("h2", _unit(2))], "m:1")
    store.add_faces("bob", [NewFace("h3", _unit(3))], "m:1", gallery="lobby")
    store.close()
    env = {**os.environ, "LRFACE_GALLERY_DIR": str(tmp_path), "LRFACE_DATABASE_URL": ""}
    listed = subprocess.run([sys.executable, "-m", "lrface_cli", "gallery", "list"], capture_output=True, text=True,
                            env=env, timeout=120)  # fmt: skip
    assert listed.returncode == 0, listed.stderr[-500:]
    rows = {line.split()[0]: line.split()[1:3] for line in listed.stdout.splitlines()[2:]}
    assert rows == {"default": ["1", "2"], "lobby": ["1", "1"]}
    assert "2 galleries" in listed.stdout.splitlines()[0]
