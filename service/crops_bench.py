"""The small-crop benchmark (``lrface bench crops``): LFW test people enrolled through the HTTP API as
for ``lrface bench frames`` (one photo each), then their other photos cut around the subject's face
three ways, shrunk to 16-32 px and sent to ``/identify`` as PNG images, once as the service takes them
by default (``detect=auto``) and once taken whole (``detect=false``, as every small image was before
the service searched them):

- ``aligned``: dlib's aligned chip (the framing the models were trained on: a chip, taken whole);
- ``tight``: the square of MTCNN's box (what a face detector's box, cut out, gives: ``input: crop``);
- ``framed``: the framing rule's square around that box (:func:`lrface.preprocessing.frame_face`).

Reported by side and cut: rank-1 both ways and how the service took the images (``input``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from tqdm import tqdm

from lrface.data.lfw import identity_split
from lrface.detection import MtcnnDetector
from lrface.preprocessing import encode_image, frame_face, resize, square_box
from service.frames_bench import enrol_test_people, source_faces

SIDES = (16, 20, 24, 32)
CUTS = ("aligned", "tight", "framed")


def _cut(image: np.ndarray, box: Sequence[float]) -> np.ndarray | None:
    """The square around ``box`` (:func:`lrface.preprocessing.square_box`), None where it leaves the image."""
    left, top, right, bottom = square_box(box, image.shape[1], image.shape[0])
    inside = left >= 0 and top >= 0 and right <= image.shape[1] and bottom <= image.shape[0]
    return image[top:bottom, left:right] if inside else None


def bench_crops(
    url: str,
    lfw_root: Path,
    probes: int = 300,
    seed: int = 0,
    api_key: str | None = None,
    progress: bool = True,
    sides: Sequence[int] = SIDES,
    people: int | None = None,
) -> dict[str, Any]:
    """``people``: only the first so many test people (a quick check); all of them by default."""
    split = identity_split(lfw_root)
    names = sorted(split.test)[:people]
    detector = MtcnnDetector(min_face_px=20)  # the subject's box in each photo
    headers = {"X-API-Key": api_key} if api_key else {}
    results: dict[str, Any] = {"people_enrolled": len(names)}
    with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
        results["enrol_s"], results["enrolled_with_a_box"] = enrol_test_people(
            client, split.test, names, detector, progress
        )
        # shuffled: the first ``probes`` whose cuts all lie inside the photo
        sources, chips = source_faces(split.test, names, detector, seed, limit=3 * probes)
        cuts: list[tuple[int, dict[str, np.ndarray]]] = []
        for source, aligned in zip(sources, chips, strict=True):
            tight, framed = (_cut(source.image, b) for b in (source.box, frame_face(source.box)))
            if tight is not None and framed is not None:
                cuts.append((source.person, {"aligned": aligned, "tight": tight, "framed": framed}))
            if len(cuts) == probes:
                break
        results["probes"] = len(cuts)
        by_side: dict[str, dict[str, Any]] = {}
        for side in sides:
            by_side[str(side)] = {}
            for cut in CUTS:
                hits = {"auto": 0, "whole": 0}
                taken: dict[str, int] = {}
                for person, images in tqdm(cuts, desc=f"{side} px {cut}", disable=not progress):
                    data = encode_image(resize(images[cut], side), "PNG")
                    for way, form in (("auto", {}), ("whole", {"detect": "false"})):
                        answer = client.post("/identify", files={"image": ("crop.png", data, "image/png")},
                                             data={**form, "top_k": "1"})  # fmt: skip
                        answer.raise_for_status()
                        found = answer.json()
                        hits[way] += bool(found["matches"]) and found["matches"][0]["subject_id"] == f"p{person:04d}"
                        if way == "auto":
                            taken[found["input"]] = taken.get(found["input"], 0) + 1
                by_side[str(side)][cut] = {
                    "rank1_auto": round(100 * hits["auto"] / len(cuts), 1),
                    "rank1_whole": round(100 * hits["whole"] / len(cuts), 1),
                    "input_auto": taken,
                }
        results["by_side"] = by_side
    return results
