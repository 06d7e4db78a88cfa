"""The FAISS index over face embeddings (inner product of unit vectors = cosine similarity).

Exact search (``IndexFlatIP``) for small galleries; HNSW above ``hnsw_threshold`` faces when
``kind='auto'``. HNSW cannot delete, so deletions there are tombstoned and filtered out, and the
graph is rebuilt once a fifth of it is dead.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import faiss
import numpy as np

log = logging.getLogger("lrface.index")


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
        self.use_gpu = device in ("auto", "cuda") and gpu_count() > 0
        if device == "cuda" and not self.use_gpu:
            log.warning("LRFACE_FAISS_DEVICE=cuda but FAISS sees no GPU; searching on the CPU")
        # One query at a time: OpenMP's thread wake-up costs more than it saves (/identify p50 8 ms -> 2.5 ms at 10k).
        self.search_threads = search_threads
        self._lock = threading.RLock()
        self._dead: set[int] = set()
        self._index: Any = None
        self.active_kind = "flat"
        self.rebuild(np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32))

    @property
    def device(self) -> str:
        return "cuda" if self.use_gpu and self.active_kind == "flat" else "cpu"

    def _want_hnsw(self, count: int) -> bool:
        return self.kind == "hnsw" or (self.kind == "auto" and count >= self.hnsw_threshold)

    def rebuild(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Build from scratch (start-up, or an HNSW with too many tombstones)."""
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        with self._lock:
            faiss.omp_set_num_threads(os.cpu_count() or 1)  # building is parallel work
            if self._want_hnsw(len(ids)):
                base = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
                base.hnsw.efSearch = self.ef_search
                base.hnsw.efConstruction = 80
                self.active_kind = "hnsw"
                index = faiss.IndexIDMap2(base)
            else:
                self.active_kind = "flat"
                index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
            if len(ids):
                index.add_with_ids(vectors, ids)
            self._index = index
            self._dead = set()
            self._gpu_index = self._to_gpu(index) if self.device == "cuda" else None

    def _to_gpu(self, index: Any) -> Any:
        resources = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(resources, 0, index)

    def __len__(self) -> int:
        with self._lock:
            return int(self._index.ntotal) - len(self._dead)

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
            if self.active_kind == "flat" and self._want_hnsw(len(self) + len(ids)):
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
            if self.active_kind == "flat":
                self._index.remove_ids(np.asarray(ids, dtype=np.int64))
                if self._gpu_index is not None:
                    self._gpu_index = self._to_gpu(self._index)
                return
            self._dead.update(ids)
            if len(self._dead) > 0.2 * max(1, self._index.ntotal):
                self.rebuild(*self.contents())

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` ``(scores, face_ids)`` of one query; ids of -1 are padding."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        with self._lock:
            extra = len(self._dead)
            index = self._gpu_index if self._gpu_index is not None else self._index
            faiss.omp_set_num_threads(self.search_threads)  # per calling thread (requests run in a pool)
            scores, ids = index.search(q, min(k + extra, max(1, int(self._index.ntotal))))
        scores, ids = scores[0], ids[0]
        if extra:
            alive = np.asarray([i not in self._dead for i in ids])
            scores, ids = scores[alive], ids[alive]
        valid = ids >= 0
        return scores[valid][:k], ids[valid][:k]
