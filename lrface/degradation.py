"""The degradation model: how a high-resolution face becomes a low-resolution one.

Used to make LR training data (as augmentation) and LR test probes from HR faces. Seeded: the same
image, config and seed always give the same bytes.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter
from pydantic import BaseModel, Field

from lrface.preprocessing import box_to_chip, resize


class DegradationConfig(BaseModel):
    """Ranges are sampled uniformly per image; a zero range turns that step off."""

    size: int = Field(16, ge=4, le=256, description="Target side in pixels (8-32 for LR faces).")
    method: str = Field("area", pattern="^(area|bicubic)$")
    blur_sigma: tuple[float, float] = (0.0, 0.0)
    noise_std: tuple[float, float] = (0.0, 0.0)
    jpeg_quality: tuple[int, int] | None = None

    @classmethod
    def surveillance(cls, size: int = 16) -> DegradationConfig:
        """Blur + sensor noise + JPEG, as CCTV footage shows."""
        return cls(size=size, blur_sigma=(1.0, 1.0), noise_std=(4.0, 4.0), jpeg_quality=(40, 40))


def degrade(image: np.ndarray, config: DegradationConfig, rng: np.random.Generator | int = 0) -> np.ndarray:
    """Degrade a uint8 ``(H, W, 3)`` face to ``config.size`` square, uint8.

    Order: the canonical chip (:func:`lrface.preprocessing.box_to_chip`, as every HR-to-LR path
    starts), Gaussian blur at that resolution (optics), down-sampling (sensor), additive noise, JPEG
    re-compression (transport). Without blur, noise and JPEG this is exactly
    :func:`lrface.preprocessing.hr_to_lr`.
    """
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    out = box_to_chip(image)
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
        buffer = io.BytesIO()
        Image.fromarray(out).save(buffer, format="JPEG", quality=quality)
        out = np.asarray(Image.open(buffer).convert("RGB"), dtype=np.uint8)
    return out
