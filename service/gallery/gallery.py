"""The gallery as the API sees it: the store is written first (the source of truth), then the index.

The index follows one order, the store's change log: a write commits (appending to the log in the
same transaction) and then applies the log up to its own entry with :meth:`Gallery.sync`, the same
method that applies what other processes (uvicorn workers, or replicas sharing PostgreSQL) commit.
Faces are added to the index from the store, by id, so a face deleted by a later entry is never
indexed, whatever the interleaving of enrolments, deletions and syncs.

Each named gallery has its own FAISS index (its "part"), so a search of one gallery never sees
another's faces and the default gallery is searched exactly as before galleries existed.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lrface.settings import Settings
from service.gallery.index import FaceIndex
from service.gallery.store import (
    FaceRecord,
    GalleryRecord,
    GalleryStore,
    NewFace,
    SubjectRecord,
    open_store,
)
from service.gallery.tables import DEFAULT_GALLERY, is_gallery_name

log = logging.getLogger("lrface.gallery")


CHANGE_RETENTION_S = 3600.0  # change-log entries older than this, and behind the persisted index, are pruned


class IndexFile:
    """``index-<space>.faiss`` (the default gallery; ``index-<space>.<gallery>.faiss`` for each other
    one) and beside them ``index-<space>.json``: the model, dimension and change-log position the
    indexes reflect, and per gallery the ids it holds tombstoned and the identity (inode, size, mtime)
    of its file, so files that do not belong together are never used."""

    def __init__(self, directory: Path, space: str) -> None:
        self.directory, self.space = directory, space
        self.index = directory / f"index-{space}.faiss"
        self.meta = directory / f"index-{space}.json"

    def path(self, gallery: str) -> Path:
        if not is_gallery_name(gallery):  # a name from the store or the .json, never a path out of the folder
            raise ValueError(f"{gallery!r} is not a gallery name")
        return self.index if gallery == DEFAULT_GALLERY else self.directory / f"index-{self.space}.{gallery}.faiss"

    def exists(self) -> bool:
        return self.index.exists() or self.meta.exists()

    @staticmethod
    def _identity(path: Path) -> list[int]:
        stat = path.stat()
        return [stat.st_ino, stat.st_size, stat.st_mtime_ns]

    def write(self, parts: dict[str, FaceIndex], model_version: str, dim: int, seq: int) -> None:
        written = {}
        for gallery, index in parts.items():
            path = self.path(gallery)
            dead = index.save(path)
            written[gallery] = {"count": len(index), "dead": dead, "file": self._identity(path)}
        meta = {"model_version": model_version, "dim": dim, "seq": seq, "galleries": written}
        tmp = self.meta.with_name(self.meta.name + ".tmp")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self.meta)
        keep = {self.path(g) for g in parts}
        for stale in self.directory.glob(f"index-{self.space}.*.faiss"):  # galleries deleted since
            if stale not in keep:
                stale.unlink(missing_ok=True)

    def read(self, template: FaceIndex, model_version: str, dim: int) -> tuple[int, dict[str, FaceIndex], set[int]]:
        """Load every gallery's index (each made like ``template``); returns (seq, indexes, tombstoned
        ids). ValueError (or KeyError, for a file of an older layout) when they do not fit."""
        meta = json.loads(self.meta.read_text())
        if meta["model_version"] != model_version or meta["dim"] != dim:
            raise ValueError(f"it holds {meta['model_version']} ({meta['dim']}-d), the service runs {model_version}")
        parts: dict[str, FaceIndex] = {}
        dead: set[int] = set()
        for gallery, entry in meta["galleries"].items():
            path = self.path(gallery)
            if entry["file"] != self._identity(path):
                raise ValueError(f"{path} is not the file {self.meta} describes")
            part = template.empty_like()
            part.load(path, sorted(int(i) for i in entry["dead"]))
            if len(part) != entry["count"]:
                raise ValueError(f"{path}: {len(part)} faces where {entry['count']} were written")
            parts[gallery] = part
            dead.update(int(i) for i in entry["dead"])
        return int(meta["seq"]), parts, dead


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
        persist_dir: Path | None = None,
    ) -> None:
        self.store, self.dim, self.model_version, self.space = store, dim, model_version, space
        self.teacher = teacher
        # One index per gallery; the default gallery's is ``index``, and the others are made like it.
        self._parts: dict[str, FaceIndex] = {DEFAULT_GALLERY: index if index is not None else FaceIndex(dim)}
        self.seq = 0  # change-log position the index reflects
        # Where the index is kept between runs (the one-node SQLite gallery): index-<space>.faiss + .json.
        self.persist = IndexFile(persist_dir, space) if persist_dir is not None else None
        self._subject_of: dict[int, str] = {}
        self._gallery_of: dict[int, str] = {}  # faces of galleries other than the default (absent: default)
        self._lock = threading.RLock()  # index + id map: held only to search, apply a change or swap
        self._sync_lock = threading.RLock()  # one sync (or load) at a time
        self._compacting = False

    @property
    def index(self) -> FaceIndex:
        """The default gallery's index (what /readyz describes; every gallery's is of its kind)."""
        return self._parts[DEFAULT_GALLERY]

    def gallery_of_face(self, face_id: int) -> str:
        return self._gallery_of.get(face_id, DEFAULT_GALLERY)

    def load(self, from_file: bool = True) -> None:
        """Check model versions and make the index: from its file when one is kept and still valid
        (then only newer changes are replayed), else built from the store. Either way it is made aside
        and swapped in, so searches go on against the old index meanwhile."""
        self.check_versions()
        with self._sync_lock:
            if not (from_file and self.persist is not None and self._load_file(self.persist)):
                self._build_from_store()
        if self.teacher is not None:
            self.teacher.load(from_file)

    def _swap(self, parts: dict[str, FaceIndex], where: dict[int, tuple[str, str]], seq: int) -> None:
        """Install ``parts`` (one index per gallery) and ``where`` (``{face_id: (gallery, subject)}``)."""
        parts.setdefault(DEFAULT_GALLERY, self.index.empty_like())
        subject_of = {i: s for i, (_, s) in where.items()}
        gallery_of = {i: g for i, (g, _) in where.items() if g != DEFAULT_GALLERY}
        with self._lock:
            self._parts, self._subject_of, self._gallery_of, self.seq = parts, subject_of, gallery_of, seq

    def _build_from_store(self) -> None:
        snap = self.store.snapshot(self.space)
        parts: dict[str, FaceIndex] = {}
        for gallery, rows in _rows_by_gallery(snap.galleries).items():
            part = self.index.empty_like()
            if len(rows) == len(snap.face_ids):  # one gallery holds every face: no copy of the vectors
                ids, vectors = snap.face_ids, snap.vectors
            else:
                ids, vectors = snap.face_ids[rows], snap.vectors[rows]
            part.rebuild(ids, vectors.reshape(-1, self.dim))  # minutes for an HNSW at 1M: outside the search lock
            parts[gallery] = part
        where = {
            int(i): (g, s) for i, g, s in zip(snap.face_ids.tolist(), snap.galleries, snap.subject_ids, strict=True)
        }
        self._swap(parts, where, snap.seq)
        self.save()

    def _load_file(self, file: IndexFile) -> bool:
        """The persisted indexes, checked against the store; False (and a log line) when they cannot be used."""
        try:
            seq, parts, dead = file.read(self.index, self.model_version, self.dim)
            if seq > self.store.last_seq() or seq < self.store.pruned_through():
                raise ValueError(f"its change-log position {seq} is not in the store's log")
        except (ValueError, OSError, KeyError) as exc:
            if file.exists():
                log.warning("%s index file not used (%s): building from the store", self.space, exc)
            return False
        present = self.store.subjects_by_face(self.space)
        where: dict[int, tuple[str, str]] = {}
        for gallery, part in parts.items():
            ids = [int(i) for i in part.ids()]
            if any(i in present and present[i][0] != gallery for i in ids):
                log.warning("%s index file puts faces in the wrong gallery: building from the store", self.space)
                return False
            part.remove([i for i in ids if i not in present and i not in dead])  # deleted after the file was written
            where.update((i, present[i]) for i in ids if i in present)
        self._swap(parts, where, seq)
        replayed = self._apply_changes()
        seq_now, count = self.store.count_faces(self.space)
        if seq_now == self.seq and count != len(self):
            log.warning("%s index file disagrees with the store (%d faces, store %d): rebuilding",
                        self.space, len(self), count)  # fmt: skip
            return False
        log.info("%s index loaded from %s at change %d, %d newer changes replayed", self.space, file.index,
                 seq, replayed)  # fmt: skip
        return True

    def save(self) -> None:
        """Persist the index with the change-log position it reflects (one-node galleries), then prune
        the log entries every reader has long passed."""
        if self.persist is None:
            return
        with self._lock:
            self.persist.write(self._parts, self.model_version, self.dim, self.seq)
        self.store.prune_changes(self.seq, CHANGE_RETENTION_S)

    def check_versions(self) -> None:
        versions = self.store.model_versions(self.space)
        foreign = versions - {self.model_version}
        if foreign:
            same_student = {v.split("+", 1)[0] for v in foreign} == {self.model_version.split("+", 1)[0]}
            same_models = {v.split("+views:", 1)[0] for v in foreign} == {self.model_version.split("+views:", 1)[0]}
            hint = (
                " (the same models: the card's distant views, or the detected fusion that makes fused views, "
                "changed since the gallery was filled; the '+views:' suffix says how each was made)"
                if same_models
                else " (the same student: the gallery was filled with the teacher's centred embeddings and this "
                "service runs without the teacher, or the other way round; a '+teacher' suffix says the teacher "
                "filled it. Serve with the teacher as the gallery was filled — LRFACE_USE_TEACHER, dlib, "
                "LRFACE_TEACHER_MODEL — or re-embed with the settings you will serve with)"
                if same_student
                else ""
            )
            raise GalleryVersionMismatch(
                f"gallery {self.store.describe()} holds {self.space} embeddings of model {sorted(foreign)} but the "
                f"service runs {self.model_version}; run `lrface gallery reembed` (re-embeds from stored face "
                f"chips) first{hint}"
            )
        if self.teacher is not None:
            self.teacher.check_versions()

    def sync(self) -> int:
        """Apply every change committed since ``seq`` (by any process), in log order; returns how many
        were read. The only way the index changes after :meth:`load`."""
        if self.teacher is not None:
            self.teacher.sync()  # the same log, applied to the teacher's index
        with self._sync_lock:
            read = self._apply_changes()
        with self._lock:
            parts = list(self._parts.values())
        if any(part.wants_compaction() for part in parts) and not self._compacting:
            self._compacting = True
            threading.Thread(target=self._compact, name="lrface-index-compact", daemon=True).start()
        return read

    def _compact(self) -> None:
        try:
            with self._lock:
                parts = [part for part in self._parts.values() if part.wants_compaction()]
            if [part.compact() for part in parts].count(True):
                self.save()
        except Exception:  # noqa: BLE001 - the old graph keeps serving; the next sync tries again
            log.exception("%s index compaction failed", self.space)
        finally:
            self._compacting = False

    def _apply_changes(self) -> int:
        read = 0
        while True:
            pending = self.store.changes_since(self.seq)
            if not pending:
                return read
            read += len(pending)
            behind = pending[0].seq > self.seq + 1 and self.seq < self.store.pruned_through()
            if behind or any(c.op == "reload" for c in pending):  # a bulk rewrite, or a log pruned past us
                self.load(from_file=False)
                continue
            added = [c.face_id for c in pending if c.op == "add" and c.face_id is not None]
            with self._lock:
                added = [i for i in added if i not in self._subject_of]
            if added:
                ids, galleries, subject_ids, vectors = self.store.faces_by_id(added, self.space)  # deleted: absent
                self._add(ids, galleries, subject_ids, vectors)
            self._remove([c.face_id for c in pending if c.op == "remove" and c.face_id is not None])
            self.seq = pending[-1].seq

    def _add(self, ids: np.ndarray, galleries: list[str], subject_ids: list[str], vectors: np.ndarray) -> None:
        """Index faces not indexed yet (the writer and the change follower may both try), each in its
        gallery's index."""
        with self._lock:
            fresh = [k for k, i in enumerate(ids.tolist()) if i not in self._subject_of]
            for gallery in dict.fromkeys(galleries[k] for k in fresh):
                rows = [k for k in fresh if galleries[k] == gallery]
                if gallery not in self._parts:
                    self._parts[gallery] = self.index.empty_like()
                self._parts[gallery].add(ids[rows], vectors[rows])
                if gallery != DEFAULT_GALLERY:
                    self._gallery_of.update({int(ids[k]): gallery for k in rows})
            self._subject_of.update({int(ids[k]): subject_ids[k] for k in fresh})

    def _remove(self, ids: list[int]) -> None:
        with self._lock:
            present = [i for i in ids if i in self._subject_of]
            by_gallery: dict[str, list[int]] = {}
            for i in present:
                by_gallery.setdefault(self._gallery_of.pop(i, DEFAULT_GALLERY), []).append(i)
                del self._subject_of[i]
            for gallery, gone in by_gallery.items():
                self._parts[gallery].remove(gone)
                if gallery != DEFAULT_GALLERY and len(self._parts[gallery]) == 0:
                    del self._parts[gallery]  # an emptied (or deleted) gallery's index goes

    def enroll(self, subject_id: str, faces: list[NewFace], gallery: str = DEFAULT_GALLERY) -> list[FaceRecord]:
        """Add faces of a subject of ``gallery``; raises :class:`UnknownGallery`."""
        teacher_version = self.teacher.model_version if self.teacher is not None else None
        records = self.store.add_faces(subject_id, faces, self.model_version, teacher_version, gallery)  # committed
        if any(r.created for r in records):
            self.sync()  # searchable before the enrolment is acknowledged
        return records

    def delete_subject(self, subject_id: str, gallery: str = DEFAULT_GALLERY) -> list[int] | None:
        ids = self.store.delete_subject(subject_id, gallery)
        if ids:
            self.sync()
        return ids

    def delete_face(self, subject_id: str, face_id: int, gallery: str = DEFAULT_GALLERY) -> bool:
        removed = self.store.delete_face(subject_id, face_id, gallery)
        if removed:
            self.sync()
        return removed

    def get_subject(self, subject_id: str, gallery: str = DEFAULT_GALLERY) -> SubjectRecord | None:
        return self.store.get_subject(subject_id, gallery)

    # -- galleries ----------------------------------------------------------------------------------

    def create_gallery(self, name: str) -> bool:
        """Create an empty gallery (its index is made with its first face); False when it exists."""
        return self.store.create_gallery(name)

    def delete_gallery(self, name: str) -> tuple[int, int] | None:
        """Delete a gallery with its subjects and faces: ``(subjects, faces)`` deleted, None when unknown.
        The default gallery cannot be deleted (ValueError)."""
        deleted = self.store.delete_gallery(name)
        if deleted is None:
            return None
        subjects, face_ids = deleted
        self.sync()
        return subjects, len(face_ids)

    def has_gallery(self, name: str) -> bool:
        return name == DEFAULT_GALLERY or self.store.gallery_exists(name)

    def list_galleries(self, names: list[str] | None = None) -> list[GalleryRecord]:
        return self.store.list_galleries(names)

    def in_space(self, space: str) -> Gallery:
        """This gallery ('student') or its teacher gallery ('teacher')."""
        if space == self.space:
            return self
        if space == "teacher" and self.teacher is not None:
            return self.teacher
        raise ValueError(f"this gallery has no {space} embeddings")

    def search(self, query: np.ndarray, top_k: int, *, gallery: str = DEFAULT_GALLERY) -> list[Match]:
        """Best-scoring subjects of ``gallery`` (each by its best face), highest first."""
        with self._lock:
            part = self._parts.get(gallery)
            if part is None:  # a gallery without faces (or none of that name)
                return []
            scores, ids = part.search(query, max(top_k * 4, top_k + 8))
            subject_of = [self._subject_of.get(int(i)) for i in ids]
        best: dict[str, Match] = {}
        for score, face_id, subject in zip(scores, ids, subject_of, strict=True):
            if subject is not None and subject not in best:
                best[subject] = Match(subject, float(score), int(face_id))
        return sorted(best.values(), key=lambda m: m.score, reverse=True)[:top_k]

    def subject_scores(
        self, subject_id: str, query: np.ndarray, gallery: str = DEFAULT_GALLERY
    ) -> tuple[float, float, int] | None:
        """(best, mean, face count) of ``query`` against every face of one subject of ``gallery``."""
        ids, _, vectors = self.store.embeddings(subject_id, self.space, gallery)
        if not len(ids):
            return None
        scores = vectors @ np.asarray(query, dtype=np.float32).reshape(-1)
        return float(scores.max()), float(scores.mean()), len(ids)

    def __len__(self) -> int:
        """Faces indexed, every gallery together."""
        with self._lock:
            return sum(len(part) for part in self._parts.values())

    def count(self, gallery: str = DEFAULT_GALLERY) -> int:
        """Faces indexed in one gallery."""
        with self._lock:
            part = self._parts.get(gallery)
            return len(part) if part is not None else 0

    def close(self) -> None:
        """Persist the index (one-node galleries: the next start replays only newer changes) and close."""
        try:
            if self.persist is not None and self.seq:
                if self.teacher is not None:
                    self.teacher.save()
                self.save()
        finally:
            self.store.close()


