"""Export a trained run to ONNX (dynamic batch), check ONNX Runtime against torch, write the card."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lrface.embedder import FaceInput, OnnxEmbedder
from lrface.model_card import MODEL_FILE, ModelCard, NormalisationSpec, Provenance, publish_model_dir, staging_dir
from training.config import TrainConfig
from training.models import get_model
from training.teachers import get_teacher

LFW_LICENCE = "LFW: research use (University of Massachusetts, Amherst)"
# The licences of extra training data folders (TrainConfig.extra_train_data), for the model card.
EXTRA_DATA_LICENCES = {"celeba-299": "CelebA: non-commercial research purposes only (Liu et al., ICCV 2015)"}


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


def parity(model: torch.nn.Module, model_dir: Path, chips: np.ndarray) -> float:
    """Largest absolute difference between torch and the ONNX embedder on real faces, both
    L2-normalised as the service compares them (raw outputs carry an arbitrary scale)."""
    embedder = OnnxEmbedder(model_dir, "cpu")
    batch = np.stack([embedder.preprocess(FaceInput(chip)) for chip in chips]).astype(np.float32)
    with torch.inference_mode():
        expected = model(torch.from_numpy(batch)).numpy()
    expected = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    return float(np.abs(embedder.embed_inputs(batch) - expected).max())


def release(
    run_dir: Path,
    out_dir: Path,
    chips: np.ndarray,
    name: str,
    version: str,
    data: str,
    finish: Callable[[ModelCard, Path], None] | None = None,
    tolerance: float = 1e-4,
    data_licence: str = LFW_LICENCE,
) -> ModelCard:
    """Export a run and publish ``model.onnx`` + ``card.json`` (+ whatever ``finish`` adds) into
    ``out_dir``. Everything is written in a staging folder first: the ONNX/torch parity check on
    ``chips`` and ``finish(card, staging)`` (threshold calibration) run there, and only a complete
    model directory replaces the old one, its card last."""
    model, config = load_run_model(run_dir)
    teacher = get_teacher(config.teacher) if config.teacher == "dlib" else None
    with staging_dir(out_dir) as stage:
        export_onnx(model, config.input_size, stage / MODEL_FILE)
        card = ModelCard(
            name=name,
            version=version,
            input_size=config.input_size,
            normalisation=NormalisationSpec(),
            embedding_size=config.embedding_size,
            threshold=0.0,
            training=Provenance(
                data=data,
                data_licence=data_licence,
                teacher=config.teacher,
                teacher_version=getattr(teacher, "version", ""),
                teacher_licence=getattr(teacher, "licence", ""),
                config=config.model_dump(),
                run=run_dir.name,
            ),
        )
        card.save(stage)
        gap = parity(model, stage, chips)
        if gap > tolerance:
            raise RuntimeError(f"ONNX Runtime and torch differ by {gap:.2e} > {tolerance:.0e}; not released")
        card.accuracy["onnx_torch_max_abs_diff"] = gap
        if finish is not None:
            finish(card, stage)
        card.save(stage)
        publish_model_dir(stage, out_dir)
    return card
