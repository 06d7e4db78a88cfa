"""Synthetic camera frames for the frame benchmark: LFW test faces pasted at a chosen size (12-64 px,
the side of the detector's box) into textured scenes, some frames with no face at all. Each pasted
face keeps its ground-truth box and its person, so detection recall/precision by size and rank-1 of
the pasted faces can be scored.

A face is pasted with its surroundings (a square of :data:`CONTEXT` times its box, feathered at the
border so no hard photo edge outlines it), shrunk with area averaging, as a camera far away sees it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from lrface.preprocessing import resize

Box = tuple[float, float, float, float]
CONTEXT = 2.2  # pasted square: this many times the face box's side, centred on it
FEATHER = 0.2  # share of the pasted square's half-side over which it fades into the scene


@dataclass(frozen=True)
class SourceFace:
    """An HR photo of one person and the face box the detector finds in it."""

    image: np.ndarray
    box: Box
    person: int


@dataclass(frozen=True)
class PastedFace:
    box: Box  # ground truth in frame pixels (the source box, scaled and moved)
    person: int
    source: int  # index into the sources the frame was built from
    face_px: float  # the box's longer side in the frame
    region: Box  # the pasted square (the photo's context: it may hold other, unlabelled faces)


@dataclass
class Frame:
    pixels: np.ndarray  # (H, W, 3) uint8
    faces: list[PastedFace]


def textured_scene(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A cluttered background: smooth colour noise at several scales, with rectangles, lines and
    ellipses (edges and blobs a detector must not take for faces)."""
    scene = np.zeros((height, width, 3), np.float32)
    for scale in (64, 16, 4):
        small = rng.uniform(0, 255, (max(1, height // scale), max(1, width // scale), 3)).astype(np.uint8)
        layer = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC), np.float32)
        scene += layer * rng.uniform(0.15, 0.5)
    scene = np.clip(scene / scene.max() * 255, 0, 255).astype(np.uint8)
    canvas = Image.fromarray(scene)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(10, 30))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(8, width // 4)), int(rng.integers(8, height // 4))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=colour)
        elif kind == 1:
            draw.ellipse((x0, y0, x0 + w, y0 + h), fill=colour)
        else:
            draw.line((x0, y0, x0 + w, y0 + h), fill=colour, width=int(rng.integers(1, 6)))
    return np.array(canvas.filter(ImageFilter.GaussianBlur(0.7)), np.uint8)  # writable: faces go on it


def _feather_mask(side: int) -> np.ndarray:
    ramp = np.minimum(np.arange(side), np.arange(side)[::-1]) / max(1.0, FEATHER * side / 2)
    edge = np.clip(ramp, 0, 1)
    return np.minimum(edge[:, None], edge[None, :])[:, :, None]


def paste_face(frame: np.ndarray, face: SourceFace, face_px: float, at: tuple[int, int]) -> tuple[Box, Box]:
    """Paste ``face`` so its box's longer side is ``face_px`` and the pasted square's top-left is
    ``at``; returns the face's box in the frame and the pasted square."""
    left, top, right, bottom = face.box
    side = max(right - left, bottom - top)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    half = CONTEXT * side / 2
    h, w = face.image.shape[:2]
    # The source square, repeating edge pixels where it leaves the photo.
    xs = np.clip(np.arange(int(cx - half), int(cx + half)), 0, w - 1)
    ys = np.clip(np.arange(int(cy - half), int(cy + half)), 0, h - 1)
    square = face.image[ys[:, None], xs[None, :]]
    scale = face_px / side
    out_side = max(2, int(round(square.shape[0] * scale)))
    small = resize(np.ascontiguousarray(square), out_side).astype(np.float32)
    x, y = at
    under = frame[y : y + out_side, x : x + out_side].astype(np.float32)
    mask = _feather_mask(out_side)
    frame[y : y + out_side, x : x + out_side] = np.clip(mask * small + (1 - mask) * under, 0, 255).astype(np.uint8)
    ox, oy = x + (left - (cx - half)) * scale, y + (top - (cy - half)) * scale
    region = (float(x), float(y), float(x + out_side), float(y + out_side))
    return (ox, oy, ox + (right - left) * scale, oy + (bottom - top) * scale), region


def synthetic_frames(
    sources: Sequence[SourceFace],
    count: int,
    sizes: Sequence[float] = (12, 16, 20, 24, 32, 48, 64),
    width: int = 1280,
    height: int = 720,
    faces_per_frame: tuple[int, int] = (1, 6),
    empty_fraction: float = 0.15,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[Frame]:
    """``count`` frames; each source face is pasted at most once (sources are used in order, sizes
    cycle so every size gets as many faces); ``empty_fraction`` of the frames hold no face."""
    rng = np.random.default_rng(seed)
    frames, next_source, next_size = [], 0, 0
    for index in range(count):
        pixels = textured_scene(width, height, rng)
        faces: list[PastedFace] = []
        wanted = 0 if rng.random() < empty_fraction else int(rng.integers(faces_per_frame[0], faces_per_frame[1] + 1))
        taken: list[tuple[int, int, int]] = []  # pasted squares (x, y, side), kept apart
        for _ in range(wanted):
            if next_source >= len(sources):
                break
            face_px = float(sizes[next_size % len(sizes)])
            side = int(round(CONTEXT * face_px)) + 2
            for _attempt in range(50):
                x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
                if all(x + side <= tx or tx + ts <= x or y + side <= ty or ty + ts <= y for tx, ty, ts in taken):
                    break
            else:
                continue
            source = sources[next_source]
            box, region = paste_face(pixels, source, face_px, (x, y))
            faces.append(PastedFace(box, source.person, next_source, face_px, region))
            taken.append((x, y, side))
            next_source += 1
            next_size += 1
        frames.append(Frame(pixels, faces))
        if progress is not None:
            progress(index)
    return frames


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def false_detections(faces: Sequence[PastedFace], found: Sequence[Box], matched: dict[int, int]) -> tuple[int, int]:
    """Unmatched detections: ``(on the scene, inside a pasted photo)``. Only the first are surely false:
    a pasted photo's context can hold someone else's face (LFW photos often do), unlabelled here."""
    used = set(matched.values())
    scene = context = 0
    for j, box in enumerate(found):
        if j in used:
            continue
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        inside = any(r[0] <= cx <= r[2] and r[1] <= cy <= r[3] for r in (f.region for f in faces))
        context += inside
        scene += not inside
    return scene, context


def match_detections(truth: Sequence[Box], found: Sequence[Box], min_iou: float = 0.4) -> dict[int, int]:
    """Greedy one-to-one matching by IoU: ground-truth index -> detection index."""
    pairs = sorted(((iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)), reverse=True)
    matched: dict[int, int] = {}
    used: set[int] = set()
    for score, i, j in pairs:
        if score < min_iou:
            break
        if i not in matched and j not in used:
            matched[i] = j
            used.add(j)
    return matched
