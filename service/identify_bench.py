"""The number a user sees: LFW test people enrolled through the HTTP API (one HR photo each, aligned
as training aligns them), their other photos degraded to each probe size and identified through the
API. The chips, the enrolled image of each person and the degradation (seeded per image) are those
of ``lrface evaluate``, so rank-1 here must agree with the offline evaluation's routed row."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from tqdm import tqdm

from lrface.alignment import DlibAligner
from lrface.data.lfw import identity_split
from lrface.degradation import DegradationConfig, degrade
from lrface.preprocessing import encode_image, load_image_file


def aligned_test_chips(
    lfw_root: Path, progress: bool = True, people: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Aligned 150-px chips and person labels of every test image (of the first ``people`` test
    people), in the evaluation's order."""
    split = identity_split(lfw_root)
    names = sorted(split.test)[:people]
    files = [f for n in names for f in split.test[n]]
    labels = np.asarray([i for i, n in enumerate(names) for _ in split.test[n]])
    aligner = DlibAligner()
    chips = [
        aligner.align_largest(load_image_file(f), fallback_centre=True)
        for f in tqdm(files, desc="aligning", disable=not progress)
    ]
    return np.stack([c for c in chips if c is not None]), labels


def probe(chip: np.ndarray, protocol: str, row: int, seed: int = 0) -> np.ndarray:
    """One probe as the evaluation makes it (``training.evaluate.probe_faces``): seeded by its row."""
    if protocol == "hr":
        return chip
    if protocol.startswith("surveillance"):
        config = DegradationConfig.surveillance(int(protocol.removeprefix("surveillance")))
    else:
        config = DegradationConfig(size=int(protocol.removeprefix("lr")))
    return degrade(chip, config, np.random.default_rng((seed, row)))


def bench_identify(
    url: str,
    lfw_root: Path,
    protocols: list[str],
    api_key: str | None = None,
    progress: bool = True,
    people: int | None = None,
) -> dict[str, Any]:
    """Enrol, then identify every probe of every protocol; rank-1 (top match right, whatever its
    score), correct decisions (at the served threshold), the embedder used and p50 latency."""
    chips, labels = aligned_test_chips(lfw_root, progress, people)
    first: dict[int, int] = {}
    for row, label in enumerate(labels.tolist()):
        first.setdefault(int(label), row)
    headers = {"X-API-Key": api_key} if api_key else {}
    results: dict[str, Any] = {"people": len(first), "protocols": {}}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        started = time.perf_counter()
        for label, row in tqdm(sorted(first.items()), desc="enrolling", disable=not progress):
            files = {"images": (f"{row}.png", encode_image(chips[row]))}
            chip = {"detect": "false"}  # aligned chips: each is the face, as offline
            client.post(f"/gallery/subjects/p{label:04d}/faces", files=files, data=chip).raise_for_status()
        results["enrol_s"] = time.perf_counter() - started
        probes = [row for row in range(len(labels)) if first[int(labels[row])] != row]
        for protocol in protocols:
            hits, decided, embedders, latencies = 0, 0, set(), []
            for row in tqdm(probes, desc=protocol, disable=not progress):
                t0 = time.perf_counter()
                response = client.post(
                    "/identify",
                    files={"image": ("p.png", encode_image(probe(chips[row], protocol, row)))},
                    data={"top_k": "1", "detect": "false"},  # aligned chips: each is the face, as offline
                )
                latencies.append(time.perf_counter() - t0)
                response.raise_for_status()
                body = response.json()
                truth = f"p{int(labels[row]):04d}"
                hits += bool(body["matches"]) and body["matches"][0]["subject_id"] == truth
                decided += body["decision"] == truth
                embedders.add(body["embedder"])
            results["protocols"][protocol] = {
                "rank1": hits / len(probes),
                "decision_correct": decided / len(probes),
                "probes": len(probes),
                "embedder": sorted(embedders),
                "identify_p50_ms": float(np.median(latencies) * 1e3),
            }
    return results
