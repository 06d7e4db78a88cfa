"""`lrface bench identify` on a few test people: enrols through the API, identifies through the API,
and its rank-1 equals the offline identification of the same embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lrface.alignment import aligner_available
from lrface.embedder import FaceInput, OnnxEmbedder
from lrface.settings import BUNDLED_MODEL_DIR, get_settings
from service.identify_bench import aligned_test_chips, bench_identify, probe
from tests.server import running_server
from training.identification import identification

pytestmark = pytest.mark.skipif(not aligner_available(), reason="dlib (the align extra) not installed")


def test_http_rank1_agrees_with_the_offline_evaluation(tmp_path: Path) -> None:
    lfw = get_settings().lfw_root()
    if not (lfw / "pairsDevTest.txt").exists():
        pytest.skip("LFW not found (set LRFACE_DATA)")
    env = {
        "LRFACE_MODEL": str(BUNDLED_MODEL_DIR),
        "LRFACE_GALLERY_DIR": str(tmp_path / "g"),
        "LRFACE_USE_TEACHER": "false",
    }
    with running_server(env) as url:
        result = bench_identify(url, lfw, ["lr16", "surveillance16"], progress=False, people=40)
    chips, labels = aligned_test_chips(lfw, progress=False, people=40)
    embedder = OnnxEmbedder(BUNDLED_MODEL_DIR, "cpu")
    hr = embedder.embed([FaceInput(c) for c in chips])
    for protocol in ("lr16", "surveillance16"):
        probes = embedder.embed([FaceInput(probe(c, protocol, row)) for row, c in enumerate(chips)])
        offline = identification(hr, probes, labels)
        served = result["protocols"][protocol]
        assert served["probes"] == offline["probes"] > 20 and served["embedder"] == ["student"]
        assert np.isclose(served["rank1"], offline["rank1"], atol=1 / offline["probes"]), (protocol, served, offline)
