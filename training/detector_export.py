"""Export facenet-pytorch's MTCNN (P-Net, R-Net, O-Net) to ONNX for :mod:`lrface.detection`.

The weights are the ones shipped inside the facenet-pytorch 2.5.3 wheel. Each network is exported
with ``torch.onnx.export`` (P-Net with a dynamic height and width, R-Net and O-Net with a dynamic
batch), checked against the torch module on random input, and written with a ``card.json`` (source,
licences, SHA-256 of each file, the detector's default settings) and a ``README.md`` model card. The
folder is built aside and moved in complete, the card last.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np
import torch

from lrface.detection import (
    CARD_FILE,
    DEFAULT_FACTOR,
    DEFAULT_MIN_FACE_PX,
    DEFAULT_THRESHOLDS,
    NETWORK_FILES,
)
from lrface.model_card import file_sha256, publish_model_dir, staging_dir

DETECTOR_NAME = "mtcnn"
DETECTOR_VERSION = "1"
# ONNX Runtime against torch on random input: float32 convolutions in another order differ by ~1e-6.
PARITY_TOLERANCE = 1e-4
SOURCE = {
    "weights": "facenet-pytorch 2.5.3 wheel (facenet_pytorch/data/{pnet,rnet,onet}.pt)",
    "weights_licence": "facenet-pytorch: MIT (Tim Esler)",
    "original": (
        "MTCNN: K. Zhang, Z. Zhang, Z. Li, Y. Qiao, 'Joint Face Detection and Alignment Using Multitask "
        "Cascaded Convolutional Networks', IEEE Signal Processing Letters 23(10), 2016; Caffe models in "
        "github.com/kpzhang93/MTCNN_face_detection_alignment, converted to TensorFlow by davidsandberg/facenet "
        "(MIT) and from there to PyTorch by facenet-pytorch"
    ),
    "original_licence": (
        "the kpzhang93 repository carries an MIT licence (Copyright 2016 Kaipeng Zhang); whether it covers the "
        "trained model files was asked in its issue #38 and never answered. The networks were trained on "
        "WIDER FACE (detection) and CelebA (landmarks); CelebA is for non-commercial research only, so check "
        "the terms before commercial use"
    ),
}


@dataclass(frozen=True)
class Network:
    file: str
    module: torch.nn.Module
    example_shape: tuple[int, int, int, int]
    dynamic: dict[int, torch.export.Dim]
    outputs: tuple[str, ...]
    check_shapes: tuple[tuple[int, int, int, int], ...]


def _networks() -> list[Network]:
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    height = torch.export.Dim("height", min=12, max=16384)
    width = torch.export.Dim("width", min=12, max=16384)
    batch = torch.export.Dim("batch", min=1, max=65536)
    return [
        Network(
            NETWORK_FILES[0], PNet().eval(), (1, 3, 50, 60), {2: height, 3: width},
            ("regression", "probability"), ((1, 3, 12, 12), (1, 3, 37, 91), (1, 3, 541, 961)),
        ),
        Network(
            NETWORK_FILES[1], RNet().eval(), (2, 3, 24, 24), {0: batch},
            ("regression", "probability"), ((1, 3, 24, 24), (7, 3, 24, 24), (300, 3, 24, 24)),
        ),
        Network(
            NETWORK_FILES[2], ONet().eval(), (2, 3, 48, 48), {0: batch},
            ("regression", "landmarks", "probability"), ((1, 3, 48, 48), (5, 3, 48, 48), (100, 3, 48, 48)),
        ),
    ]  # fmt: skip


def _export(net: Network, path: Path) -> None:
    program = torch.onnx.export(
        net.module, (torch.zeros(net.example_shape),), input_names=["input"], output_names=list(net.outputs),
        dynamic_shapes=(net.dynamic,), dynamo=True, verbose=False,
    )  # fmt: skip
    if program is None:
        raise RuntimeError(f"torch.onnx.export returned no program for {net.file}")
    program.save(str(path))


def _max_abs_diff(net: Network, path: Path, seed: int = 0) -> float:
    """Largest |ONNX Runtime - torch| over every output, on random input in the networks' range."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst = 0.0
    for shape in net.check_shapes:
        x = rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)  # inputs are (pixel - 127.5) / 128
        got = session.run(None, {"input": x})
        with torch.inference_mode():
            want = net.module(torch.from_numpy(x))
        for g, w in zip(got, want, strict=True):
            if g.shape != tuple(w.shape):
                raise RuntimeError(f"{net.file}: ONNX output {g.shape} but torch {tuple(w.shape)} for input {shape}")
            worst = max(worst, float(np.abs(g - w.numpy()).max()))
    return worst


