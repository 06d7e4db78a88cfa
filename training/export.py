"""Export a trained run to ONNX (dynamic batch), check ONNX Runtime against torch, write the card."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lrface.model_card import MODEL_FILE, ModelCard, NormalisationSpec, Provenance
from lrface.preprocessing import face_to_input
from training.config import TrainConfig
from training.models import get_model
from training.teachers import get_teacher


def load_run_model(run_dir: Path, which: str = "best.pt") -> tuple[torch.nn.Module, TrainConfig]:
    config = TrainConfig.load(run_dir / "config.json")
    model = get_model(config.model, config.input_size, config.embedding_size)
    state = torch.load(run_dir / which, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    return model.eval(), config


def export_onnx(model: torch.nn.Module, input_size: int, path: Path) -> None:
    """torch.export-based ONNX export (needs onnxscript) with a dynamic batch axis."""
    example = torch.zeros(2, 3, input_size, input_size)
    batch = torch.export.Dim("batch")
    program = torch.onnx.export(
        model, (example,), input_names=["input"], output_names=["embedding"],
        dynamic_shapes=({0: batch},), dynamo=True, verbose=False,
    )  # fmt: skip
    assert program is not None
    program.save(str(path))


def parity(model: torch.nn.Module, onnx_path: Path, chips: np.ndarray, input_size: int) -> float:
    """Largest absolute difference between torch and ONNX Runtime embeddings of real faces, both
    L2-normalised as the service compares them (raw outputs carry an arbitrary scale)."""
    import onnxruntime as ort

    batch = np.stack([face_to_input(chip, input_size) for chip in chips]).astype(np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(batch)).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: batch})
    got = np.asarray(got)
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    return float(np.abs(unit(got) - unit(expected)).max())


def release(
    run_dir: Path,
    out_dir: Path,
    chips: np.ndarray,
    name: str,
    version: str,
    threshold: float,
    thresholds: dict[str, float],
    accuracy: dict[str, Any],
    data: str,
    tolerance: float = 1e-4,
) -> ModelCard:
    """Write ``model.onnx`` + ``card.json`` into ``out_dir`` after the parity check passes."""
    model, config = load_run_model(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / (MODEL_FILE + ".tmp")
    export_onnx(model, config.input_size, tmp)
    gap = parity(model, tmp, chips, config.input_size)
    if gap > tolerance:
        tmp.unlink()
        raise RuntimeError(f"ONNX Runtime and torch differ by {gap:.2e} > {tolerance:.0e}; not released")
    shutil.move(tmp, out_dir / MODEL_FILE)
    teacher = get_teacher(config.teacher) if config.teacher == "dlib" else None
    card = ModelCard(
        name=name,
        version=version,
        input_size=config.input_size,
        normalisation=NormalisationSpec(),
        embedding_size=config.embedding_size,
        threshold=threshold,
        thresholds=thresholds,
        training=Provenance(
            data=data,
            data_licence="LFW: research use (University of Massachusetts, Amherst)",
            teacher=config.teacher,
            teacher_version=getattr(teacher, "version", ""),
            teacher_licence=getattr(teacher, "licence", ""),
            config=config.model_dump(),
            run=run_dir.name,
        ),
        accuracy={**accuracy, "onnx_torch_max_abs_diff": gap},
    )
    card.save(out_dir)
    return card
