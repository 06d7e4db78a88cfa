"""Timing of :class:`lrface.detection.MtcnnDetector` on a 1280x720 frame, per stage (not a test).

``python -m lrface.detection_bench`` builds a frame of LFW faces (when LRFACE_DATA holds LFW; else
the background alone) pasted at 16-48 px on a textured background, runs ``detect`` several times
per minimum face size and prints the median time of each stage (summed-area table + pyramid + P-Net,
R-Net, O-Net) and of the whole call, as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from lrface.detection import BUNDLED_DETECTOR_DIR, MtcnnDetector

# LFW's deep-funneled 250x250 images hold the face at about [70, 180] on both axes: the crop below
# (with some context around it) becomes a face of about ``side`` pixels when resized to
# ``side * FACE_CONTEXT``.
LFW_FACE_CROP = (50, 50, 200, 200)
FACE_CONTEXT = 1.45


def textured_background(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic cluttered background: soft colour blobs, two gratings and pixel noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(50, 200, size=(max(height // 48, 2), max(width // 48, 2), 3)).astype(np.uint8)
    blobs = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    gratings = 12 * np.sin(xx / 9.0 + yy / 17.0) + 8 * np.sin(yy / 4.0)
    noisy = blobs + gratings[:, :, None] + rng.normal(0, 6, size=(height, width, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def paste_faces(
    background: np.ndarray, faces: Sequence[np.ndarray], sides: Sequence[int], seed: int = 0
) -> tuple[np.ndarray, list[tuple[float, float, int]]]:
    """Paste each LFW image's face, area-resized to about ``side`` px, at non-overlapping random
    spots; returns the frame and each face's ``(centre x, centre y, side)``."""
    rng = np.random.default_rng(seed)
    frame = background.copy()
    height, width = frame.shape[:2]
    taken: list[tuple[int, int, int]] = []
    placed: list[tuple[float, float, int]] = []
    for face, side in zip(faces, sides, strict=True):
        patch_side = int(round(side * FACE_CONTEXT))
        patch = Image.fromarray(face).crop(LFW_FACE_CROP).resize((patch_side, patch_side), Image.Resampling.BOX)
        for _ in range(1000):
            x = int(rng.integers(0, width - patch_side))
            y = int(rng.integers(0, height - patch_side))
            if all(
                abs(x - tx) > (patch_side + ts) // 2 + 8 or abs(y - ty) > (patch_side + ts) // 2 + 8
                for tx, ty, ts in taken
            ):
                break
        else:
            raise ValueError("no room left in the frame for another face")
        frame[y : y + patch_side, x : x + patch_side] = np.asarray(patch)
        taken.append((x, y, patch_side))
        placed.append((x + patch_side / 2, y + patch_side / 2, side))
    return frame, placed


def lfw_faces(count: int) -> list[np.ndarray]:
    """The first image of the first ``count`` LFW people (empty when LFW is not there)."""
    from lrface.data.lfw import images_dir
    from lrface.settings import get_settings

    root = images_dir(get_settings().lfw_root())
    if not root.is_dir():
        return []
    people = sorted(p for p in root.iterdir() if p.is_dir())[:count]
    return [np.asarray(Image.open(next(iter(sorted(p.glob("*.jpg"))))).convert("RGB")) for p in people]


def bench_frame(height: int = 720, width: int = 1280) -> tuple[np.ndarray, int]:
    """The benchmark frame and how many faces it holds."""
    faces = lfw_faces(8)
    sides = [16, 20, 24, 28, 32, 40, 44, 48][: len(faces)]
    frame, placed = paste_faces(textured_background(height, width), faces, sides)
    return frame, len(placed)


def _detector(model_dir: Path, min_face: float, threads: int, spinning: bool) -> MtcnnDetector:
    kind = type("BenchDetector", (MtcnnDetector,), {"allow_spinning": spinning})
    return kind(model_dir, min_face_px=min_face, threads=threads)


def _throughput(detector: MtcnnDetector, frame: np.ndarray, workers: int, calls: int) -> float:
    """Frames per second with ``workers`` threads calling ``detect`` at once (as a service's pool)."""
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(detector.detect, [frame] * workers))
        start = time.perf_counter()
        list(pool.map(detector.detect, [frame] * calls))
        return calls / (time.perf_counter() - start)


def bench(
    min_faces: Sequence[float] = (12.0, 16.0),
    runs: int = 7,
    threads: int = 2,
    model_dir: Path = BUNDLED_DETECTOR_DIR,
    spinning: bool = False,
    workers: int = 0,
) -> dict[str, object]:
    """Median milliseconds per stage and per call over ``runs`` calls (after one warm-up), per minimum
    face; with ``workers``, also frames/s with that many concurrent calls."""
    frame, placed = bench_frame()
    results: dict[str, object] = {
        "frame": f"{frame.shape[1]}x{frame.shape[0]}", "faces_pasted": placed, "runs": runs,
        "threads": threads, "spinning": spinning, "cpus": len(os.sched_getaffinity(0)),
    }  # fmt: skip
    for min_face in min_faces:
        detector = _detector(model_dir, min_face, threads, spinning)
        detector.detect(frame)
        times, cpu = [], []
        for _ in range(runs):
            started = time.process_time()
            times.append(detector.detect_timed(frame)[1])
            cpu.append(time.process_time() - started)
        row: dict[str, object] = {
            "total_ms": round(1000 * statistics.median(t.total for t in times), 1),
            "pnet_ms": round(1000 * statistics.median(t.pnet for t in times), 1),
            "pnet_onnx_ms": round(1000 * statistics.median(t.pnet_onnx for t in times), 1),
            "rnet_ms": round(1000 * statistics.median(t.rnet for t in times), 1),
            "onet_ms": round(1000 * statistics.median(t.onet for t in times), 1),
            "cpu_ms": round(1000 * statistics.median(cpu), 1),
            "candidates": times[-1].candidates,
        }
        if workers:
            row[f"frames_per_s_{workers}_workers"] = round(_throughput(detector, frame, workers, 4 * runs), 2)
        results[f"min_face_{min_face:g}"] = row
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--min-face", type=float, action="append", help="Minimum face side(s) (default 12 and 16).")
    parser.add_argument("--runs", type=int, default=7, help="Timed calls per minimum face (median reported).")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads.")
    parser.add_argument("--spinning", action="store_true", help="Let ONNX Runtime threads spin (its own default).")
    parser.add_argument("--workers", type=int, default=0, help="Also measure frames/s with this many concurrent calls.")
    args = parser.parse_args(argv)
    results = bench(args.min_face or (12.0, 16.0), args.runs, args.threads, spinning=args.spinning,
                    workers=args.workers)  # fmt: skip
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
