"""The torch-free MTCNN (lrface/detection.py) against facenet-pytorch's own MTCNN, plus its limits.

Parity tolerance: the same faces (count), each box and landmark within 0.5 px and each score within
1e-4 of facenet-pytorch's, matched by IoU >= 0.99. Our resampling uses exactly the bins of torch's
area interpolation (adaptive average pooling, checked below to 1e-5) from integer sums, and ONNX
Runtime matches torch to ~2e-6 on every network (``models/mtcnn/card.json``), so what remains is
float32 rounding in another summation order: observed differences are ~1e-4 px. 0.5 px leaves room
for other CPU kernels while still catching a change of the pipeline that moves a box or landmark by
a pixel (dropping the +1 of the R-Net/O-Net box regression, or the -1 of the landmarks, fails both
parity tests).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lrface.detection import (
    MAX_DETECT_PIXELS,
    MAX_ONET_INPUTS,
    MAX_RNET_INPUTS,
    Detection,
    DetectionInputError,
    DetectorUnavailable,
    MtcnnDetector,
    area_crops,
    nms,
    pyramid_level,
    summed_area_table,
)
from lrface.detection_bench import paste_faces, textured_background

BOX_TOLERANCE_PX = 0.5
LANDMARK_TOLERANCE_PX = 0.5
SCORE_TOLERANCE = 1e-4
MIN_FACE = 12.0
THRESHOLDS = (0.6, 0.7, 0.7)
FACTOR = 0.709
LFW_PEOPLE = (
    "Aaron_Eckhart",
    "Colin_Powell",
    "Gloria_Macapagal_Arroyo",
    "Serena_Williams",
    "Tony_Blair",
    "Jennifer_Lopez",
)


@pytest.fixture(scope="module")
def detector() -> MtcnnDetector:
    return MtcnnDetector(min_face_px=MIN_FACE, thresholds=THRESHOLDS, factor=FACTOR, threads=2)


@pytest.fixture(scope="module")
def reference() -> Callable[[float], Any]:
    """facenet-pytorch's MTCNN with the same settings, for a given minimum face."""
    pytest.importorskip("torch")
    facenet = pytest.importorskip("facenet_pytorch")
    return lambda min_face: facenet.MTCNN(
        min_face_size=min_face, thresholds=list(THRESHOLDS), factor=FACTOR, keep_all=True
    )


def _lfw_image(lfw_root: Path, name: str) -> np.ndarray:
    return np.asarray(Image.open(lfw_root / "images" / name / f"{name}_0001.jpg").convert("RGB"))


def _iou(a: tuple[float, ...] | np.ndarray, b: tuple[float, ...] | np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union)


def _assert_same_faces(ours: list[Detection], reference: Any, image: np.ndarray) -> None:
    boxes, probs, points = reference.detect(image, landmarks=True)
    expected = [] if boxes is None else list(zip(boxes, probs, points, strict=True))
    assert len(ours) == len(expected)
    for box, prob, landmarks in expected:
        match = max(ours, key=lambda d: _iou(d.box, box))
        assert _iou(match.box, box) >= 0.99
        assert np.abs(np.array(match.box) - box).max() <= BOX_TOLERANCE_PX
        assert np.abs(np.array(match.landmarks) - landmarks).max() <= LANDMARK_TOLERANCE_PX
        assert abs(match.score - prob) <= SCORE_TOLERANCE


def _frame_with_faces(
    lfw_root: Path, sides: list[int], height: int = 320, width: int = 480, seed: int = 3
) -> tuple[np.ndarray, list[tuple[float, float, int]]]:
    faces = [_lfw_image(lfw_root, name) for name in LFW_PEOPLE[: len(sides)]]
    return paste_faces(textured_background(height, width, seed), faces, sides, seed)


