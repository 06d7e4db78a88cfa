"""`lrface bench crops` on a few test people: each cut of a photo is taken as the service should take
it (an aligned chip whole, a tight square of the detector's box as a crop), and both ways are scored."""

from __future__ import annotations

from pathlib import Path

import pytest

from lrface.alignment import aligner_available
from lrface.settings import get_settings
from service.crops_bench import CUTS, bench_crops
from tests.server import running_server

pytestmark = pytest.mark.skipif(not aligner_available(), reason="dlib (the align extra) not installed")


def test_each_cut_is_taken_as_it_is_framed_and_scored_both_ways(tmp_path: Path) -> None:
    lfw = get_settings().lfw_root()
    if not (lfw / "pairsDevTest.txt").exists():
        pytest.skip("LFW not found (set LRFACE_DATA)")
    with running_server({"LRFACE_GALLERY_DIR": str(tmp_path / "g")}) as url:
        result = bench_crops(url, lfw, probes=16, progress=False, sides=(20,), people=40)
    assert result["people_enrolled"] == 40 and result["probes"] == 16
    taken = {cut: result["by_side"]["20"][cut]["input_auto"] for cut in CUTS}
    assert all(sum(kinds.values()) == 16 for kinds in taken.values())
    assert taken["aligned"].get("chip", 0) >= 15  # `lrface bench crops`: 1-3 of 300 aligned chips taken as crops
    assert taken["tight"].get("crop", 0) >= 14  # and 95-98% of tight squares
    tight, aligned = result["by_side"]["20"]["tight"], result["by_side"]["20"]["aligned"]
    assert tight["rank1_auto"] > tight["rank1_whole"]  # at 20 px, 300 probes: 30.3 -> 49.0
    assert aligned["rank1_auto"] == aligned["rank1_whole"]