def _readme(card: dict[str, object]) -> str:
    files = card["files"]
    assert isinstance(files, dict)
    rows = "\n".join(
        f"| `{name}` | `{info['sha256']}` | {info['onnx_torch_max_abs_diff']:.1e} |" for name, info in files.items()
    )
    defaults = card["defaults"]
    assert isinstance(defaults, dict)
    return f"""# MTCNN face detector (ONNX)

P-Net, R-Net and O-Net of MTCNN (Zhang et al. 2016), exported to ONNX by `lrface export-detector`
(`training/detector_export.py`) from the weights in the facenet-pytorch {card["facenet_pytorch_version"]}
wheel, and run without torch by `lrface/detection.py` (numpy + ONNX Runtime). It finds faces down to
12 px in whole frames, with 5 landmarks (eyes, nose, mouth corners).

- **Intended use**: locating faces in frames before recognition by the lrface service.
- **Source**: {SOURCE["original"]}.
- **Licences**: {SOURCE["weights_licence"]}; {SOURCE["original_licence"]}.
- **Defaults** (`MtcnnDetector`): minimum face {defaults["min_face_px"]} px, thresholds
  {defaults["thresholds"]} (P-Net, R-Net, O-Net), pyramid factor {defaults["factor"]}.
- **Known limits**: not evaluated here on a detection benchmark (WIDER FACE, FDDB); what is tested
  (`tests/test_detector.py`) is that it finds the faces facenet-pytorch's `MTCNN.detect` finds, on
  LFW photos and on frames of LFW faces pasted at 16-48 px. Faces below the minimum face (12 px by
  default: P-Net's window) are not looked for. Crops are the box clipped to the frame and
  area-averaged, as in facenet-pytorch (the original MATLAB code zero-pads), so faces cut by the
  frame edge are seen distorted.
- **Speed**: `python -m lrface.detection_bench` (1280x720, per stage).

| file | SHA-256 | max abs diff ONNX Runtime vs torch (random input) |
| --- | --- | --- |
{rows}
"""


def export_detector(out: Path) -> dict[str, object]:
    """Export the three networks into ``out`` (``pnet.onnx``, ``rnet.onnx``, ``onet.onnx``,
    ``card.json``, ``README.md``); raises when ONNX Runtime and torch disagree beyond the tolerance."""
    files: dict[str, dict[str, object]] = {}
    with staging_dir(out) as stage:
        for net in _networks():
            path = stage / net.file
            _export(net, path)
            gap = _max_abs_diff(net, path)
            if gap > PARITY_TOLERANCE:
                raise RuntimeError(f"{net.file}: ONNX Runtime and torch differ by {gap:.2e} > {PARITY_TOLERANCE:.0e}")
            files[net.file] = {
                "sha256": file_sha256(path),
                "inputs": "N x 3 x H x W float32, (RGB - 127.5) / 128",
                "outputs": list(net.outputs),
                "onnx_torch_max_abs_diff": gap,
            }
        card: dict[str, object] = {
            "name": DETECTOR_NAME,
            "version": DETECTOR_VERSION,
            "facenet_pytorch_version": package_version("facenet-pytorch"),
            "torch_version": torch.__version__,
            "source": SOURCE,
            "files": files,
            "defaults": {
                "min_face_px": DEFAULT_MIN_FACE_PX,
                "thresholds": list(DEFAULT_THRESHOLDS),
                "factor": DEFAULT_FACTOR,
            },
        }
        (stage / "README.md").write_text(_readme(card))
        (stage / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
        publish_model_dir(stage, out)
    return card