def test_same_faces_as_facenet_pytorch_on_lfw(reference: Callable[[float], Any], lfw_root: Path) -> None:
    # LFW faces are ~100 px: a 20-px minimum (facenet-pytorch's default) keeps the reference quick.
    ours, theirs = MtcnnDetector(min_face_px=20, threads=2), reference(20)
    found = 0
    for name in LFW_PEOPLE:
        image = _lfw_image(lfw_root, name)
        faces = ours.detect(image)
        _assert_same_faces(faces, theirs, image)
        found += len(faces)
    assert found >= len(LFW_PEOPLE)  # every LFW photo shows its person


def test_same_faces_as_facenet_pytorch_on_a_frame_of_small_faces(
    detector: MtcnnDetector, reference: Callable[[float], Any], lfw_root: Path
) -> None:
    frame, placed = _frame_with_faces(lfw_root, [16, 24, 32, 40, 48])
    ours = detector.detect(frame)
    _assert_same_faces(ours, reference(MIN_FACE), frame)
    assert len(ours) >= len(placed)


def test_a_face_pasted_at_16_px_is_found(detector: MtcnnDetector, lfw_root: Path) -> None:
    frame, [(cx, cy, side)] = _frame_with_faces(lfw_root, [16], height=200, width=300)
    near = [
        d
        for d in detector.detect(frame)
        if abs((d.box[0] + d.box[2]) / 2 - cx) <= 5 and abs((d.box[1] + d.box[3]) / 2 - cy) <= 5
    ]
    assert near, "the 16-px face was not found"
    assert 10 <= near[0].side <= 26 and near[0].score > THRESHOLDS[2]
    left, top, right, bottom = near[0].box
    assert all(left <= x <= right and top <= y <= bottom for x, y in near[0].landmarks)


def test_faces_come_largest_first_and_max_faces_keeps_the_largest(lfw_root: Path) -> None:
    frame, _ = _frame_with_faces(lfw_root, [16, 24, 32, 48])
    faces = MtcnnDetector(threads=2).detect(frame)
    assert len(faces) >= 4
    assert [d.side for d in faces] == sorted((d.side for d in faces), reverse=True)
    (largest,) = MtcnnDetector(max_faces=1, threads=2).detect(frame)
    assert largest == faces[0]


def test_blank_and_noise_give_no_face(detector: MtcnnDetector) -> None:
    rng = np.random.default_rng(0)
    assert detector.detect(np.full((240, 320, 3), 128, dtype=np.uint8)) == []
    assert detector.detect(rng.integers(0, 256, size=(240, 320, 3), dtype=np.uint8)) == []
    assert detector.detect(np.zeros((8, 8, 3), dtype=np.uint8)) == []  # below P-Net's window: no pyramid


def test_a_frame_of_noise_stays_within_the_candidate_caps() -> None:
    rng = np.random.default_rng(1)
    speckle = np.kron(rng.integers(0, 2, size=(240, 320, 3), dtype=np.uint8) * 255, np.ones((2, 2, 1), np.uint8))
    capped = MtcnnDetector(threads=2)
    capped.max_pnet_boxes_per_level, capped.max_rnet_inputs, capped.max_onet_inputs = 200, 300, 20
    _, times = capped.detect_timed(speckle)  # uncapped, about 1,200 boxes reach R-Net here
    assert times.candidates["rnet"] == 300 and times.candidates["onet"] <= 20
    assert MAX_RNET_INPUTS <= 2000 and MAX_ONET_INPUTS <= 1000  # the defaults bound memory and time too


def test_concurrent_calls_give_the_serial_answer(detector: MtcnnDetector, lfw_root: Path) -> None:
    images = [_lfw_image(lfw_root, name) for name in LFW_PEOPLE[:4]]
    serial = [detector.detect(image) for image in images]
    results: dict[int, list[Detection]] = {}

    def work(i: int) -> None:
        results[i] = detector.detect(images[i % len(images)])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(results[i] == serial[i % len(images)] for i in range(8))


