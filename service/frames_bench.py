"""The frame benchmark (``lrface bench frames``): LFW test people enrolled through the HTTP API (one
photo each, sent whole: the service finds the face), then synthetic 1280x720 frames
(:mod:`service.frame_synthesis`) with their other photos pasted at 12-64 px sent to ``/identify``
(``detect=true``), as a camera's frames would be. Reported by face size: detection recall, rank-1 of
the pasted faces the service found, and, for the same faces, rank-1 of their landmark-aligned chips
at that size (sent as chips, PNG). Frames go as JPEG (quality 92, as a camera's would), and for
rank-1 once more as PNG: the aligned chips are lossless, so only the PNG column compares the
detector's crop with the aligned chip pixel for pixel (JPEG alone costs small faces up to 14 points
of rank-1: reports/bench/frames.json). Also false detections per frame,
frames/s over HTTP (one client, then two and four at once), and per-stage times of the detector in this process.

A face's size is the side of the square the models see (``face_px`` in the service's answers: the
framing rule's square around the detector's box), so "16 px" means what it means in the evaluation.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from tqdm import tqdm

from lrface.alignment import DlibAligner
from lrface.data.lfw import identity_split
from lrface.degradation import DegradationConfig, degrade
from lrface.detection import MtcnnDetector, subject_box
from lrface.preprocessing import FRAME_SCALE, encode_image, load_image_file
from lrface.settings import Settings
from service.faces import DetectionConfig
from service.frame_synthesis import Frame, SourceFace, false_detections, match_detections, synthetic_frames
from service.process import cpu_seconds

SIZES = (12, 16, 20, 24, 32, 48, 64)


def _percent(hits: int, total: int) -> float | None:
    return round(100 * hits / total, 1) if total else None


def bench_frames(
    url: str,
    lfw_root: Path,
    frames: int = 150,
    seed: int = 0,
    api_key: str | None = None,
    progress: bool = True,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """With ``server_pid`` (the service's process, on this machine), throughput also reports the
    service's CPU seconds per frame: a figure the machine's other load barely touches, and with it
    the frames/s its cores could serve (cores / CPU seconds per frame)."""
    split = identity_split(lfw_root)
    names = sorted(split.test)
    detector = MtcnnDetector(min_face_px=20)  # the subject's box in each HR source photo
    headers = {"X-API-Key": api_key} if api_key else {}
    results: dict[str, Any] = {"people_enrolled": len(names), "frames": frames, "frame_size": "1280x720"}
    with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
        enrolled = enrol_test_people(client, split.test, names, detector, progress)
        results["enrol_s"], results["enrolled_with_a_box"] = enrolled
        sources, aligned = source_faces(split.test, names, detector, seed)
        scenes = synthetic_frames(
            sources, frames, [s / FRAME_SCALE for s in SIZES], seed=seed
        )  # box sides: their framed squares are SIZES
        sent = [encode_image(f.pixels, "JPEG") for f in scenes]
        answers, latencies = [], []
        for data in tqdm(sent, desc="frames", disable=not progress):
            t0 = time.perf_counter()
            answer = client.post("/identify", files={"image": ("frame.jpg", data, "image/jpeg")},
                                 data={"detect": "true", "top_k": "1"})  # fmt: skip
            latencies.append(time.perf_counter() - t0)
            answer.raise_for_status()
            answers.append(answer.json())
        lossless = []  # the same frames as PNG: the detector's crop against the aligned chip, pixel for pixel
        for scene in tqdm(scenes, desc="frames (PNG)", disable=not progress):
            answer = client.post("/identify", files={"image": ("frame.png", encode_image(scene.pixels), "image/png")},
                                 data={"detect": "true", "top_k": "1"})  # fmt: skip
            answer.raise_for_status()
            lossless.append(answer.json())
        results["per_size"] = _score(scenes, answers, lossless, aligned, client, seed, progress)
        scene_false = context_extra = 0
        for scene, answer in zip(scenes, answers, strict=True):
            boxes = [tuple(x["box"]) for x in answer["faces"]]
            on_scene, in_context = false_detections(
                scene.faces, boxes, match_detections([f.box for f in scene.faces], boxes)
            )
            scene_false += on_scene
            context_extra += in_context
        results["false_detections_per_frame"] = round(scene_false / len(scenes), 3)
        results["other_faces_in_pasted_photos_per_frame"] = round(context_extra / len(scenes), 3)
        results["frames_without_faces"] = sum(not s.faces for s in scenes)
        results["http_one_client"] = {
            "frames_per_s": round(len(latencies) / sum(latencies), 2),
            "latency_p50_ms": round(1000 * float(np.median(latencies)), 1),
        }
        for clients in (2, 4):  # cameras send at once: the service runs that many searches side by side
            results[f"http_{clients}_clients"] = _throughput(
                url, headers, sent[: min(len(sent), 60)], clients, server_pid
            )
    config = DetectionConfig.from_settings(Settings())  # the service's, unless LRFACE_DETECT_* is set
    results["detector"] = {"min_face_px": config.min_face_px, "thresholds": list(config.thresholds)}
    results["detector_stages_ms"] = _stages([f.pixels for f in scenes[:20]])
    results["embedding_ms"] = _embedding_cost([f.pixels for f in scenes[:60]])
    return results


def enrol_test_people(
    client: httpx.Client, people: dict[str, list[Path]], names: list[str], detector: MtcnnDetector, progress: bool
) -> tuple[float, int]:
    """Each person's first photo enrolled as ``p0000``, ``p0001``, ... (the service finds the face; a photo
    it refuses for two faces of similar size is sent again with its subject's box, as a user would):
    ``(seconds, photos sent with a box)``."""
    started = time.perf_counter()
    boxed = 0
    for i, name in enumerate(tqdm(names, desc="enrolling", disable=not progress)):
        photo = people[name][0]
        files = {"images": (photo.name, photo.read_bytes(), "image/jpeg")}
        answer = client.post(f"/gallery/subjects/p{i:04d}/faces", files=files)
        box = photo_subject_box(load_image_file(photo), detector) if answer.status_code == 422 else None
        if box is not None:
            answer = client.post(f"/gallery/subjects/p{i:04d}/faces", files=files,
                                 data={"box": ",".join(f"{v:.1f}" for v in box)})  # fmt: skip
            boxed += 1
        answer.raise_for_status()
    return round(time.perf_counter() - started, 1), boxed


def source_faces(
    people: dict[str, list[Path]], names: list[str], detector: MtcnnDetector, seed: int, limit: int | None = None
) -> tuple[list[SourceFace], list[np.ndarray]]:
    """Every test photo but each person's enrolled first one (the first ``limit`` of them), shuffled; with
    its aligned chip."""
    aligner = DlibAligner()
    photos = [(i, f) for i, n in enumerate(names) for f in people[n][1:]]
    order = np.random.default_rng(seed).permutation(len(photos))
    sources, aligned = [], []
    for k in order:
        person, path = photos[int(k)]
        image = load_image_file(path)
        box = photo_subject_box(image, detector)
        if box is None:
            continue
        sources.append(SourceFace(image, box, person))
        aligned.append(aligner.align(image, box))
        if len(sources) == limit:
            break
    return sources, aligned


def photo_subject_box(image: np.ndarray, detector: MtcnnDetector) -> tuple[float, float, float, float] | None:
    """The box of the photo's subject (:func:`lrface.detection.subject_box`), for pasting."""
    return subject_box(detector.detect(image), image.shape[1], image.shape[0])


def _score(
    scenes: list[Frame],
    answers: list[dict[str, Any]],
    lossless: list[dict[str, Any]],
    aligned: list[np.ndarray],
    client: httpx.Client,
    seed: int,
    progress: bool,
) -> dict[str, Any]:
    rows: dict[int, dict[str, int]] = {
        s: {"faces": 0, "found": 0, "rank1": 0, "png_rank1": 0, "aligned_rank1": 0, "detections": 0, "false": 0}
        for s in SIZES
    }
    scored = list(zip(scenes, answers, lossless, strict=True))
    for scene, answer, png in tqdm(scored, desc="scoring", disable=not progress):
        boxes = [tuple(f["box"]) for f in answer["faces"]]
        matched = match_detections([f.box for f in scene.faces], boxes)
        png_matched = match_detections([f.box for f in scene.faces], [tuple(f["box"]) for f in png["faces"]])
        for j, found in enumerate(answer["faces"]):  # precision by the size the service measured
            on_scene, _ = false_detections(scene.faces, [boxes[j]], {0: 0} if j in matched.values() else {})
            if j in matched.values() or on_scene:
                bucket = rows[min(SIZES, key=lambda s: abs(s - found["face_px"]))]
                bucket["detections"] += 1
                bucket["false"] += on_scene
        for i, face in enumerate(scene.faces):
            size = min(SIZES, key=lambda s: abs(s - face.face_px * FRAME_SCALE))
            row = rows[size]
            row["faces"] += 1
            truth = f"p{face.person:04d}"
            if i in matched:
                row["found"] += 1
                top = answer["faces"][matched[i]]["matches"]
                row["rank1"] += bool(top) and top[0]["subject_id"] == truth
            if i in png_matched:
                top = png["faces"][png_matched[i]]["matches"]
                row["png_rank1"] += bool(top) and top[0]["subject_id"] == truth
            chip = degrade(aligned[face.source], DegradationConfig(size=size), np.random.default_rng((seed, i)))
            reply = client.post("/identify", files={"image": ("chip.png", encode_image(chip))},
                                data={"detect": "false", "top_k": "1"})  # fmt: skip
            reply.raise_for_status()
            top = reply.json()["matches"]
            row["aligned_rank1"] += bool(top) and top[0]["subject_id"] == truth
    return {
        str(size): {
            "faces": r["faces"],
            "recall": _percent(r["found"], r["faces"]),
            "precision": _percent(r["detections"] - r["false"], r["detections"]),
            "rank1_of_pasted": _percent(r["rank1"], r["faces"]),
            "rank1_of_found": _percent(r["rank1"], r["found"]),
            "rank1_of_pasted_png_frames": _percent(r["png_rank1"], r["faces"]),
            "rank1_aligned_chip": _percent(r["aligned_rank1"], r["faces"]),
        }
        for size, r in rows.items()
    }


def _throughput(
    url: str, headers: dict[str, str], frames: list[bytes], clients: int, server_pid: int | None = None
) -> dict[str, float | None]:
    def send(data: bytes) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
            client.post("/identify", files={"image": ("f.jpg", data, "image/jpeg")},
                        data={"detect": "true", "top_k": "1"}).raise_for_status()  # fmt: skip

    cpu = cpu_seconds(server_pid) if server_pid else 0.0
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, frames))
    out: dict[str, float | None] = {
        "frames_per_s": round(len(frames) / (time.perf_counter() - started), 2),
        "frames": len(frames),
    }
    if server_pid:
        per_frame = (cpu_seconds(server_pid) - cpu) / len(frames)
        cores = len(os.sched_getaffinity(server_pid))
        out |= {"server_cpu_ms_per_frame": round(1000 * per_frame, 1), "cores": cores,
                "frames_per_s_if_cores_are_free": round(cores / per_frame, 2) if per_frame > 0 else None}  # fmt: skip
    return out


