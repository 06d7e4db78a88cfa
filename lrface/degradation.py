"""The degradation model: how a high-resolution face becomes a low-resolution one.

Used to make LR training data (as augmentation) and LR test probes from HR faces. Seeded: the same
image, config and seed always give the same bytes.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter
from pydantic import BaseModel, Field

from lrface.preprocessing import canonical_chip, encode_image, resize


class DegradationConfig(BaseModel):
    """Ranges are sampled uniformly per image; a zero range turns that step off."""

    size: int = Field(16, ge=4, le=256, description="Target side in pixels (8-32 for LR faces).")
    method: str = Field("area", pattern="^(area|bicubic)$")
    blur_sigma: tuple[float, float] = (0.0, 0.0)
    noise_std: tuple[float, float] = (0.0, 0.0)
    jpeg_quality: tuple[int, int] | None = None
    jpeg_in_frame: bool = Field(
        False,
        description="JPEG the face as part of a camera's frame (:func:`jpeg_in_frame`: a random place on the "
        "codec's grid, surroundings around it) instead of as an image of its own, aligned with the grid.",
    )

    @classmethod
    def surveillance(cls, size: int = 16) -> DegradationConfig:
        """Blur + sensor noise + JPEG, as CCTV footage shows."""
        return cls(size=size, blur_sigma=(1.0, 1.0), noise_std=(4.0, 4.0), jpeg_quality=(40, 40))


def degrade(image: np.ndarray, config: DegradationConfig, rng: np.random.Generator | int = 0) -> np.ndarray:
    """Degrade a uint8 ``(H, W, 3)`` face to ``config.size`` square, uint8.

    Order: the canonical chip (:func:`lrface.preprocessing.canonical_chip`, as every HR-to-LR path
    starts), Gaussian blur at that resolution (optics), down-sampling (sensor), additive noise, JPEG
    re-compression (transport). Without blur, noise and JPEG this is exactly
    :func:`lrface.preprocessing.hr_to_lr`.
    """
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    out = canonical_chip(image, config.size)
    sigma = float(gen.uniform(*config.blur_sigma)) if config.blur_sigma[1] > 0 else 0.0
    if sigma > 0:
        # Sigma is given in LR pixels; scale to the source resolution before down-sampling.
        src_sigma = sigma * out.shape[0] / config.size
        out = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(src_sigma)), dtype=np.uint8)
    out = resize(out, config.size, config.method)
    noise = float(gen.uniform(*config.noise_std)) if config.noise_std[1] > 0 else 0.0
    if noise > 0:
        noisy = out.astype(np.float32) + gen.normal(0.0, noise, size=out.shape).astype(np.float32)
        out = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    if config.jpeg_quality is not None:
        quality = int(gen.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
        out = jpeg_in_frame(out, quality, gen) if config.jpeg_in_frame else _jpeg(out, quality)
    return out


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode with Pillow's defaults (4:2:0 chroma: colour at half resolution, as cameras send)."""
    return np.asarray(Image.open(io.BytesIO(encode_image(image, "JPEG", quality))).convert("RGB"), dtype=np.uint8)


def jpeg_in_frame(face: np.ndarray, quality: int, rng: np.random.Generator) -> np.ndarray:
    """``face`` as a camera's JPEG frame carries it: its pixels somewhere on the codec's grid (4:2:0
    chroma works in 16x16 macroblocks, so a face seldom starts on a block's edge), with surroundings
    (the face mirrored at its border) sharing its blocks, encoded at ``quality``, decoded, and the
    face cut back out at its size. A small face alone in its own file (:func:`_jpeg`) fills whole
    blocks aligned with it; in a frame a 16-20 px face spans parts of 2-3 macroblocks. JPEG frames
    (quality 92) cost the v5 student 9-14 points of rank-1 at 14-24 px on validation frames against
    the same frames sent as PNG (``lrface bench frames --calibrate-routing``)."""
    height, width = face.shape[:2]
    left, top = (int(v) for v in rng.integers(0, 16, size=2))
    right, bottom = (-(width + left) % 16) + 16, (-(height + top) % 16) + 16
    canvas = np.pad(face, ((top, bottom), (left, right), (0, 0)), mode="symmetric")
    return np.ascontiguousarray(_jpeg(canvas, quality)[top : top + height, left : left + width])


# A distant view's padding on each side of the HR chip, as a share of its side: room for the detector
# (MTCNN's boxes reach past the chip's face) and no other face (the chip's border colour, not a mirror).
DISTANT_VIEW_PAD = 0.5


def distant_view(chip: np.ndarray, side: float, quality: int = 92) -> bytes:
    """An enrolled face's HR chip (:func:`lrface.preprocessing.hr_chip`) as a distant camera sends it:
    padded with its border's mean colour (:data:`DISTANT_VIEW_PAD`), shrunk with area averaging so the
    chip is ``side`` px (the detector then measures the face at about 0.9 of that), JPEG-encoded at
    ``quality`` (4:2:0 colour). The service finds the face in it as in any frame, so the gallery can hold
    what the student makes of the enrolled photo when it is small
    (:class:`lrface.model_card.DistantViews`)."""
    pad = int(round(DISTANT_VIEW_PAD * chip.shape[0]))
    colour = np.concatenate([chip[0], chip[-1], chip[:, 0], chip[:, -1]]).mean(axis=0)
    canvas = np.empty((chip.shape[0] + 2 * pad, chip.shape[1] + 2 * pad, 3), np.uint8)
    canvas[:] = np.rint(colour).astype(np.uint8)
    canvas[pad : pad + chip.shape[0], pad : pad + chip.shape[1]] = chip
    small = resize(canvas, max(1, int(round(side * canvas.shape[0] / chip.shape[0]))))
    return encode_image(small, "JPEG", quality)
