"""Service benchmarks: HTTP latency of /embed and /identify over loopback against a real server, and
the FAISS index at gallery scale (search latency, recall@1 of HNSW against exact search, memory)."""

from __future__ import annotations

import base64
import resource
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from lrface.preprocessing import encode_image
from service.gallery.index import FaceIndex


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


SPREAD = 0.5  # per-dimension spread of a subject's faces around its centre: cosine ~0.8 between them


def synthetic_embeddings(count: int, dim: int, seed: int = 0, with_subjects: bool = False) -> Any:
    """Unit vectors in clusters of four (four faces per subject), like a real gallery; with
    ``with_subjects`` also each vector's subject index."""
    rng = np.random.default_rng(seed)
    subjects = np.arange(count) // 4
    centres = rng.normal(size=(int(subjects[-1]) + 1 if count else 1, dim)).astype(np.float32)
    vectors = centres[subjects] + SPREAD * rng.normal(size=(count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors, subjects) if with_subjects else vectors


def synthetic_probes(count: int, dim: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """New faces (not in the gallery) of subjects enrolled by ``synthetic_embeddings(count, dim, seed)``:
    what /identify is asked. Returns ``(probes, subject index of each)``."""
    centres = np.random.default_rng(seed).normal(size=((count - 1) // 4 + 1, dim)).astype(np.float32)
    rng = np.random.default_rng(seed + 1)
    subjects = rng.integers(0, len(centres), queries)
    probes = centres[subjects] + SPREAD * rng.normal(size=(queries, dim)).astype(np.float32)
    return probes / np.linalg.norm(probes, axis=1, keepdims=True), subjects


def bench_index(
    size: int, dim: int = 128, queries: int = 200, kind: str = "hnsw", ef_search: int = 256
) -> dict[str, Any]:
    """Recall is reported per face (same face id as exact search) and per subject (same subject as
    exact search's best face: what /identify decides on). Probes are new faces of enrolled subjects."""
    vectors, subjects = synthetic_embeddings(size, dim, with_subjects=True)
    ids = np.arange(size, dtype=np.int64)
    probes, probe_subjects = synthetic_probes(size, dim, queries)
    exact = FaceIndex(dim, "flat")
    exact.rebuild(ids, vectors)
    truth = [int(exact.search(q, 1)[1][0]) for q in probes]
    exact_correct = float(np.mean([subjects[t] == p for t, p in zip(truth, probe_subjects, strict=True)]))
    del exact
    before = _rss_mb()
    start = time.perf_counter()
    index = FaceIndex(dim, kind, ef_search=ef_search)
    index.rebuild(ids, vectors)
    build_s = time.perf_counter() - start
    index_mb = _rss_mb() - before
    latencies, hits, subject_hits = [], 0, 0
    for q, t in zip(probes, truth, strict=True):
        t0 = time.perf_counter()
        _, found = index.search(q, 10)
        latencies.append(time.perf_counter() - t0)
        hits += int(found[0]) == t
        subject_hits += int(subjects[int(found[0])]) == int(subjects[t])
    return {
        "size": size,
        "kind": index.active_kind,
        "ef_search": ef_search,
        "build_s": build_s,
        "search_p50_ms": float(np.median(latencies) * 1e3),
        "search_p99_ms": float(np.percentile(latencies, 99) * 1e3),
        "recall_at_1_vs_exact": hits / queries,
        "subject_recall_at_1_vs_exact": subject_hits / queries,
        "exact_search_right_subject": exact_correct,
        "index_rss_mb": index_mb,
    }


def _chip(seed: int, size: int = 16) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return base64.b64encode(encode_image(pixels)).decode()


def bench_http(url: str, requests: int = 200, api_key: str | None = None) -> dict[str, Any]:
    headers = {"X-API-Key": api_key} if api_key else {}
    results: dict[str, Any] = {}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for route, body in (
            ("/embed", {"images": [{"data": _chip(1)}]}),
            ("/identify", {"image": {"data": _chip(2)}, "top_k": 5}),
        ):
            times = []
            for _ in range(requests + 10):
                t0 = time.perf_counter()
                response = client.post(route, json=body)
                times.append(time.perf_counter() - t0)
                response.raise_for_status()
            arr = np.asarray(times[10:])
            results[route] = {"p50_ms": float(np.median(arr) * 1e3), "p99_ms": float(np.percentile(arr, 99) * 1e3),
                              "requests": requests}  # fmt: skip
        results["gallery_faces"] = client.get("/readyz").json()["gallery_faces"]
    return results


def seed_gallery(gallery_dir: Path, model_dir: Path, count: int) -> None:
    """Fill a SQLite gallery with ``count`` synthetic embeddings under the model's version."""
    from lrface.embedder import OnnxEmbedder
    from service.embedders import Embedders
    from service.gallery.store import GalleryStore

    embedders = Embedders.for_model(OnnxEmbedder(model_dir, "cpu", 1))  # the version the service will expect
    store = GalleryStore.sqlite(gallery_dir)
    vectors = synthetic_embeddings(count, embedders.student.card.embedding_size)
    version = embedders.gallery_model_id
    for start in range(0, count, 50_000):
        rows = [(f"s{i // 4:08d}", f"synthetic-{i}", vectors[i]) for i in range(start, min(count, start + 50_000))]
        store.import_faces(rows, version)
    store.close()
