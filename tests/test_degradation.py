from __future__ import annotations

import numpy as np
import pytest

from lrface.degradation import DegradationConfig, degrade
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
