"""The store and the FAISS index without HTTP: writes, deletes, index kinds, version checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.bench import synthetic_embeddings
from service.gallery.gallery import Gallery, GalleryVersionMismatch
from service.gallery.index import FaceIndex
from service.gallery.store import NewFace, SQLiteStore


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


def test_auto_switches_to_hnsw_at_threshold() -> None:
    index = FaceIndex(8, "auto", hnsw_threshold=50)
    index.add(np.arange(49), synthetic_embeddings(49, 8))
    assert index.active_kind == "flat"
    index.add(np.arange(49, 60), synthetic_embeddings(11, 8, seed=2))
    assert index.active_kind == "hnsw" and len(index) == 60


def test_hnsw_rebuilds_after_many_deletes() -> None:
    vectors = synthetic_embeddings(100, 8)
    index = FaceIndex(8, "hnsw")
    index.add(np.arange(100), vectors)
    index.remove(list(range(30)))
    assert len(index) == 70 and not index._dead  # rebuilt: tombstones gone
    assert all(i >= 30 for i in index.search(vectors[3], 20)[1])


def test_store_transactions_and_idempotence(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    first = store.add_faces("alice", [NewFace("h1", _unit(1)), NewFace("h2", _unit(2))], "m:1")
    again = store.add_faces("alice", [NewFace("h1", _unit(1))], "m:1")
    assert [r.created for r in first] == [True, True] and not again[0].created
    assert again[0].face_id == first[0].face_id
    with pytest.raises(Exception):  # noqa: B017 - an embedding that is not an array of numbers
        store.add_faces("bob", [NewFace("h3", _unit(3)), NewFace("h4", object())], "m:1")  # type: ignore[arg-type]
    assert store.get_subject("bob") is None  # nothing half-written
    store.close()
    reopened = SQLiteStore(tmp_path)
    ids, subjects, vectors = reopened.embeddings()
    assert subjects == ["alice", "alice"] and np.allclose(vectors[0], _unit(1))
    assert reopened.delete_subject("alice") == [int(i) for i in ids]
    assert reopened.delete_subject("alice") is None


def test_gallery_search_groups_faces_by_subject(tmp_path: Path) -> None:
    gallery = Gallery(SQLiteStore(tmp_path), 8, "m:1", FaceIndex(8, "flat"))
    gallery.load()
    gallery.enroll("alice", [NewFace("a1", _unit(1)), NewFace("a2", _unit(1) * 0.9 + _unit(5) * 0.1)])
    gallery.enroll("bob", [NewFace("b1", _unit(2))])
    matches = gallery.search(_unit(1), 5)
    assert [m.subject_id for m in matches] == ["alice", "bob"]
    best, mean, count = gallery.subject_scores("alice", _unit(1)) or (0, 0, 0)
    assert count == 2 and best == pytest.approx(1.0, abs=1e-5) and mean < best


def test_gallery_refuses_other_model_version(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    store.add_faces("alice", [NewFace("h", _unit(1))], "old:1")
    with pytest.raises(GalleryVersionMismatch, match="reembed"):
        Gallery(store, 8, "new:2").load()


def test_bulk_import(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    store.import_faces([(f"s{i // 2}", f"h{i}", _unit(i)) for i in range(10)], "m:1")
    rows, total = store.list_subjects(0, 100)
    assert total == 5 and all(count == 2 for _, count, _ in rows)