def _stages(frames: list[np.ndarray]) -> dict[str, float]:
    """Median milliseconds per frame of the detector's stages, in this process, with the detector's
    settings as the environment gives them (minimum face, thresholds, threads per search), which are
    the service's defaults unless LRFACE_DETECT_* is set."""
    config = DetectionConfig.from_settings(Settings())
    detector = MtcnnDetector(min_face_px=config.min_face_px, thresholds=config.thresholds, threads=config.threads)
    detector.detect(frames[0])  # warm-up
    times = [detector.detect_timed(f)[1] for f in frames]
    fields = ("pnet", "rnet", "onet")
    out = {name: round(1000 * float(np.median([getattr(t, name) for t in times])), 1) for name in fields}
    out["total"] = round(sum(out.values()), 1)
    return out


def _embedding_cost(frames: list[np.ndarray], rounds: int = 4) -> dict[str, Any]:
    """Median milliseconds per frame of embedding the faces found in ``frames`` (sent as JPEG), in this
    process, as the card serves them and with each model seeing a fused face once (the card's detected
    fusion without its second views, :class:`lrface.model_card.DetectedFusion`), the two alternately
    ``rounds`` times; dlib's chips are made beforehand (a request's first model call makes them)."""
    from lrface.embedder import OnnxEmbedder
    from service.embedders import Embedders
    from service.faces import FaceDecoder, ImageItem

    settings = Settings()
    student = OnnxEmbedder(settings.model, settings.providers, settings.threads)  # as the service opens it
    embedders = Embedders.for_model(student, settings.use_teacher)
    decoder = FaceDecoder.from_settings(settings)
    found = [decoder.decode(ImageItem(encode_image(f, "JPEG"), "frame"), "true") for f in frames]

    def embed_all() -> float:
        start = time.perf_counter()
        for faces in found:
            for space in ("student", "teacher"):
                embedders.embed([f for f in faces if embedders.space_for(f) == space], space)
        return 1000 * (time.perf_counter() - start) / len(found)

    embed_all()  # dlib's chips, once
    served = embedders.routing.detected_fusion if embedders.routing is not None else None
    ways = {"as_served": served}
    if served is not None:
        ways["each_model_once"] = served.model_copy(update={"student_on_both_chips": False, "teacher_mirrored": False})
    times: dict[str, list[float]] = {name: [] for name in ways}
    for turn in range(rounds):
        for name in list(ways)[:: 1 if turn % 2 == 0 else -1]:
            if embedders.routing is not None:
                embedders.routing = embedders.routing.model_copy(update={"detected_fusion": ways[name]})
            times[name].append(embed_all())
    faces = [f for faces in found for f in faces]
    return {
        "frames": len(found),
        "faces": len(faces),
        "fused": sum(embedders.fuses(f) for f in faces),
        **{f"{name}_per_frame": round(float(np.median(t)), 1) for name, t in times.items()},
    }