def test_area_resampling_matches_torch_area_interpolation() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    table = summed_area_table(image)
    as_torch = torch.from_numpy(image).permute(2, 0, 1)[None].float()

    def expected(region: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
        x0, y0, x1, y1 = region
        pooled = torch.nn.functional.interpolate(as_torch[:, :, y0:y1, x0:x1], size=size, mode="area")
        return ((pooled - 127.5) * 0.0078125).numpy()

    for out in [(38, 54), (26, 37), (12, 12), (5, 7)]:  # up by one pixel (scale 1), then down
        np.testing.assert_allclose(pyramid_level(table, *out), expected((0, 0, 53, 37), out), atol=1e-5)
    regions = np.array([[0, 0, 53, 37], [3, 4, 20, 30], [10, 2, 17, 9], [40, 30, 53, 37]])
    for size in (24, 48):
        crops = area_crops(table, regions, size)
        for crop, region in zip(crops, regions, strict=True):
            np.testing.assert_allclose(crop[None], expected(tuple(region), (size, size)), atol=1e-5)


def _greedy_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, by_min: bool, extra: float) -> list[int]:
    kept: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        a = boxes[i]
        ok = True
        for j in kept:
            b = boxes[j]
            inter = max(min(a[2], b[2]) - max(a[0], b[0]) + extra, 0) * max(
                min(a[3], b[3]) - max(a[1], b[1]) + extra, 0
            )
            area_a = (a[2] - a[0] + extra) * (a[3] - a[1] + extra)
            area_b = (b[2] - b[0] + extra) * (b[3] - b[1] + extra)
            if inter / (min(area_a, area_b) if by_min else area_a + area_b - inter) > threshold:
                ok = False
                break
        if ok:
            kept.append(int(i))
    return kept


@pytest.mark.parametrize(("by_min", "plus_one"), [(False, False), (True, True)])
def test_blocked_nms_equals_plain_greedy_nms(by_min: bool, plus_one: bool) -> None:
    rng = np.random.default_rng(4)
    corner = rng.uniform(0, 300, size=(600, 2))
    side = rng.uniform(5, 60, size=(600, 1))
    boxes = np.hstack([corner, corner + side]).astype(np.float32)
    scores = rng.uniform(size=600).astype(np.float32)
    for threshold in (0.5, 0.7):
        got = nms(boxes, scores, threshold, by_min=by_min, plus_one=plus_one).tolist()
        assert got == _greedy_nms(boxes, scores, threshold, by_min, 1.0 if plus_one else 0.0)


def test_bad_input_is_refused_with_a_clear_error(detector: MtcnnDetector) -> None:
    with pytest.raises(DetectionInputError, match="RGB image"):
        detector.detect(np.zeros((20, 20), dtype=np.uint8))
    with pytest.raises(DetectionInputError, match="uint8"):
        detector.detect(np.zeros((20, 20, 3), dtype=np.float32))
    too_big = np.broadcast_to(np.zeros((1, 1, 3), dtype=np.uint8), (2161, MAX_DETECT_PIXELS // 2160 + 1, 3))
    with pytest.raises(DetectionInputError, match="downscale"):
        detector.detect(too_big)
    with pytest.raises(DetectionInputError, match="minimum face"):  # a 2-px minimum face: a 6x larger pyramid
        MtcnnDetector(min_face_px=2, threads=1).detect(np.zeros((1000, 1000, 3), dtype=np.uint8))


def test_missing_model_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(DetectorUnavailable, match="pnet.onnx"):
        MtcnnDetector(tmp_path)


def test_files_other_than_the_card_describes_are_refused(tmp_path: Path) -> None:
    import json
    import shutil

    from lrface.detection import BUNDLED_DETECTOR_DIR

    shutil.copytree(BUNDLED_DETECTOR_DIR, tmp_path / "mtcnn")
    card = json.loads((tmp_path / "mtcnn" / "card.json").read_text())
    card["files"]["rnet.onnx"]["sha256"] = "0" * 64
    (tmp_path / "mtcnn" / "card.json").write_text(json.dumps(card))
    with pytest.raises(DetectorUnavailable, match="rnet.onnx"):
        MtcnnDetector(tmp_path / "mtcnn")
