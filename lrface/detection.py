"""MTCNN face detection in numpy + ONNX Runtime (no torch), for faces from 12 px up in whole frames.

The three networks (``models/mtcnn/{pnet,rnet,onet}.onnx``) are facenet-pytorch's MTCNN weights,
exported by ``lrface export-detector`` (``training/detector_export.py``). The pipeline follows
facenet-pytorch's ``MTCNN.detect`` step for step, so both give the same faces:

1. an image pyramid from ``12 / min_face_px`` down by ``factor`` until the short side is under 12 px;
   each level is the frame area-averaged to ``int(side * scale + 1)`` pixels;
2. P-Net on each level: every 12x12 window (stride 2) scoring ``>= thresholds[0]`` gives a box,
   NMS at IoU 0.5 within the level and 0.7 across levels, box regression, squared;
3. R-Net on each box's crop (the box clipped to the frame, area-averaged to 24x24): score
   ``> thresholds[1]``, NMS 0.7, regression, squared;
4. O-Net on 48x48 crops: score ``> thresholds[2]``, 5 landmarks, regression, NMS 0.7 on the
   intersection over the smaller box.

Every resampling is area averaging with the bins of ``torch.nn.functional.interpolate(mode="area")``
(adaptive average pooling), computed exactly from one integer summed-area table of the frame: one
table per call serves the whole pyramid and every crop, vectorised, without a per-crop resize.

Memory is bounded: frames above :data:`MAX_DETECT_PIXELS` are refused (downscale them first), and
at most :data:`MAX_PNET_BOXES_PER_LEVEL`, :data:`MAX_RNET_INPUTS` and :data:`MAX_ONET_INPUTS`
candidates (the highest scoring) go through each stage, so a frame of noise costs no more than a
bounded amount of work. A detector is safe to share between threads (ONNX Runtime sessions are, and
``detect`` keeps its state on the stack).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lrface.model_card import file_sha256
from lrface.settings import PROJECT_ROOT

BUNDLED_DETECTOR_DIR = PROJECT_ROOT / "models" / "mtcnn"
NETWORK_FILES = ("pnet.onnx", "rnet.onnx", "onet.onnx")
CARD_FILE = "card.json"

DEFAULT_MIN_FACE_PX = 12.0
DEFAULT_THRESHOLDS = (0.6, 0.7, 0.7)
DEFAULT_FACTOR = 0.709

# 4K UHD. Also keeps the int32 summed-area table exact (255 * pixels < 2**31).
MAX_DETECT_PIXELS = 3840 * 2160
# The pyramid's first level (the frame at 12 / min_face_px, one pixel more each way).
MAX_PYRAMID_PIXELS = 3841 * 2161
# Candidates kept (highest scores) before each stage. The benchmark frame (8 faces on clutter) sends
# ~500 boxes to R-Net and ~80 to O-Net; a frame of binary noise can send thousands.
MAX_PNET_BOXES_PER_LEVEL = 2000
MAX_RNET_INPUTS = 1500
MAX_ONET_INPUTS = 500

_PNET_WINDOW = 12
_PNET_STRIDE = 2
_NORM_SHIFT = np.float32(127.5)
_NORM_SCALE = np.float32(0.0078125)


class DetectorUnavailable(RuntimeError):
    """The detector's model files are missing or unreadable."""


class DetectionInputError(ValueError):
    """The image cannot go through the detector; the message says why."""


@dataclass(frozen=True)
class Detection:
    """One face: MTCNN's box, O-Net's probability and the 5 landmarks, in image pixels."""

    box: tuple[float, float, float, float]  # left, top, right, bottom (may extend past the image)
    score: float  # O-Net face probability
    # 5 (x, y): left eye, right eye, nose, left mouth corner, right mouth corner ("left": image left)
    landmarks: tuple[tuple[float, float], ...]

    @property
    def side(self) -> float:
        """The box's larger side in pixels."""
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])