SCORE_STEPS = (0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995)


def calibrate_detection_score(
    lfw_root: Path, frames: int = 100, seed: int = 1, target_false_per_frame: float = 0.1, progress: bool = True
) -> dict[str, Any]:
    """The detector's last-stage score threshold, chosen on frames built from *validation* people's
    photos (never test people): the lowest threshold whose false detections per frame are at most
    ``target_false_per_frame``; recall by size at each threshold beside it."""
    split = identity_split(lfw_root)
    names = sorted(split.val)
    reference = MtcnnDetector(min_face_px=20)
    sources = []
    for i, name in enumerate(names):
        for path in split.val[name]:
            image = load_image_file(path)
            box = photo_subject_box(image, reference)
            if box is not None:
                sources.append(SourceFace(image, box, i))
    order = np.random.default_rng(seed).permutation(len(sources))
    scenes = synthetic_frames([sources[int(k)] for k in order], frames, [s / FRAME_SCALE for s in SIZES], seed=seed)
    detector = MtcnnDetector(min_face_px=12, thresholds=(0.6, 0.7, min(SCORE_STEPS)))
    found = [detector.detect(f.pixels) for f in tqdm(scenes, desc="detecting", disable=not progress)]
    rows: dict[str, dict[str, Any]] = {}
    for threshold in SCORE_STEPS:
        false = context = 0
        hits = {s: [0, 0] for s in SIZES}
        ratios: dict[int, list[float]] = {s: [] for s in SIZES}  # found box side / pasted box side
        for scene, detections in zip(scenes, found, strict=True):
            kept = [d.box for d in detections if d.score >= threshold]
            matched = match_detections([f.box for f in scene.faces], kept)
            on_scene, in_context = false_detections(scene.faces, kept, matched)
            false += on_scene
            context += in_context
            for i, face in enumerate(scene.faces):
                size = min(SIZES, key=lambda s: abs(s - face.face_px * FRAME_SCALE))
                hits[size][0] += i in matched
                hits[size][1] += 1
                if i in matched:
                    box = kept[matched[i]]
                    ratios[size].append(max(box[2] - box[0], box[3] - box[1]) / face.face_px)
        rows[str(threshold)] = {
            "false_per_frame": round(false / len(scenes), 3),
            "other_faces_in_pasted_photos_per_frame": round(context / len(scenes), 3),
            "recall": {str(s): _percent(h, n) for s, (h, n) in hits.items()},
            # How much tighter the detector's box is on a small face than on the photo it came from
            # (why detected faces have their own routing switch: ``service.detected_routing``).
            "box_side_ratio_median": {str(s): round(float(np.median(r)), 3) for s, r in ratios.items() if r},
        }
    chosen = next((t for t in SCORE_STEPS if rows[str(t)]["false_per_frame"] <= target_false_per_frame), None)
    last = chosen if chosen is not None else max(SCORE_STEPS)
    proposals = _proposal_thresholds(scenes, last, progress)
    smallest = _min_face_sizes(scenes, (proposals["pnet_chosen"], 0.7, last), progress)
    return {"people": "validation", "frames": frames, "chosen": chosen, "by_threshold": rows, **proposals, **smallest}


