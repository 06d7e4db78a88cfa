"""The gallery as the API sees it: the store is written first (the source of truth), then the index.

The index follows one order, the store's change log: a write commits (appending to the log in the
same transaction) and then applies the log up to its own entry with :meth:`Gallery.sync`, the same
method that applies what other processes (uvicorn workers, or replicas sharing PostgreSQL) commit.
Faces are added to the index from the store, by id, so a face deleted by a later entry is never
indexed, whatever the interleaving of enrolments, deletions and syncs.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np

from lrface.settings import Settings
from service.gallery.index import FaceIndex
from service.gallery.store import FaceRecord, GalleryStore, NewFace, SubjectRecord, open_store

log = logging.getLogger("lrface.gallery")


class GalleryVersionMismatch(RuntimeError):
    """The stored embeddings come from another model version than the one being served."""


@dataclass
class Match:
    subject_id: str
    score: float
    face_id: int


class Gallery:
    """The student's index over the store, and (where the model card routes large faces to the
    teacher) ``teacher``: a second gallery over the same store in the teacher's embedding space,
    written by the same enrolments and kept in step by the same change log."""

    def __init__(
        self,
        store: GalleryStore,
        dim: int,
        model_version: str,
        index: FaceIndex | None = None,
        space: str = "student",
        teacher: Gallery | None = None,
    ) -> None:
        self.store, self.dim, self.model_version, self.space = store, dim, model_version, space
        self.teacher = teacher
        self.index = index or FaceIndex(dim)
        self.seq = 0  # change-log position the index reflects
        self._subject_of: dict[int, str] = {}
        self._lock = threading.RLock()  # index + id map
        self._sync_lock = threading.Lock()  # one sync (or load) at a time

    def load(self) -> None:
        """Check model versions and build the index from the store (start-up, or `rebuild-index`)."""
        self.check_versions()
        snap = self.store.snapshot(self.space)
        vectors = snap.vectors if len(snap.face_ids) else np.zeros((0, self.dim), np.float32)
        with self._lock:
            self.index.rebuild(snap.face_ids, vectors)
            self._subject_of = dict(zip(snap.face_ids.tolist(), snap.subject_ids, strict=True))
            self.seq = snap.seq
        if self.teacher is not None:
            with self.teacher._sync_lock:  # never beside a sync of the teacher's index
                self.teacher.load()

    def check_versions(self) -> None:
        versions = self.store.model_versions(self.space)
        foreign = versions - {self.model_version}
        if foreign:
            raise GalleryVersionMismatch(
                f"gallery {self.store.describe()} holds {self.space} embeddings of model {sorted(foreign)} but the "
                f"service runs {self.model_version}; run `lrface gallery reembed` (re-embeds from stored face "
                "chips) first"
            )
        if self.teacher is not None:
            self.teacher.check_versions()

    def sync(self) -> int:
        """Apply every change committed since ``seq`` (by any process), in log order; returns how many
        were read. The only way the index changes after :meth:`load`."""
        if self.teacher is not None:
            self.teacher.sync()  # the same log, applied to the teacher's index
        read = 0
        with self._sync_lock:
            while True:
                pending = self.store.changes_since(self.seq)
                if not pending:
                    return read
                read += len(pending)
                if any(c.op == "reload" for c in pending):
                    self.load()
                    continue
                added = [c.face_id for c in pending if c.op == "add" and c.face_id is not None]
                with self._lock:
                    added = [i for i in added if i not in self._subject_of]
                if added:
                    ids, subject_ids, vectors = self.store.faces_by_id(added, self.space)  # deleted ones are absent
                    self._add(ids, subject_ids, vectors)
                self._remove([c.face_id for c in pending if c.op == "remove" and c.face_id is not None])
                self.seq = pending[-1].seq

    def _add(self, ids: np.ndarray, subject_ids: list[str], vectors: np.ndarray) -> None:
        """Index faces not indexed yet (the writer and the change follower may both try)."""
        with self._lock:
            fresh = [k for k, i in enumerate(ids.tolist()) if i not in self._subject_of]
            if fresh:
                self.index.add(ids[fresh], vectors[fresh])
                self._subject_of.update({int(ids[k]): subject_ids[k] for k in fresh})

    def _remove(self, ids: list[int]) -> None:
        with self._lock:
            present = [i for i in ids if i in self._subject_of]
            self.index.remove(present)
            for i in present:
                del self._subject_of[i]

    def enroll(self, subject_id: str, faces: list[NewFace]) -> list[FaceRecord]:
        teacher_version = self.teacher.model_version if self.teacher is not None else None
        records = self.store.add_faces(subject_id, faces, self.model_version, teacher_version)  # committed here
        if any(r.created for r in records):
            self.sync()  # searchable before the enrolment is acknowledged
        return records

    def delete_subject(self, subject_id: str) -> list[int] | None:
        ids = self.store.delete_subject(subject_id)
        if ids:
            self.sync()
        return ids

    def delete_face(self, subject_id: str, face_id: int) -> bool:
        removed = self.store.delete_face(subject_id, face_id)
        if removed:
            self.sync()
        return removed

    def get_subject(self, subject_id: str) -> SubjectRecord | None:
        return self.store.get_subject(subject_id)

    def in_space(self, space: str) -> Gallery:
        """This gallery ('student') or its teacher gallery ('teacher')."""
        if space == self.space:
            return self
        if space == "teacher" and self.teacher is not None:
            return self.teacher
        raise ValueError(f"this gallery has no {space} embeddings")

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
        ids, _, vectors = self.store.embeddings(subject_id, self.space)
        if not len(ids):
            return None
        scores = vectors @ np.asarray(query, dtype=np.float32).reshape(-1)
        return float(scores.max()), float(scores.mean()), len(ids)

    def __len__(self) -> int:
        return len(self.index)

    def close(self) -> None:
        self.store.close()


class ChangeFollower:
    """Background thread that calls ``gallery.sync()`` every ``interval`` seconds."""

    def __init__(self, gallery: Gallery, interval: float) -> None:
        self.gallery, self.interval = gallery, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lrface-gallery-sync", daemon=True)
        self._failing = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.gallery.sync()
            except Exception as exc:  # noqa: BLE001 - a database outage must not kill the follower
                if not self._failing:
                    log.warning("gallery sync failed (retrying every %.1f s): %s", self.interval, exc)
                self._failing = True
            else:
                if self._failing:
                    log.info("gallery sync recovered at change %d", self.gallery.seq)
                self._failing = False


def open_gallery(
    settings: Settings, dim: int, model_version: str, load: bool = True, teacher: tuple[int, str] | None = None
) -> Gallery:
    """Open the store (migrating it), check its model versions, and build the index (and the teacher's,
    given ``teacher=(dim, model id)``) unless ``load=False``."""
    store = open_store(settings.database_url, settings.gallery_dir, settings.db_pool_size, settings.db_max_overflow)

    def index(size: int) -> FaceIndex:
        return FaceIndex(size, settings.index, settings.hnsw_threshold, device=settings.faiss_device)

    teacher_gallery = (
        Gallery(store, teacher[0], teacher[1], index(teacher[0]), space="teacher") if teacher is not None else None
    )
    gallery = Gallery(store, dim, model_version, index(dim), teacher=teacher_gallery)
    try:
        gallery.check_versions()
        if load:
            gallery.load()
    except Exception:
        store.close()
        raise
    return gallery