def subject_box(detections: Sequence[Detection], width: int, height: int) -> tuple[float, float, float, float] | None:
    """A portrait's subject among the faces found: the largest face (by area) covering the image
    centre (LFW's photos are centred on their subject), else the largest face; None without faces."""
    if not detections:
        return None

    def area(d: Detection) -> float:
        return (d.box[2] - d.box[0]) * (d.box[3] - d.box[1])

    centre = [d for d in detections if d.box[0] <= width / 2 <= d.box[2] and d.box[1] <= height / 2 <= d.box[3]]
    return max(centre or detections, key=area).box


@dataclass
class StageTimes:
    """Seconds spent per stage of one ``detect`` call (for benchmarks)."""

    pnet: float = 0.0  # summed-area table, pyramid, P-Net and its NMS
    pnet_onnx: float = 0.0  # of which inside ONNX Runtime
    rnet: float = 0.0
    onet: float = 0.0
    candidates: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return self.pnet + self.rnet + self.onet


def pyramid_scales(height: int, width: int, min_face_px: float, factor: float) -> list[float]:
    """The pyramid's scales: from ``12 / min_face_px`` while the scaled short side is >= 12 px."""
    scale = _PNET_WINDOW / min_face_px
    short = min(height, width) * scale
    scales: list[float] = []
    while short >= _PNET_WINDOW:
        scales.append(scale)
        scale *= factor
        short *= factor
    return scales


def summed_area_table(image: np.ndarray) -> np.ndarray:
    """``(H + 1, W + 1, 3)`` int32 table: ``t[y, x, c]`` is the sum of channel ``c`` over ``[0, y) x [0, x)``."""
    height, width = image.shape[:2]
    table = np.zeros((height + 1, width + 1, 3), dtype=np.int32)
    inner = table[1:, 1:]
    np.cumsum(image, axis=1, dtype=np.int32, out=inner)
    # Row by row down the frame: numpy's cumsum along the first axis is several times slower.
    for y in range(1, height):
        np.add(inner[y - 1], inner[y], out=inner[y])
    return table


