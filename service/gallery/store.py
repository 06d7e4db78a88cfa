"""The durable gallery store (SQLite by default): subjects, faces, embeddings, model version,
content hash, a small face chip for re-embedding, timestamps.

Every write is one transaction committed with ``synchronous=FULL`` in WAL mode before the caller
acknowledges it, so a crash at any moment loses nothing acknowledged and leaves no half subject.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS subjects (
    subject_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS faces (
    face_id INTEGER PRIMARY KEY AUTOINCREMENT,
    subject_id TEXT NOT NULL REFERENCES subjects(subject_id) ON DELETE CASCADE,
    content_hash TEXT NOT NULL,
    model_version TEXT NOT NULL,
    embedding BLOB NOT NULL,
    chip BLOB,
    created_at REAL NOT NULL,
    UNIQUE (subject_id, content_hash)
);
CREATE INDEX IF NOT EXISTS faces_by_subject ON faces(subject_id);
"""


@dataclass
class NewFace:
    content_hash: str
    embedding: np.ndarray
    chip_png: bytes | None = None


@dataclass
class FaceRecord:
    face_id: int
    subject_id: str
    content_hash: str
    model_version: str
    created_at: float
    created: bool = True  # False when the same image was already enrolled for this subject


@dataclass
class SubjectRecord:
    subject_id: str
    created_at: float
    faces: list[FaceRecord] = field(default_factory=list)


class SQLiteStore:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "gallery.sqlite3"
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.executescript(SCHEMA)
        self._conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def add_faces(self, subject_id: str, faces: list[NewFace], model_version: str) -> list[FaceRecord]:
        """Add faces to a subject (created when new) in one transaction; repeats are reported, not added."""
        now = time.time()
        records: list[FaceRecord] = []
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.execute("INSERT OR IGNORE INTO subjects VALUES (?, ?)", (subject_id, now))
                for face in faces:
                    row = cur.execute(
                        "SELECT face_id, model_version, created_at FROM faces WHERE subject_id=? AND content_hash=?",
                        (subject_id, face.content_hash),
                    ).fetchone()
                    if row is not None:
                        records.append(FaceRecord(row[0], subject_id, face.content_hash, row[1], row[2], created=False))
                        continue
                    cur.execute(
                        "INSERT INTO faces (subject_id, content_hash, model_version, embedding, chip, created_at)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            subject_id,
                            face.content_hash,
                            model_version,
                            np.asarray(face.embedding, dtype=np.float32).tobytes(),
                            face.chip_png,
                            now,
                        ),
                    )
                    records.append(
                        FaceRecord(int(cur.lastrowid or 0), subject_id, face.content_hash, model_version, now)
                    )
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return records

    def import_faces(self, rows: list[tuple[str, str, np.ndarray]], model_version: str) -> None:
        """Bulk insert ``(subject_id, content_hash, embedding)`` rows in one transaction (seeding, migration)."""
        now = time.time()
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.executemany("INSERT OR IGNORE INTO subjects VALUES (?, ?)", [(r[0], now) for r in rows])
                cur.executemany(
                    "INSERT OR IGNORE INTO faces (subject_id, content_hash, model_version, embedding, chip, created_at)"
                    " VALUES (?, ?, ?, ?, NULL, ?)",
                    [(sid, h, model_version, np.asarray(v, dtype=np.float32).tobytes(), now) for sid, h, v in rows],
                )
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    def get_subject(self, subject_id: str) -> SubjectRecord | None:
        with self._lock:
            row = self._conn.execute("SELECT created_at FROM subjects WHERE subject_id=?", (subject_id,)).fetchone()
            if row is None:
                return None
            faces = self._conn.execute(
                "SELECT face_id, content_hash, model_version, created_at FROM faces"
                " WHERE subject_id=? ORDER BY face_id",
                (subject_id,),
            ).fetchall()
        return SubjectRecord(subject_id, row[0], [FaceRecord(f[0], subject_id, f[1], f[2], f[3]) for f in faces])

    def list_subjects(self, offset: int, limit: int) -> tuple[list[tuple[str, int, float]], int]:
        """``[(subject_id, face count, created_at)]`` ordered by id, and the total subject count."""
        with self._lock:
            total = self._conn.execute("SELECT COUNT(*) FROM subjects").fetchone()[0]
            rows = self._conn.execute(
                "SELECT s.subject_id, COUNT(f.face_id), s.created_at FROM subjects s "
                "LEFT JOIN faces f ON f.subject_id = s.subject_id GROUP BY s.subject_id "
                "ORDER BY s.subject_id LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows], total

    def delete_subject(self, subject_id: str) -> list[int] | None:
        """Delete a subject and its faces; returns their face ids, or None when unknown."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                if cur.execute("SELECT 1 FROM subjects WHERE subject_id=?", (subject_id,)).fetchone() is None:
                    cur.execute("ROLLBACK")
                    return None
                ids = [r[0] for r in cur.execute("SELECT face_id FROM faces WHERE subject_id=?", (subject_id,))]
                cur.execute("DELETE FROM faces WHERE subject_id=?", (subject_id,))
                cur.execute("DELETE FROM subjects WHERE subject_id=?", (subject_id,))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return ids

    def delete_face(self, subject_id: str, face_id: int) -> bool:
        with self._lock:
            cur = self._conn.execute("DELETE FROM faces WHERE subject_id=? AND face_id=?", (subject_id, face_id))
            return cur.rowcount > 0

    def embeddings(self, subject_id: str | None = None) -> tuple[np.ndarray, list[str], np.ndarray]:
        """``(face_ids, subject_ids, (N, D) embeddings)`` of every face, or of one subject's faces."""
        query = "SELECT face_id, subject_id, embedding FROM faces"
        args: tuple[str, ...] = ()
        if subject_id is not None:
            query, args = query + " WHERE subject_id=?", (subject_id,)
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY face_id", args).fetchall()
        if not rows:
            return np.zeros(0, dtype=np.int64), [], np.zeros((0, 0), dtype=np.float32)
        ids = np.asarray([r[0] for r in rows], dtype=np.int64)
        vectors = np.stack([np.frombuffer(r[2], dtype=np.float32) for r in rows])
        return ids, [r[1] for r in rows], vectors

    def chips(self) -> list[tuple[int, bytes | None]]:
        with self._lock:
            return [(r[0], r[1]) for r in self._conn.execute("SELECT face_id, chip FROM faces ORDER BY face_id")]

    def replace_embeddings(self, updates: list[tuple[int, np.ndarray]], model_version: str) -> None:
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                cur.executemany(
                    "UPDATE faces SET embedding=?, model_version=? WHERE face_id=?",
                    [(np.asarray(v, dtype=np.float32).tobytes(), model_version, fid) for fid, v in updates],
                )
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    def model_versions(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._conn.execute("SELECT DISTINCT model_version FROM faces")}
