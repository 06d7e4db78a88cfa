"""Typed training configs (pydantic): saved beside every checkpoint, so each reported number traces
back to the exact config that made it. Experiments live as JSON files in ``training/configs/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

PACK_JPEG_QUALITY = 85  # `lrface pack`'s default JPEG quality for the chips (training.pack)


class LossWeights(BaseModel):
    """Weights of the loss plug-ins; 0 turns a term off."""

    identity: float = Field(1.0, description="Angular-margin softmax on training identities.")
    instance: float = Field(0.0, description="1st order: student embedding vs teacher's (cosine).")
    pairwise: float = Field(0.0, description="2nd order: normalised pairwise distances vs teacher's.")
    angle: float = Field(0.0, description="3rd order: triplet angles vs teacher's.")
    assistant_instance: float = Field(0.0, description="1st order against the assistant's embedding.")
    assistant_pairwise: float = 0.0
    assistant_angle: float = 0.0
    assistant_logits: float = Field(0.0, description="Logit KD against the assistant's identity head.")


class AugmentConfig(BaseModel):
    """Framing jitter and degradation applied to the HR chip before it is brought to LR.

    The defaults are mild: against the stronger v1 setting (scale 0.8-1.1, shift 0.08, aspect
    0.85-1.15, blur up to 1.0, noise up to 5, JPEG 30% at quality 30-90, 30% shrunk below input
    size, kept as ``training/configs/hybrid-robust.json``) they raised the hybrid student's validation
    accuracy at 16 px from 0.866 to 0.905 and LFW test LR-LR 16 px from 85.0% to 87.4%, at a cost on
    surveillance-degraded probes (78.2% -> 74.1%)."""

    flip: bool = True
    scale: tuple[float, float] = (0.9, 1.05)
    shift: float = 0.05
    aspect: tuple[float, float] = (0.92, 1.08)
    blur_sigma: tuple[float, float] = (0.0, 0.5)
    noise_std: tuple[float, float] = (0.0, 2.0)
    jpeg_probability: float = 0.1
    jpeg_quality: tuple[int, int] = (50, 90)
    smaller_source_probability: float = Field(0.15, description="Share of faces first shrunk below input size.")
    smaller_source_min: int = 10
    frame_jpeg_probability: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of faces shrunk to a face size drawn from frame_face_px and JPEG-compressed as part of a "
        "camera's frame (lrface.degradation.jpeg_in_frame), then brought to the input size: detected faces "
        "come from JPEG frames.",
    )
    frame_face_px: tuple[int, int] = (12, 28)
    frame_jpeg_quality: tuple[int, int] = (70, 95)
    detected_view_probability: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of faces replaced by their detected view (training.detected_views: the face at a side drawn "
        "from detected_view_px in a JPEG frame of quality from detected_view_quality, found by the detector and cut by "
        "its landmarks, as the service takes faces from frames; one view a face, drawn once and cached).",
    )
    detected_view_px: tuple[int, int] = (12, 28)
    detected_view_quality: tuple[int, int] = (70, 95)

    @field_validator("frame_face_px", "frame_jpeg_quality", "detected_view_px", "detected_view_quality")
    @classmethod
    def _range(cls, value: tuple[int, int], info: ValidationInfo) -> tuple[int, int]:
        low, high = (4, 256) if info.field_name in ("frame_face_px", "detected_view_px") else (1, 95)
        if not low <= value[0] <= value[1] <= high:
            raise ValueError(f"{info.field_name} must be [low, high] with {low} <= low <= high <= {high}, got {value}")
        return value


class TrainConfig(BaseModel):
    name: str = "student"
    teacher: str = "dlib"
    model: str = "resface-s"
    input_size: int = Field(16, ge=8, le=128)
    embedding_size: int = 128
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    optimizer: Literal["sgd", "adamw"] = Field(
        "sgd",
        description="SGD with Nesterov momentum (every released student, teacher-lr at a small lr included), or "
        "AdamW (per-parameter steps; tried for teacher-lr at 1e-4: it collapsed in one epoch, "
        "reports/teacher-lr/README.md).",
    )
    warmup_epochs: int = 1
    margin_scale: float = 32.0
    arc_margin: float = 0.3
    kd_temperature: float = 4.0
    losses: LossWeights = LossWeights()
    augment: AugmentConfig = AugmentConfig()
    augment_enabled: bool = True
    center_targets: bool = Field(
        True,
        description="Subtract the mean teacher embedding of the training set and re-normalise: dlib's "
        "embeddings sit in a narrow cone (random pairs have cosine 0.84), which makes 1 - cosine blind to identity.",
    )
    assistant_run: str | None = Field(None, description="Run folder of a trained assistant (frozen).")
    extra_train_data: list[str] = Field(
        default_factory=list,
        description="Data folders under LRFACE_DATA (images/<identity>/*) whose people join training only, "
        "e.g. 'celeba-299' (LFW-disjoint by construction).",
    )
    detector_crops: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of training views cut by the framing rule (lrface.preprocessing.frame_face) around "
        "the detector's box on the original photo, instead of from the aligned chip: a detector's crop then "
        "works without landmarks.",
    )
    select_by: Literal["val_accuracy", "val_rank1", "val_rank1_mean", "val_rank1_detected_mean"] = Field(
        "val_accuracy",
        description="Validation figure that picks best.pt (rank-1: identification first; rank-1 mean: the mean of "
        "rank-1 on clean 16-px probes and on probes from JPEG frames, training.validation.validate; rank-1 "
        "detected mean: the mean of clean rank-1 and rank-1 of faces detected in JPEG frames, for configs with "
        "detected views).",
    )
    init_from: str | None = Field(
        None,
        description="Checkpoint to initialise the model from, a run name under LRFACE_CACHE/runs (its best.pt), or a "
        "released model directory such as models/lrface-student (its model.onnx read back: teacher-lr only).",
    )
    val_fraction: float = 0.1
    seed: int = 0
    workers: int = 1
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="Mixed precision: float16 with loss scaling on CUDA (off on the CPU).")
    amp_dtype: Literal["float16", "bfloat16"] = Field(
        "float16", description="bfloat16 runs autocast without loss scaling, on CUDA and on the CPU alike."
    )

    @model_validator(mode="after")
    def _detected_views_used(self) -> TrainConfig:
        """Detected views act only on augmented views, and their validation figure exists only with them."""
        uses = self.augment_enabled and self.augment.detected_view_probability > 0
        if self.select_by == "val_rank1_detected_mean" and not uses:
            raise ValueError('select_by "val_rank1_detected_mean" needs augment.detected_view_probability > 0 '
                             "(and augment_enabled)")  # fmt: skip
        if self.augment.detected_view_probability > 0 and not self.augment_enabled:
            raise ValueError("augment.detected_view_probability > 0 with augment_enabled false: no view would use it")
        return self

    def save(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2))

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        return cls.model_validate(json.loads(path.read_text()))