PNET_STEPS = (0.6, 0.7, 0.8, 0.85, 0.9)
MIN_FACE_STEPS = (12.0, 14.0, 16.0, 18.0, 20.0)


def _detector_scan(scenes: list[Frame], detector: MtcnnDetector, label: str, progress: bool) -> dict[str, Any]:
    """One detector setting over the scenes: faces found and recall by size, false detections and CPU
    per frame (one thread), R-Net candidates."""
    hits = {s: [0, 0] for s in SIZES}
    false, cpu, candidates = 0, 0.0, []
    for scene in tqdm(scenes, desc=label, disable=not progress):
        started = time.process_time()
        found, times = detector.detect_timed(scene.pixels)
        cpu += time.process_time() - started
        candidates.append(times.candidates.get("rnet", 0))
        boxes = [d.box for d in found]
        matched = match_detections([f.box for f in scene.faces], boxes)
        false += false_detections(scene.faces, boxes, matched)[0]
        for i, face in enumerate(scene.faces):
            size = min(SIZES, key=lambda s: abs(s - face.face_px * FRAME_SCALE))
            hits[size][0] += i in matched
            hits[size][1] += 1
    return {
        "found": {str(s): h for s, (h, _) in hits.items()},
        "faces": {str(s): n for s, (_, n) in hits.items()},
        "recall": {str(s): _percent(h, n) for s, (h, n) in hits.items()},
        "false_per_frame": round(false / len(scenes), 3),
        "cpu_ms_per_frame": round(1000 * cpu / len(scenes), 1),
        "rnet_candidates_median": int(np.median(candidates)),
    }


