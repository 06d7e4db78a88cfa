from __future__ import annotations

import numpy as np
import pytest

from lrface.degradation import DegradationConfig, degrade, jpeg_in_frame
from lrface.preprocessing import hr_to_lr


def _face() -> np.ndarray:
    yy, xx = np.mgrid[0:150, 0:150]
    return np.stack([(xx * 1.7) % 256, (yy * 1.3) % 256, (xx + yy) % 256], -1).astype(np.uint8)


@pytest.mark.parametrize("size", [8, 12, 16, 24, 32])
@pytest.mark.parametrize("method", ["area", "bicubic"])
def test_sizes(size: int, method: str) -> None:
    out = degrade(_face(), DegradationConfig(size=size, method=method))
    assert out.shape == (size, size, 3) and out.dtype == np.uint8


def test_seeded_determinism_and_seed_sensitivity() -> None:
    config = DegradationConfig(size=16, blur_sigma=(0.0, 1.5), noise_std=(1.0, 8.0), jpeg_quality=(30, 90))
    a = degrade(_face(), config, 7)
    assert np.array_equal(a, degrade(_face(), config, 7))
    assert not np.array_equal(a, degrade(_face(), config, 8))


def test_plain_config_is_the_one_hr_to_lr_rule() -> None:
    face = _face()  # 150 px: through the 64-px canonical chip, as every HR-to-LR path goes
    assert np.array_equal(degrade(face, DegradationConfig(size=15)), hr_to_lr(face, 15))
    chip = face[:60, :60]  # at most the canonical side: pure area down-sampling
    expected = chip.reshape(15, 4, 15, 4, 3).mean(axis=(1, 3))
    assert np.abs(degrade(chip, DegradationConfig(size=15)).astype(float) - expected).max() <= 1.0


def test_each_step_changes_the_image() -> None:
    plain = degrade(_face(), DegradationConfig(size=16))
    for step in (dict(blur_sigma=(1.0, 1.0)), dict(noise_std=(5.0, 5.0)), dict(jpeg_quality=(20, 20))):
        assert not np.array_equal(plain, degrade(_face(), DegradationConfig(size=16, **step), 0)), step


def test_surveillance_preset() -> None:
    config = DegradationConfig.surveillance(16)
    assert config.size == 16 and config.jpeg_quality == (40, 40)
    assert degrade(_face(), config, 0).shape == (16, 16, 3)


def _textured(side: int, seed: int = 0) -> np.ndarray:
    """Smooth colour texture: JPEG keeps it closely, and a shift of one pixel changes it."""
    noise = np.random.default_rng(seed).uniform(0, 255, (side // 3 + 2, side // 3 + 2, 3)).astype(np.uint8)
    from PIL import Image

    return np.asarray(Image.fromarray(noise).resize((side, side), Image.Resampling.BICUBIC), dtype=np.uint8)


def _luma(image: np.ndarray) -> np.ndarray:
    return image.astype(float) @ np.array([0.299, 0.587, 0.114])


@pytest.mark.parametrize("side", [12, 16, 20, 27])
def test_jpeg_in_frame_cuts_the_face_back_out_where_it_was(side: int) -> None:
    face = _textured(side)
    rng = np.random.default_rng(3)
    for _ in range(5):
        out = jpeg_in_frame(face, 95, rng)
        assert out.shape == face.shape and out.dtype == np.uint8
        error = np.abs(_luma(out) - _luma(face)).mean()
        shifted = np.abs(_luma(out)[:, 1:] - _luma(face)[:, :-1]).mean()  # cut one pixel off
        assert error < 2.0 and error < shifted / 4, (error, shifted)
        # Colour at half resolution (4:2:0), as cameras send it: the colour errs far more than the luma.
        assert np.abs(out.astype(float) - face).mean() > 4 * error


def test_jpeg_in_frame_lands_at_other_places_on_the_codec_grid() -> None:
    face = _textured(20)
    outs = [jpeg_in_frame(face, 75, np.random.default_rng(seed)) for seed in range(6)]
    assert len({o.tobytes() for o in outs}) > 1  # the place on the grid changes what JPEG keeps
    assert np.array_equal(outs[0], jpeg_in_frame(face, 75, np.random.default_rng(0)))  # seeded
    config = DegradationConfig(size=16, jpeg_quality=(75, 75), jpeg_in_frame=True)
    alone = DegradationConfig(size=16, jpeg_quality=(75, 75))
    assert not np.array_equal(degrade(_face(), config, 1), degrade(_face(), alone, 1))
