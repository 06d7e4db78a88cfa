"""The gallery as the API sees it: the store is written first (the source of truth), then the index."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from service.gallery.index import FaceIndex
from service.gallery.store import FaceRecord, NewFace, SQLiteStore, SubjectRecord


class GalleryVersionMismatch(RuntimeError):
    """The stored embeddings come from another model version than the one being served."""


@dataclass
class Match:
    subject_id: str
    score: float
    face_id: int


class Gallery:
    def __init__(self, store: SQLiteStore, dim: int, model_version: str, index: FaceIndex | None = None) -> None:
        self.store, self.dim, self.model_version = store, dim, model_version
        self.index = index or FaceIndex(dim)
        self._subject_of: dict[int, str] = {}
        self._lock = threading.RLock()

    def load(self) -> None:
        """Check model versions and build the index from the store (start-up, or `rebuild-index`)."""
        versions = self.store.model_versions()
        foreign = versions - {self.model_version}
        if foreign:
            raise GalleryVersionMismatch(
                f"gallery {self.store.describe()} holds embeddings of model {sorted(foreign)} but the service runs "
                f"{self.model_version}; run `lrface gallery reembed` (re-embeds from stored face chips) first"
            )
        ids, subjects, vectors = self.store.embeddings()
        with self._lock:
            self.index.rebuild(ids, vectors if len(ids) else np.zeros((0, self.dim), np.float32))
            self._subject_of = dict(zip(ids.tolist(), subjects, strict=True))

    def enroll(self, subject_id: str, faces: list[NewFace]) -> list[FaceRecord]:
        records = self.store.add_faces(subject_id, faces, self.model_version)  # committed here
        new = [(r.face_id, f.embedding) for r, f in zip(records, faces, strict=True) if r.created]
        if new:
            with self._lock:
                self.index.add(np.asarray([i for i, _ in new]), np.stack([v for _, v in new]))
                self._subject_of.update({i: subject_id for i, _ in new})
        return records

    def delete_subject(self, subject_id: str) -> list[int] | None:
        ids = self.store.delete_subject(subject_id)
        if ids:
            with self._lock:
                self.index.remove(ids)
                for i in ids:
                    self._subject_of.pop(i, None)
        return ids

    def delete_face(self, subject_id: str, face_id: int) -> bool:
        removed = self.store.delete_face(subject_id, face_id)
        if removed:
            with self._lock:
                self.index.remove([face_id])
                self._subject_of.pop(face_id, None)
        return removed

    def get_subject(self, subject_id: str) -> SubjectRecord | None:
        return self.store.get_subject(subject_id)

    def search(self, query: np.ndarray, top_k: int) -> list[Match]:
        """Best-scoring subjects (each by its best face), highest first."""
        with self._lock:
            scores, ids = self.index.search(query, max(top_k * 4, top_k + 8))
            subject_of = [self._subject_of.get(int(i)) for i in ids]
        best: dict[str, Match] = {}
        for score, face_id, subject in zip(scores, ids, subject_of, strict=True):
            if subject is not None and subject not in best:
                best[subject] = Match(subject, float(score), int(face_id))
        return sorted(best.values(), key=lambda m: m.score, reverse=True)[:top_k]

    def subject_scores(self, subject_id: str, query: np.ndarray) -> tuple[float, float, int] | None:
        """(best, mean, face count) of ``query`` against every face of one subject."""
        ids, _, vectors = self.store.embeddings(subject_id)
        if not len(ids):
            return None
        scores = vectors @ np.asarray(query, dtype=np.float32).reshape(-1)
        return float(scores.max()), float(scores.mean()), len(ids)

    def __len__(self) -> int:
        return len(self.index)

    def close(self) -> None:
        self.store.close()