def _min_face_sizes(scenes: list[Frame], thresholds: tuple[float, float, float], progress: bool) -> dict[str, Any]:
    """The smallest face the detector looks for (the pyramid's first level, most of P-Net's cost). MTCNN
    still finds faces somewhat below it (P-Net's 12-px window fires on a 10-px face), so a larger one can
    cost little recall. For each, with the chosen thresholds: recall by size, false detections and CPU
    per frame; chosen (:func:`choose_min_face`): the largest that finds, at every size from 16 px (the
    sizes the frame goal counts), all but at most one of the faces the best setting finds there."""
    rows = {}
    for m in MIN_FACE_STEPS:
        detector = MtcnnDetector(min_face_px=m, thresholds=thresholds, threads=1)
        rows[f"{m:g}"] = _detector_scan(scenes, detector, f"min face {m:g}", progress)
    chosen = choose_min_face({m: rows[f"{m:g}"]["found"] for m in MIN_FACE_STEPS})
    return {"min_face_chosen": chosen, "min_face_by_size": rows}


def choose_min_face(found: dict[float, dict[str, int]], from_size: int = 16, faces: int = 1) -> float:
    """The largest smallest-face setting that finds, at every face size from ``from_size``, at least as
    many faces as the setting finding the most there, less ``faces``."""
    sizes = [s for s in next(iter(found.values())) if int(s) >= from_size]
    best = {s: max(row[s] for row in found.values()) for s in sizes}
    return max((m for m, row in found.items() if all(row[s] >= best[s] - faces for s in sizes)), default=min(found))


def _proposal_thresholds(scenes: list[Frame], last: float, progress: bool) -> dict[str, Any]:
    """P-Net's threshold: most of a frame's time goes to R-Net's look at P-Net's candidates (over a
    thousand on a cluttered 1280x720 scene at MTCNN's 0.6). For each threshold, with the chosen last
    one: recall by size, false detections and CPU per frame (one thread); chosen: the highest whose
    recall at every size is within one face of MTCNN's 0.6."""
    rows = {}
    for t in PNET_STEPS:
        detector = MtcnnDetector(min_face_px=12, thresholds=(t, 0.7, last), threads=1)
        rows[str(t)] = _detector_scan(scenes, detector, f"P-Net {t}", progress)
    base = rows[str(PNET_STEPS[0])]["found"]
    kept = [t for t in PNET_STEPS if all(base[s] - rows[str(t)]["found"][s] <= 1 for s in base)]
    return {"pnet_chosen": max(kept), "pnet_by_threshold": rows}
