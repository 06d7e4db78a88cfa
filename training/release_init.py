"""Initialise a model from a released model directory (``models/lrface-student``): its ``model.onnx``
read back into the torch module it was exported from, so a run can continue a release without that
release's checkpoint (a GPU machine, or a cache rebuilt since). Exact for ``teacher-lr`` (dlib's
network: its convolution weights keep their names in the graph, its affine scales and shifts are
reshaped constants taken in graph order); checked against ONNX Runtime on random input, so a graph
this reader mis-maps fails here instead of training another network."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lrface.model_card import load_card

if TYPE_CHECKING:  # torch only where a model is read: the CLI (and the service beside it) imports this module
    import torch
    from torch import nn

# The largest difference allowed between the rebuilt module and the ONNX file on the same input
# (unit embeddings; the export's own check, ``onnx_torch_max_abs_diff``, is of this order).
PARITY_TOLERANCE = 1e-3


class ReleaseInitError(ValueError):
    """The released model cannot initialise this module (another architecture, or a graph of another shape)."""


def is_release(path: str | Path) -> bool:
    """Whether ``path`` is a released model directory (a card and its ONNX file)."""
    return (Path(path) / "card.json").is_file()


def state_from_release(model: nn.Module, model_dir: Path) -> dict[str, torch.Tensor]:
    """``model``'s state dict with its parameters (and its ``centre``, where it has one) taken from the
    released ``model_dir``; its other buffers as they are. Raises :class:`ReleaseInitError` where the
    file does not fit the module or the rebuilt module computes something else."""
    import onnx
    import torch
    from onnx import numpy_helper

    card = load_card(model_dir)
    path = model_dir / card.onnx_file
    graph = onnx.load(str(path)).graph
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    # Parameters the exporter reshaped lose their names: "view", "view_1", ... in the order traced.
    reshaped = sorted((n for n in consts if re.fullmatch(r"view(_\d+)?", n)), key=lambda n: int(n[5:] or 0))
    unnamed = iter(reshaped)
    state = model.state_dict()
    names = [name for name, _ in model.named_parameters()] + (["centre"] if "centre" in state else [])
    for name in names:
        want = tuple(state[name].shape)
        source = name if name in consts else next(unnamed, None)
        if source is None or int(np.prod(consts[source].shape)) != int(np.prod(want)):
            raise ReleaseInitError(f"{path}: no constant of shape {want} for {name} (not a {type(model).__name__})")
        state[name] = torch.from_numpy(consts[source].reshape(want).astype(np.float32).copy())
    if next(unnamed, None) is not None:
        raise ReleaseInitError(f"{path}: constants left over after every parameter of {type(model).__name__}")
    _check_parity(model, state, path, card.input_size)
    return state


def _check_parity(model: nn.Module, state: dict[str, torch.Tensor], path: Path, input_size: int) -> None:
    import copy

    import onnxruntime as ort
    import torch

    probe = copy.deepcopy(model).cpu().float().eval()
    probe.load_state_dict(state)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, input_size, input_size)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        got = probe(torch.from_numpy(x)).numpy()
    gap = float(np.abs(got - want).max())
    if not gap <= PARITY_TOLERANCE:
        raise ReleaseInitError(f"{path}: the module rebuilt from it differs from it by {gap:.2e}")