def _rows_by_gallery(galleries: list[str]) -> dict[str, np.ndarray]:
    """Row numbers of each gallery's faces in a snapshot (the default gallery always listed, first)."""
    rows: dict[str, np.ndarray] = {DEFAULT_GALLERY: np.zeros(0, dtype=np.int64)}
    if not galleries:
        return rows
    names, which = np.unique(np.asarray(galleries), return_inverse=True)
    order = np.argsort(which, kind="stable")
    bounds = np.searchsorted(which[order], np.arange(len(names) + 1))
    rows.update({str(name): order[bounds[k] : bounds[k + 1]] for k, name in enumerate(names)})
    return rows


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
    try:
        gallery = _gallery(settings, store, dim, model_version, teacher)
    except Exception:
        store.close()
        raise
    try:
        gallery.check_versions()
        if load:
            gallery.load()
    except Exception:
        store.close()
        raise
    return gallery


def _gallery(settings: Settings, store: GalleryStore, dim: int, model_version: str,
             teacher: tuple[int, str] | None) -> Gallery:  # fmt: skip
    """The engine: pgvector where the database has it (``gallery_engine`` 'auto' or 'pgvector'), else
    FAISS in this process's memory. A PostgreSQL without pgvector is still served (as before pgvector
    was used), with a warning, unless ``gallery_engine='pgvector'`` asks for it, which refuses."""
    engine = settings.gallery_engine
    if engine == "pgvector" and not store.pgvector:
        raise RuntimeError(
            f"LRFACE_GALLERY_ENGINE=pgvector but {store.describe()} has no vector extension: run PostgreSQL with "
            "pgvector (the compose cluster profile's pgvector/pgvector:pg16) and a user allowed to create it"
        )
    if engine != "faiss" and store.pgvector:
        from service.gallery.pgvector import PgvectorGallery

        ef = settings.pgvector_ef_search
        teacher_db = PgvectorGallery(store, *teacher, space="teacher", ef_search=ef) if teacher is not None else None
        return PgvectorGallery(store, dim, model_version, teacher=teacher_db, ef_search=ef)
    if store.dialect == "postgresql" and not store.pgvector:
        log.warning("gallery %s is searched in this process's memory (FAISS): PostgreSQL has no pgvector, so "
                    "every worker of every replica builds its own copy", store.describe())  # fmt: skip

    def index(size: int) -> FaceIndex:
        return FaceIndex(size, settings.index, settings.hnsw_threshold, device=settings.faiss_device)

    teacher_gallery = (
        Gallery(store, teacher[0], teacher[1], index(teacher[0]), space="teacher") if teacher is not None else None
    )
    # One node (SQLite): the index is kept beside the gallery, so a restart replays only newer changes.
    persist = Path(str(store.url.database)).parent if store.dialect == "sqlite" else None
    if teacher_gallery is not None:
        teacher_gallery.persist = IndexFile(persist, "teacher") if persist is not None else None
    return Gallery(store, dim, model_version, index(dim), teacher=teacher_gallery, persist_dir=persist)