def _bins(start: np.ndarray, length: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Adaptive-average-pool bins of ``size`` outputs over ``[start, start + length)`` (per row of
    ``start``/``length``): ``floor(i * L / size)`` to ``ceil((i + 1) * L / size)``, as torch's."""
    i = np.arange(size, dtype=np.int64)
    length = length[:, None]
    lo = start[:, None] + (i * length) // size
    hi = start[:, None] + ((i + 1) * length + size - 1) // size
    return lo, hi


def _normalised(sums: np.ndarray, area: np.ndarray) -> np.ndarray:
    mean = sums.astype(np.float32) / area.astype(np.float32)
    return (mean - _NORM_SHIFT) * _NORM_SCALE


def pyramid_level(table: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """The whole frame area-averaged to ``out_h x out_w``, normalised, as a ``(1, 3, h, w)`` batch."""
    height, width = table.shape[0] - 1, table.shape[1] - 1
    (y0,), (y1,) = _bins(np.zeros(1, np.int64), np.array([height]), out_h)
    (x0,), (x1,) = _bins(np.zeros(1, np.int64), np.array([width]), out_w)
    rows = table[y1] - table[y0]  # (out_h, W + 1, 3): sums over each row bin, cumulative along x
    sums = np.take(rows, x1, axis=1) - np.take(rows, x0, axis=1)  # (out_h, out_w, 3)
    scale = _NORM_SCALE / ((y1 - y0)[:, None] * (x1 - x0)[None, :]).astype(np.float32)
    out = np.empty((1, 3, out_h, out_w), dtype=np.float32)
    np.multiply(sums.transpose(2, 0, 1), scale, out=out[0])
    out -= _NORM_SHIFT * _NORM_SCALE
    return out


def area_crops(table: np.ndarray, regions: np.ndarray, size: int) -> np.ndarray:
    """Each region ``(x0, y0, x1, y1)`` (integer, half-open, inside the frame) area-averaged to
    ``size x size`` and normalised: ``(N, 3, size, size)`` float32, all crops at once."""
    stride = table.shape[1]
    flat = table.reshape(-1, 3)
    x0, y0, x1, y1 = (regions[:, k].astype(np.int64) for k in range(4))
    r0, r1 = _bins(y0, y1 - y0, size)  # (N, size)
    c0, c1 = _bins(x0, x1 - x0, size)
    top, bottom = (r0 * stride)[:, :, None], (r1 * stride)[:, :, None]
    left, right = c0[:, None, :], c1[:, None, :]
    sums = (
        np.take(flat, bottom + right, axis=0)
        - np.take(flat, top + right, axis=0)
        - np.take(flat, bottom + left, axis=0)
        + np.take(flat, top + left, axis=0)
    )  # (N, size, size, 3)
    area = ((r1 - r0)[:, :, None] * (c1 - c0)[:, None, :])[..., None]
    return np.ascontiguousarray(_normalised(sums, area).transpose(0, 3, 1, 2))


def _overlap(a: np.ndarray, b: np.ndarray, extra: np.float32, by_min: bool) -> np.ndarray:
    """``(len(a), len(b))`` overlaps of boxes ``(x1, y1, x2, y2)``: IoU, or over the smaller box."""
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + extra
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + extra
    inter = np.maximum(w, 0) * np.maximum(h, 0)
    area_a = (a[:, 2] - a[:, 0] + extra) * (a[:, 3] - a[:, 1] + extra)
    area_b = (b[:, 2] - b[:, 0] + extra) * (b[:, 3] - b[:, 1] + extra)
    smaller = np.minimum(area_a[:, None], area_b[None, :])
    denominator = smaller if by_min else area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / denominator


def nms(
    boxes: np.ndarray, scores: np.ndarray, threshold: float, *, by_min: bool = False, plus_one: bool = False
) -> np.ndarray:
    """Greedy non-maximum suppression; indices kept, best score first. A box is dropped when its
    overlap with a kept one exceeds ``threshold``: intersection over union, or over the smaller box
    with ``by_min``. ``plus_one`` counts box sides inclusively (``x2 - x1 + 1``), as MTCNN's last
    stage does. Vectorised by blocks of the score order: a block is first checked against every box
    kept so far, then greedily within itself from its overlap matrix."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    extra = np.float32(1.0 if plus_one else 0.0)
    order = np.argsort(-scores, kind="stable")
    ordered = boxes[order, :4]
    kept = np.zeros(0, dtype=np.int64)
    block = 256
    for start in range(0, len(order), block):
        candidates = np.arange(start, min(start + block, len(order)))
        if kept.size:
            candidates = candidates[~(_overlap(ordered[kept], ordered[candidates], extra, by_min) > threshold).any(0)]
        if not candidates.size:
            continue
        clash = _overlap(ordered[candidates], ordered[candidates], extra, by_min) > threshold
        dropped = np.zeros(len(candidates), dtype=bool)
        local: list[int] = []
        for i in range(len(candidates)):
            if not dropped[i]:
                local.append(i)
                dropped |= clash[i]
        kept = np.concatenate([kept, candidates[local]])
    return order[kept]


def _top(scores: np.ndarray, limit: int) -> np.ndarray:
    """Indices of the ``limit`` highest scores, in their original order (all when fewer)."""
    if len(scores) <= limit:
        return np.arange(len(scores))
    return np.sort(np.argpartition(-scores, limit - 1)[:limit])


def _square(boxes: np.ndarray) -> np.ndarray:
    """Boxes ``(x1, y1, x2, y2)`` made square on their larger side, about the same centre."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    x1 = boxes[:, 0] + w * np.float32(0.5) - side * np.float32(0.5)
    y1 = boxes[:, 1] + h * np.float32(0.5) - side * np.float32(0.5)
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1)


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """R-Net/O-Net box regression: offsets in units of the inclusive box side (``x2 - x1 + 1``)."""
    w = boxes[:, 2] - boxes[:, 0] + np.float32(1.0)
    h = boxes[:, 3] - boxes[:, 1] + np.float32(1.0)
    return boxes[:, :4] + offsets * np.stack([w, h, w, h], axis=1)


def _crop_regions(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Each box truncated to integers and clipped to the frame: half-open regions
    ``(x0, y0, x1, y1)`` and a mask of the boxes whose region is not empty (MTCNN's ``pad``, which
    clips rather than pads)."""
    b = np.trunc(boxes[:, :4]).astype(np.int64)
    x0 = np.maximum(b[:, 0], 1) - 1
    y0 = np.maximum(b[:, 1], 1) - 1
    x1 = np.minimum(b[:, 2], width)
    y1 = np.minimum(b[:, 3], height)
    valid = (x1 > x0) & (y1 > y0)
    return np.stack([x0, y0, x1, y1], axis=1), valid


class MtcnnDetector:
    """MTCNN over ONNX Runtime. ``detect`` takes an ``(H, W, 3)`` uint8 RGB frame and returns the faces
    largest first (at most ``max_faces``, the smallest dropped)."""

    # Candidate caps (highest scores kept); class attributes so a test can lower them.
    max_pnet_boxes_per_level = MAX_PNET_BOXES_PER_LEVEL
    max_rnet_inputs = MAX_RNET_INPUTS
    max_onet_inputs = MAX_ONET_INPUTS
    # ONNX Runtime's intra-op threads spin while they wait for work by default; on 2 cores shared
    # with the rest of the service that costs more than it saves (`python -m lrface.detection_bench`
    # on 2 pinned Xeon cores: 187 vs 227 ms a 1280x720 frame at min face 16, 2 threads), so they sleep.
    allow_spinning = False

    def __init__(
        self,
        model_dir: Path = BUNDLED_DETECTOR_DIR,
        min_face_px: float = DEFAULT_MIN_FACE_PX,
        thresholds: tuple[float, float, float] = DEFAULT_THRESHOLDS,
        factor: float = DEFAULT_FACTOR,
        max_faces: int = 100,
        threads: int = 0,
        providers: list[str] | None = None,
    ) -> None:
        if not min_face_px >= 1.0:
            raise ValueError(f"min_face_px must be at least 1, got {min_face_px}")
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must lie in (0, 1), got {factor}")
        if len(thresholds) != 3 or not all(0.0 <= t <= 1.0 for t in thresholds):
            raise ValueError(f"thresholds must be three probabilities, got {thresholds}")
        if max_faces < 1:
            raise ValueError(f"max_faces must be at least 1, got {max_faces}")
        self.model_dir = Path(model_dir)
        self.min_face_px = float(min_face_px)
        self.thresholds = (float(thresholds[0]), float(thresholds[1]), float(thresholds[2]))
        self.factor = float(factor)
        self.max_faces = int(max_faces)
        self._pnet, self._rnet, self._onet = self._sessions(threads, providers)

    def _sessions(self, threads: int, providers: list[str] | None) -> tuple[Any, Any, Any]:
        import onnxruntime as ort

        paths = [self.model_dir / name for name in NETWORK_FILES]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise DetectorUnavailable(
                f"MTCNN model files missing: {', '.join(missing)} (they ship in models/mtcnn; "
                "`lrface export-detector` rebuilds them from facenet-pytorch)"
            )
        self._check_card(paths)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not self.allow_spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        chosen = providers or ["CPUExecutionProvider"]
        try:
            sessions = [ort.InferenceSession(str(p), options, providers=chosen) for p in paths]
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise DetectorUnavailable(f"cannot load the MTCNN networks from {self.model_dir}: {exc}") from None
        return sessions[0], sessions[1], sessions[2]

    def _check_card(self, paths: Sequence[Path]) -> None:
        """Where ``card.json`` lists SHA-256 digests, the files must be the ones it describes."""
        card_path = self.model_dir / CARD_FILE
        if not card_path.is_file():
            return
        try:
            files = json.loads(card_path.read_text()).get("files", {})
        except (OSError, ValueError, AttributeError) as exc:
            raise DetectorUnavailable(f"unreadable detector card {card_path}: {exc}") from None
        for path in paths:
            entry = files.get(path.name) if isinstance(files, dict) else None
            expected = entry.get("sha256") if isinstance(entry, dict) else None
            if expected and file_sha256(path) != expected:
                raise DetectorUnavailable(f"{path} is not the network {card_path} describes (SHA-256 differs)")

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in an ``(H, W, 3)`` uint8 RGB image, largest first."""
        return self._run(image, None)

    def detect_timed(self, image: np.ndarray) -> tuple[list[Detection], StageTimes]:
        """``detect`` with the time spent in each stage and the candidates reaching each."""
        times = StageTimes()
        return self._run(image, times), times

    def _run(self, image: np.ndarray, times: StageTimes | None) -> list[Detection]:
        image = self._checked(image)
        height, width = image.shape[:2]
        start = time.perf_counter()
        table = summed_area_table(image)
        boxes = self._propose(table, height, width, times)
        rnet_start = time.perf_counter()
        rnet_in = len(boxes)
        if len(boxes):
            boxes = self._refine(table, boxes, height, width)
        onet_start = time.perf_counter()
        onet_in = len(boxes)
        faces = self._output(table, boxes, height, width) if len(boxes) else []
        if times is not None:
            end = time.perf_counter()
            times.pnet, times.rnet, times.onet = rnet_start - start, onet_start - rnet_start, end - onet_start
            times.candidates = {"rnet": rnet_in, "onet": onet_in, "faces": len(faces)}
        return faces

    def _checked(self, image: np.ndarray) -> np.ndarray:
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            shape = getattr(image, "shape", type(image).__name__)
            raise DetectionInputError(f"expected an (H, W, 3) RGB image, got {shape}")
        if image.dtype != np.uint8:
            raise DetectionInputError(f"expected uint8 pixels, got {image.dtype}")
        height, width = image.shape[:2]
        if height * width > MAX_DETECT_PIXELS:
            raise DetectionInputError(
                f"{width}x{height} is above the detector's {MAX_DETECT_PIXELS} pixels: downscale the image first"
            )
        scale = _PNET_WINDOW / self.min_face_px  # above 1 (min face under 12 px) the pyramid starts larger
        if (height * scale + 1) * (width * scale + 1) > MAX_PYRAMID_PIXELS:
            raise DetectionInputError(
                f"{width}x{height} at a {self.min_face_px:g}-px minimum face needs a pyramid above "
                f"{MAX_PYRAMID_PIXELS} pixels: downscale the image or raise the minimum face"
            )
        return image

    def _propose(self, table: np.ndarray, height: int, width: int, times: StageTimes | None) -> np.ndarray:
        """P-Net over the pyramid: squared candidate boxes ``(N, 5)`` (x1, y1, x2, y2, score)."""
        levels = []
        for scale in pyramid_scales(height, width, self.min_face_px, self.factor):
            batch = pyramid_level(table, int(height * scale + 1), int(width * scale + 1))
            started = time.perf_counter()
            regression, probability = self._pnet.run(None, {"input": batch})
            if times is not None:
                times.pnet_onnx += time.perf_counter() - started
            candidates = self._windows(regression[0], probability[0, 1], scale)
            if len(candidates):
                candidates = candidates[_top(candidates[:, 4], self.max_pnet_boxes_per_level)]
                levels.append(candidates[nms(candidates[:, :4], candidates[:, 4], 0.5)])
        if not levels:
            return np.zeros((0, 5), dtype=np.float32)
        boxes = np.concatenate(levels)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        # P-Net's regression is in units of the (exclusive) window side.
        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        moved = boxes[:, :4] + boxes[:, 5:9] * np.stack([w, h, w, h], axis=1)
        out = np.concatenate([_square(moved), boxes[:, 4:5]], axis=1)
        return out[_top(out[:, 4], self.max_rnet_inputs)]

    def _windows(self, regression: np.ndarray, probability: np.ndarray, scale: float) -> np.ndarray:
        """The P-Net windows scoring at least the first threshold, mapped back to the frame:
        ``(N, 9)`` x1, y1, x2, y2, score and 4 regression offsets, in row-major window order."""
        rows, cols = np.nonzero(probability >= self.thresholds[0])
        if rows.size == 0:
            return np.zeros((0, 9), dtype=np.float32)
        s = np.float32(scale)
        x = cols.astype(np.float32) * _PNET_STRIDE
        y = rows.astype(np.float32) * _PNET_STRIDE
        corners = [
            np.floor((x + 1) / s),
            np.floor((y + 1) / s),
            np.floor((x + _PNET_WINDOW) / s),
            np.floor((y + _PNET_WINDOW) / s),
        ]
        return np.column_stack([*corners, probability[rows, cols], regression[:, rows, cols].T]).astype(np.float32)

    def _refine(self, table: np.ndarray, boxes: np.ndarray, height: int, width: int) -> np.ndarray:
        """R-Net: rescored, suppressed, regressed and squared boxes ``(N, 5)``."""
        regions, valid = _crop_regions(boxes, width, height)
        boxes, regions = boxes[valid], regions[valid]
        if not len(boxes):
            return boxes
        regression, probability = self._rnet.run(None, {"input": area_crops(table, regions, 24)})
        score = probability[:, 1]
        passed = score > self.thresholds[1]
        boxes = np.column_stack([boxes[passed, :4], score[passed]])
        regression = regression[passed]
        keep = nms(boxes[:, :4], boxes[:, 4], 0.7)
        boxes, regression = boxes[keep], regression[keep]
        out = np.column_stack([_square(_regress(boxes, regression)), boxes[:, 4]]).astype(np.float32)
        return out[_top(out[:, 4], self.max_onet_inputs)]

    def _output(self, table: np.ndarray, boxes: np.ndarray, height: int, width: int) -> list[Detection]:
        """O-Net: final boxes, scores and landmarks, largest first."""
        regions, valid = _crop_regions(boxes, width, height)
        boxes, regions = boxes[valid], regions[valid]
        if not len(boxes):
            return []
        regression, landmarks, probability = self._onet.run(None, {"input": area_crops(table, regions, 48)})
        score = probability[:, 1]
        passed = score > self.thresholds[2]
        boxes, score = boxes[passed, :4], score[passed]
        regression, landmarks = regression[passed], landmarks[passed]
        w = boxes[:, 2:3] - boxes[:, 0:1] + np.float32(1.0)
        h = boxes[:, 3:4] - boxes[:, 1:2] + np.float32(1.0)
        xs = w * landmarks[:, :5] + boxes[:, 0:1] - np.float32(1.0)
        ys = h * landmarks[:, 5:] + boxes[:, 1:2] - np.float32(1.0)
        final = _regress(boxes, regression)
        keep = nms(final, score, 0.7, by_min=True, plus_one=True)
        final, score, xs, ys = final[keep], score[keep], xs[keep], ys[keep]
        area = (final[:, 2] - final[:, 0]) * (final[:, 3] - final[:, 1])
        order = np.argsort(-area, kind="stable")[: self.max_faces]
        return [
            Detection(
                box=(float(final[i, 0]), float(final[i, 1]), float(final[i, 2]), float(final[i, 3])),
                score=float(score[i]),
                landmarks=tuple((float(xs[i, k]), float(ys[i, k])) for k in range(5)),
            )
            for i in order
        ]
