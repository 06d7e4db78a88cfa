"""Bounded load generator: N concurrent clients on loopback for a fixed time, mixing /identify and
enrolment, then a check that every acknowledged enrolment is in the gallery.

Loopback only, by design: it is a benchmark of our own service, not a tool to point at others.
"""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

from lrface.preprocessing import encode_image

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def face_png(seed: int | list[int], size: int = 24) -> str:
    """A distinct small image (base64 PNG) per seed: each enrolment has its own content hash."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return base64.b64encode(encode_image(pixels)).decode()


@dataclass
class RouteStats:
    count: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0


@dataclass
class LoadReport:
    duration_s: float
    clients: int
    enroll_fraction: float
    requests: int
    throughput_rps: float
    identify: RouteStats
    enroll: RouteStats
    errors: int
    error_samples: list[str] = field(default_factory=list)
    acknowledged_enrolments: int = 0
    lost_enrolments: int = 0
    server_peak_rss_mb: float | None = None  # when the generator started the server itself

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory (VmHWM) of a process on this machine, in MiB."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _stats(times: list[float]) -> RouteStats:
    if not times:
        return RouteStats()
    arr = np.asarray(times) * 1e3
    return RouteStats(len(times), float(np.median(arr)), float(np.percentile(arr, 99)))


def run_load(
    url: str,
    duration: float = 10.0,
    clients: int = 4,
    enroll_fraction: float = 0.2,
    api_key: str | None = None,
    seed: int = 0,
) -> LoadReport:
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK:
        raise ValueError(f"the load generator only targets loopback (127.0.0.1 / localhost), not {host!r}")
    if not 0 <= enroll_fraction <= 1:
        raise ValueError("enroll_fraction must be between 0 and 1")
    headers = {"X-API-Key": api_key} if api_key else {}
    lock = threading.Lock()
    identify_times: list[float] = []
    enroll_times: list[float] = []
    errors: list[str] = []
    acknowledged: list[tuple[str, int]] = []
    probes = [face_png(seed * 1_000_003 + k) for k in range(32)]
    deadline = time.monotonic() + duration

    def client_loop(worker: int) -> None:
        rng = np.random.default_rng([seed, worker])
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            n = 0
            while time.monotonic() < deadline:
                n += 1
                enrol = rng.random() < enroll_fraction
                subject = f"load-{seed}-{worker}-{n}"
                start = time.perf_counter()
                try:
                    if enrol:
                        body = {"images": [{"data": face_png([seed, worker, n])}]}
                        response = client.post(f"/gallery/subjects/{subject}/faces", json=body)
                    else:
                        probe = probes[int(rng.integers(len(probes)))]
                        response = client.post("/identify", json={"image": {"data": probe}, "top_k": 5})
                    elapsed = time.perf_counter() - start
                    ok = response.status_code in (200, 201)
                    detail = f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as exc:
                    elapsed, ok, detail = time.perf_counter() - start, False, f"{type(exc).__name__}: {exc}"
                with lock:
                    if not ok:
                        errors.append(detail)
                    elif enrol:
                        enroll_times.append(elapsed)
                        acknowledged.append((subject, int(response.json()["faces"][0]["face_id"])))
                    else:
                        identify_times.append(elapsed)

    started = time.monotonic()
    threads = [threading.Thread(target=client_loop, args=(w,)) for w in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    lost = verify_enrolments(url, acknowledged, headers)
    total = len(identify_times) + len(enroll_times) + len(errors)
    return LoadReport(
        duration_s=elapsed,
        clients=clients,
        enroll_fraction=enroll_fraction,
        requests=total,
        throughput_rps=total / elapsed if elapsed else 0.0,
        identify=_stats(identify_times),
        enroll=_stats(enroll_times),
        errors=len(errors),
        error_samples=errors[:5],
        acknowledged_enrolments=len(acknowledged),
        lost_enrolments=len(lost),
    )


def verify_enrolments(url: str, acknowledged: list[tuple[str, int]], headers: dict[str, str]) -> list[tuple[str, int]]:
    """The acknowledged ``(subject, face_id)`` pairs the gallery does not hold."""
    lost = []
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for subject, face_id in acknowledged:
            response = client.get(f"/gallery/subjects/{subject}")
            faces = {f["face_id"] for f in response.json().get("faces", [])} if response.status_code == 200 else set()
            if face_id not in faces:
                lost.append((subject, face_id))
    return lost
