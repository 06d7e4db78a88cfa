"""The model card: a JSON file stored beside every exported ONNX model.

Training writes it; the service reads it and refuses a model whose card is missing, malformed or
disagrees with the ONNX graph's input.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from lrface.preprocessing import Normalisation

CARD_FILE = "card.json"
MODEL_FILE = "model.onnx"


class ModelCardError(ValueError):
    """The model directory cannot be served; the message says why."""


class NormalisationSpec(BaseModel):
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def to_normalisation(self) -> Normalisation:
        return Normalisation(self.mean, self.std)


class Provenance(BaseModel):
    data: str = Field(description="Training data set and split.")
    data_licence: str = ""
    teacher: str = ""
    teacher_version: str = ""
    teacher_licence: str = ""
    config: dict[str, Any] = Field(default_factory=dict, description="The exact training config.")
    run: str = ""


class ModelCard(BaseModel):
    name: str
    version: str
    onnx_file: str = MODEL_FILE
    input_size: int = Field(ge=4, le=512, description="Square input side in pixels.")
    input_channels: Literal[3] = 3
    color: Literal["RGB"] = "RGB"
    normalisation: NormalisationSpec = NormalisationSpec()
    embedding_size: int = Field(gt=0)
    similarity: Literal["cosine"] = "cosine"
    threshold: float = Field(description="Default same-person decision threshold on cosine similarity.")
    thresholds: dict[str, float] = Field(
        default_factory=dict, description="Calibrated thresholds by operating point (e.g. 'far_1e-3')."
    )
    training: Provenance
    accuracy: dict[str, Any] = Field(default_factory=dict, description="Measured results, with their command.")

    def save(self, directory: Path) -> Path:
        path = directory / CARD_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path

    def expected_input_shape(self) -> tuple[int, int, int]:
        return (self.input_channels, self.input_size, self.input_size)


def load_card(directory: Path) -> ModelCard:
    path = directory / CARD_FILE
    if not path.is_file():
        raise ModelCardError(f"model directory {directory} has no {CARD_FILE}: refusing to serve an undocumented model")
    try:
        card = ModelCard.model_validate_json(path.read_text())
    except ValidationError as exc:
        raise ModelCardError(f"{path} is not a valid model card: {exc}") from None
    if not (directory / card.onnx_file).is_file():
        raise ModelCardError(f"{directory / card.onnx_file} named by {path} does not exist")
    return card


def check_input_shape(card: ModelCard, graph_shape: list[Any]) -> None:
    """Compare the card with the ONNX input shape ``[batch, C, H, W]`` (batch may be symbolic)."""
    if len(graph_shape) != 4:
        raise ModelCardError(f"ONNX input has rank {len(graph_shape)}, expected 4 (N, C, H, W)")
    dims = tuple(graph_shape[1:])
    if dims != card.expected_input_shape():
        raise ModelCardError(f"model card says input {card.expected_input_shape()} but the ONNX graph takes {dims}")


@contextmanager
def staging_dir(out: Path) -> Iterator[Path]:
    """A fresh folder beside ``out`` to build a model directory in; removed afterwards."""
    stage = out.parent / f".{out.name}.staging-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def publish_model_dir(stage: Path, out: Path) -> None:
    """Move every file of a complete model directory into ``out``, the card last, each by an atomic
    rename: a reader sees the old card or the finished new one, never a half-written one."""
    out.mkdir(parents=True, exist_ok=True)
    files = sorted((p for p in stage.iterdir() if p.is_file()), key=lambda p: p.name == CARD_FILE)
    for path in files:
        os.replace(path, out / path.name)
