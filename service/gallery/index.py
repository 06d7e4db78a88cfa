"""The FAISS index over face embeddings (inner product of unit vectors = cosine similarity).

Exact search (``IndexFlatIP``) for small galleries; HNSW above ``hnsw_threshold`` faces when
``kind='auto'``. HNSW cannot delete, so deletions there are tombstoned and skipped during the search by
an ID selector (no over-fetching); once a fifth of the graph is dead, :meth:`FaceIndex.compact` rebuilds
it outside the lock (searches and writes go on against the old graph) and swaps the new one in.
:meth:`FaceIndex.save` / :meth:`FaceIndex.load` persist it (the one-node gallery keeps it beside SQLite).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import faiss
import numpy as np

log = logging.getLogger("lrface.index")

COMPACT_FRACTION = 0.2  # dead share of an HNSW graph above which it is rebuilt


def gpu_count() -> int:
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


class FaceIndex:
    def __init__(
        self,
        dim: int,
        kind: str = "auto",
        hnsw_threshold: int = 50_000,
        hnsw_m: int = 32,
        ef_search: int = 256,
        device: str = "auto",
        search_threads: int = 1,
    ) -> None:
        self.dim, self.kind, self.hnsw_threshold = dim, kind, hnsw_threshold
        self.hnsw_m, self.ef_search = hnsw_m, ef_search
        self.device_setting = device
        self.use_gpu = device in ("auto", "cuda") and gpu_count() > 0
        if device == "cuda" and not self.use_gpu:
            log.warning("LRFACE_FAISS_DEVICE=cuda but FAISS sees no GPU; searching on the CPU")
        # One query at a time: OpenMP's thread wake-up costs more than it saves (/identify p50 8 ms -> 2.5 ms at 10k).
        self.search_threads = search_threads
        self._lock = threading.RLock()
        self._dead: set[int] = set()
        self._params: Any = None  # search parameters whose ID selector skips the dead
        self._journal: list[tuple[str, Any, Any]] | None = None  # writes made while compacting
        self._index: Any = None
        self._gpu_index: Any = None
        self.active_kind = "flat"
        self.rebuild(np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32))

    def empty_like(self) -> FaceIndex:
        """A new, empty index with the same settings (built aside, then swapped in by the gallery)."""
        return FaceIndex(self.dim, self.kind, self.hnsw_threshold, self.hnsw_m, self.ef_search,
                         self.device_setting, self.search_threads)  # fmt: skip

    @property
    def device(self) -> str:
        return "cuda" if self.use_gpu and self.active_kind == "flat" else "cpu"

    def _want_hnsw(self, count: int) -> bool:
        return self.kind == "hnsw" or (self.kind == "auto" and count >= self.hnsw_threshold)

    def _build(self, ids: np.ndarray, vectors: np.ndarray) -> tuple[str, Any]:
        """A new FAISS index over ``ids``/``vectors``: (kind, index). Touches no state of ``self``."""
        faiss.omp_set_num_threads(os.cpu_count() or 1)  # building is parallel work
        if self._want_hnsw(len(ids)):
            base = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            base.hnsw.efSearch = self.ef_search
            base.hnsw.efConstruction = 80
            kind, index = "hnsw", faiss.IndexIDMap2(base)
        else:
            kind, index = "flat", faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        if len(ids):
            index.add_with_ids(vectors, ids)
        return kind, index

    def _install(self, kind: str, index: Any, dead: set[int]) -> None:
        """Make ``index`` the one searched (under the lock)."""
        self.active_kind, self._index, self._dead = kind, index, dead
        self._gpu_index = self._to_gpu(index) if self.device == "cuda" else None
        self._update_selector()

    def rebuild(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Build from scratch, under the lock (a gallery's load builds a fresh index aside instead)."""
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        with self._lock:
            self._install(*self._build(ids, vectors), set())

    def _to_gpu(self, index: Any) -> Any:
        resources = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(resources, 0, index)

    def _update_selector(self) -> None:
        if not self._dead:
            self._params = None
            return
        dead = faiss.IDSelectorBatch(np.fromiter(self._dead, dtype=np.int64, count=len(self._dead)))
        hnsw = self.active_kind == "hnsw"
        params = faiss.SearchParametersHNSW(efSearch=self.ef_search) if hnsw else faiss.SearchParameters()  # type: ignore[attr-defined]
        params.sel = faiss.IDSelectorNot(dead)
        self._params = (params, dead)  # the wrapped selector must outlive the parameters

    def __len__(self) -> int:
        with self._lock:
            return int(self._index.ntotal) - len(self._dead)

    @property
    def dead(self) -> int:
        """Tombstoned faces still in the HNSW graph (skipped by searches)."""
        with self._lock:
            return len(self._dead)

    def ids(self) -> np.ndarray:
        """Every face id in the index, the tombstoned included."""
        with self._lock:
            return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def contents(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, vectors)`` of every live face, read back from the index (no second copy is kept)."""
        with self._lock:
            count = int(self._index.ntotal)
            if not count:
                return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim), dtype=np.float32)
            ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
            vectors = self._index.index.reconstruct_n(0, count)
            if self._dead:
                keep = ~np.isin(ids, np.fromiter(self._dead, dtype=np.int64))
                ids, vectors = ids[keep], vectors[keep]
            return ids, vectors

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if not len(ids):
            return
        with self._lock:
            if self._journal is not None:
                self._journal.append(("add", ids, vectors))
            if self.active_kind == "flat" and self._want_hnsw(len(self) + len(ids)) and self._journal is None:
                old_ids, old_vectors = self.contents()
                self.rebuild(np.concatenate([old_ids, ids]), np.concatenate([old_vectors, vectors]))
                return
            self._index.add_with_ids(vectors, ids)
            if self._gpu_index is not None:
                self._gpu_index = self._to_gpu(self._index)

    def remove(self, ids: list[int]) -> None:
        if not ids:
            return
        with self._lock:
            if self._journal is not None:
                self._journal.append(("remove", list(ids), None))
            if self.active_kind == "flat":
                self._index.remove_ids(np.asarray(ids, dtype=np.int64))
                if self._gpu_index is not None:
                    self._gpu_index = self._to_gpu(self._index)
                return
            self._dead.update(ids)
            self._update_selector()

    def wants_compaction(self) -> bool:
        with self._lock:
            return self._journal is None and len(self._dead) > COMPACT_FRACTION * max(1, self._index.ntotal)

    def compact(self) -> bool:
        """Rebuild without the tombstoned faces. The build runs outside the lock: searches and writes go
        on against the old graph, writes are journalled and replayed onto the new one, which is then
        swapped in. False when there was nothing to do (or another compaction runs)."""
        with self._lock:
            if self._journal is not None or not self._dead:
                return False
            ids, vectors = self.contents()
            self._journal = []
        try:
            kind, fresh = self._build(ids, vectors)
        except BaseException:
            with self._lock:
                self._journal = None
            raise
        with self._lock:
            journal, self._journal = self._journal or [], None
            dead: set[int] = set()
            for op, op_ids, op_vectors in journal:
                if op == "add":
                    fresh.add_with_ids(op_vectors, op_ids)
                elif kind == "flat":
                    fresh.remove_ids(np.asarray(op_ids, dtype=np.int64))
                else:
                    dead.update(op_ids)
            self._install(kind, fresh, dead)
        log.info("index compacted: %d faces, %d writes replayed", len(ids), len(journal))
        return True

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` ``(scores, face_ids)`` of one query, the dead skipped inside FAISS."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        with self._lock:
            faiss.omp_set_num_threads(self.search_threads)  # per calling thread (requests run in a pool)
            k = min(k, max(1, int(self._index.ntotal)))
            if self._gpu_index is not None:  # a flat index: nothing is ever tombstoned there
                scores, ids = self._gpu_index.search(q, k)
            elif self._params is not None:
                scores, ids = self._index.search(q, k, params=self._params[0])
            else:
                scores, ids = self._index.search(q, k)
        scores, ids = scores[0], ids[0]
        valid = ids >= 0
        return scores[valid], ids[valid]

    # -- persistence ----------------------------------------------------------------------------------

    def save(self, path: Path) -> list[int]:
        """Write the index atomically (a crash mid-write leaves the previous file); returns the
        tombstoned ids it holds, which :meth:`load` must be given back."""
        tmp = path.with_name(path.name + ".tmp")
        with self._lock:
            faiss.write_index(self._index, str(tmp))
            dead = sorted(self._dead)
        os.replace(tmp, path)
        return dead

    def load(self, path: Path, dead: list[int] | None = None) -> None:
        """Replace the contents by a file :meth:`save` wrote; raises ValueError when it is no index of
        this dimension (corrupt, truncated, another model)."""
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise ValueError(f"{path}: not a readable FAISS index ({exc})") from exc
        if not isinstance(index, faiss.IndexIDMap2) or index.d != self.dim:
            raise ValueError(f"{path}: not an id-mapped index of dimension {self.dim}")
        inner = faiss.downcast_index(index.index)
        if isinstance(inner, faiss.IndexHNSWFlat):
            inner.hnsw.efSearch = self.ef_search  # not stored in the file
            kind = "hnsw"
        elif isinstance(inner, faiss.IndexFlatIP):
            kind = "flat"
        else:
            raise ValueError(f"{path}: unexpected index type {type(inner).__name__}")
        with self._lock:
            self._install(kind, index, set(dead or ()))
