"""Embedding speed of the teacher, the student in torch and the student in ONNX Runtime, measured in
one run: throughput at batch 1 and 64, latency p50/p99, model size and peak memory. Each model runs in
its own process so that peak memory (max RSS) belongs to it alone."""

from __future__ import annotations

import multiprocessing as mp
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _timings(fn: Callable[[], object], repeats: int, warmup: int = 3) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - start
    return out


def _summary(batch1: np.ndarray, batch64: np.ndarray) -> dict[str, float]:
    return {
        "batch1_p50_ms": float(np.median(batch1) * 1e3),
        "batch1_p99_ms": float(np.percentile(batch1, 99) * 1e3),
        "batch1_faces_per_s": float(1 / np.median(batch1)),
        "batch64_p50_ms": float(np.median(batch64) * 1e3),
        "batch64_faces_per_s": float(64 / np.median(batch64)),
    }


def _onnx_student(model_dir: str, threads: int, repeats: int) -> dict[str, Any]:
    from lrface.embedder import OnnxEmbedder

    embedder = OnnxEmbedder(Path(model_dir), "cpu", threads)
    size = embedder.card.input_size
    x1 = np.random.default_rng(0).normal(size=(1, 3, size, size)).astype(np.float32)
    x64 = np.random.default_rng(0).normal(size=(64, 3, size, size)).astype(np.float32)
    result = _summary(
        _timings(lambda: embedder.embed_inputs(x1), repeats * 10),
        _timings(lambda: embedder.embed_inputs(x64), repeats),
    )
    return {**result, "size_mb": (Path(model_dir) / embedder.card.onnx_file).stat().st_size / 2**20}


def _torch_student(model_dir: str, threads: int, repeats: int) -> dict[str, Any]:
    import torch

    from training.config import TrainConfig
    from training.models import get_model

    torch.set_num_threads(threads)
    state = torch.load(Path(model_dir) / "student.pt", map_location="cpu", weights_only=False)
    config = TrainConfig.model_validate(state["config"])
    model = get_model(config.model, config.input_size, config.embedding_size).eval()
    model.load_state_dict(state["model"])
    s = config.input_size
    x1, x64 = torch.randn(1, 3, s, s), torch.randn(64, 3, s, s)
    with torch.inference_mode():
        result = _summary(_timings(lambda: model(x1), repeats * 10), _timings(lambda: model(x64), repeats))
    params = sum(p.numel() for p in model.parameters())
    return {**result, "size_mb": params * 4 / 2**20, "parameters": params}


def _teacher(model_dir: str, threads: int, repeats: int) -> dict[str, Any]:
    from lrface.settings import get_settings
    from lrface.teacher import TEACHER_FILE, DlibEmbedder

    teacher = DlibEmbedder(get_settings().teacher_model, "cpu", threads)  # what the service runs, on the CPU
    chips = np.random.default_rng(0).integers(0, 256, size=(64, 150, 150, 3), dtype=np.uint8)
    result = _summary(
        _timings(lambda: teacher.embed_chips(chips[:1]), max(10, repeats), warmup=1),
        _timings(lambda: teacher.embed_chips(chips), max(3, repeats // 10), warmup=1),
    )
    return {**result, "size_mb": (get_settings().teacher_model / TEACHER_FILE).stat().st_size / 2**20}


RUNNERS: dict[str, Callable[[str, int, int], dict[str, Any]]] = {
    "teacher (dlib ResNet in ONNX Runtime, 150 px)": _teacher,
    "student (torch)": _torch_student,
    "student (ONNX Runtime)": _onnx_student,
}


def _child(name: str, model_dir: str, threads: int, repeats: int, queue: Any) -> None:
    result = RUNNERS[name](model_dir, threads, repeats)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(result)


def bench_models(model_dir: Path, threads: int = 2, repeats: int = 50, int8_dir: Path | None = None) -> dict[str, Any]:
    """Every runner on ``model_dir``, plus the ONNX runner on ``int8_dir`` when given."""
    ctx = mp.get_context("spawn")
    # a student released without torch weights (lrface release --no-torch-weights) has no torch row
    torch_weights = (model_dir / "student.pt").exists()
    jobs = [(name, name, model_dir) for name in RUNNERS if torch_weights or name != "student (torch)"]
    if int8_dir is not None:
        jobs.append(("student INT8 (ONNX Runtime)", "student (ONNX Runtime)", int8_dir))
    results: dict[str, Any] = {}
    for label, runner, directory in jobs:
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(runner, str(directory), threads, repeats, queue))
        proc.start()
        results[label] = queue.get()
        proc.join()
    teacher = results["teacher (dlib ResNet in ONNX Runtime, 150 px)"]["batch64_faces_per_s"]
    for entry in results.values():
        entry["speedup_vs_teacher_batch64"] = entry["batch64_faces_per_s"] / teacher
    return results
