"""The model card: a JSON file stored beside every exported ONNX model.

Training writes it; the service reads it and refuses a model whose card is missing, malformed or
disagrees with the ONNX graph's input.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError, model_validator

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


class Fusion(BaseModel):
    """A face too small for the teacher alone, embedded by both models in the student's space: the
    student's embedding and the teacher's centred one (:meth:`GalleryFromTeacher.vectors`) averaged with
    :attr:`student_weight` and re-normalised (:meth:`vectors`), searched in the student's index. The two
    err on different faces: on validation people fusing beat either model on faces the detector found at
    14-24 px and on chips of 20-28 px (``lrface bench frames --calibrate-routing``)."""

    student_weight: float = Field(ge=0.0, le=1.0, description="The student's share; the teacher's is the rest.")
    threshold: float = Field(
        description="Same-person cosine of a fused probe against the student's gallery (validation people)."
    )
    validation: dict[str, Any] = Field(default_factory=dict, description="What the threshold was chosen on.")

    def vectors(self, student: np.ndarray, teacher: np.ndarray, space: GalleryFromTeacher) -> np.ndarray:
        """The fused probes of these faces (:func:`fused_vectors` at :attr:`student_weight`) from each
        model's embedding of them (for :class:`DetectedFusion`, as its :meth:`~DetectedFusion.student_view`
        and :meth:`~DetectedFusion.teacher_view` make it)."""
        return fused_vectors(student, teacher, self.student_weight, space)


class DetectedFusion(Fusion):
    """The fusion for a face the detector found, which each model may see twice: the student on its
    landmark chip and on dlib's aligned chip (the teacher's input), the teacher on dlib's chip and on its
    mirror image, each pair's embeddings joined by :func:`mean_of_views`. Chosen with the fusion's weight
    on frames of validation people: the two chips give the student different errors, and so do the
    teacher's two views."""

    student_on_both_chips: bool = Field(
        False, description="The student's half is the mean of its embeddings of the landmark chip and dlib's chip."
    )
    teacher_mirrored: bool = Field(
        False, description="The teacher's half is the mean of its embeddings of dlib's chip and its mirror image."
    )

    def student_view(self, own: np.ndarray, on_teacher_chip: np.ndarray) -> np.ndarray:
        """The student's half from its embeddings ``(N, D)`` of the faces' own inputs and of the teacher's
        (the one rule: service and calibration)."""
        return mean_of_views(own, on_teacher_chip) if self.student_on_both_chips else np.asarray(own, np.float32)

    def teacher_view(self, own: np.ndarray, mirrored: np.ndarray) -> np.ndarray:
        """The teacher's half from its embeddings ``(N, D)`` of the faces and of their mirror images."""
        return mean_of_views(own, mirrored) if self.teacher_mirrored else np.asarray(own, np.float32)


class ChipFusion(Fusion):
    """The fusion for a face of known size (a chip, or a client's box) from :attr:`from_face_px` up to
    the teacher's switch for such faces; smaller ones the student serves alone."""

    from_face_px: float = Field(gt=0, description="Smallest chip (or box) side fused; below it the student alone.")


def fused_vectors(
    student: np.ndarray, teacher: np.ndarray, student_weight: float, space: GalleryFromTeacher
) -> np.ndarray:
    """Unit student embeddings and the same faces' unit teacher embeddings ``(N, D)`` -> the fused
    probes: ``student_weight`` of the student's and the rest of the teacher's centred one
    (:meth:`GalleryFromTeacher.vectors`), re-normalised (the one rule: service and calibration)."""
    return _unit(student_weight * np.asarray(student, np.float32) + (1.0 - student_weight) * space.vectors(teacher))


def mean_of_views(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Unit embeddings ``(N, D)`` of the same faces seen two ways (two chips, or a chip and its mirror)
    -> their mean, re-normalised (the one rule: service and calibration, :class:`Fusion`)."""
    return _unit(np.asarray(first, np.float32) + np.asarray(second, np.float32))


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class Routing(BaseModel):
    """Faces of at least ``min_face_px`` (their side in the image as received) are served by the teacher,
    an HR embedder, against the gallery's teacher embeddings; smaller ones by the student. Chosen on
    validation people (``lrface evaluate --teacher --route --update-card``: aligned chips, offline, the
    student alone); the service's own steps choose the switches it uses where the card has them
    (``lrface bench frames --calibrate-routing --update-card``): ``detected_*`` for faces the detector
    found, ``chip_*`` for chips and client boxes."""

    teacher: Literal["dlib"] = "dlib"
    teacher_version: str = Field(description="The teacher's weights (dlib's model file name).")
    min_face_px: int = Field(ge=1, description="Smallest face side (px) the teacher serves.")
    threshold: float = Field(description="Same-person cosine threshold for teacher embeddings (validation).")
    validation: dict[str, Any] = Field(default_factory=dict, description="The curves the choice was made on.")
    detected_min_face_px: float | None = Field(
        None,
        gt=0,
        description="Smallest `face_px` of a face the detector found in a frame that the teacher serves (it "
        "sees dlib's alignment of it; below it the student sees its landmark chip, or both are fused: "
        "detected_fusion): chosen on frames of validation people (`lrface bench frames --calibrate-routing "
        "--update-card`). Absent: the switch for chips (`chip_switch`).",
    )
    detected_validation: dict[str, Any] = Field(
        default_factory=dict, description="The rank-1 by size and by threshold that choice was made on."
    )
    detected_fusion: DetectedFusion | None = Field(
        None,
        description="Where present (with the card's gallery_from_teacher), a detected face below "
        "detected_min_face_px is embedded by both models, fused (chosen with that switch on frames of "
        "validation people). Absent: the student alone.",
    )
    chip_min_face_px: float | None = Field(
        None,
        gt=0,
        description="Smallest side of a chip or a client's box that the teacher serves, chosen with chip_fusion "
        "on validation people's aligned chips through the service's steps (`lrface bench frames "
        "--calibrate-routing --update-card`). Absent: `min_face_px`.",
    )
    chip_fusion: ChipFusion | None = Field(
        None,
        description="Where present (with the card's gallery_from_teacher), a chip or box from its from_face_px up "
        "to the teacher's switch is embedded by both models, fused. Absent: the student alone below the switch.",
    )
    chip_validation: dict[str, Any] = Field(
        default_factory=dict, description="The rank-1 by chip size and model the chip routing was chosen on."
    )
    teacher_open_set: dict[str, Any] = Field(
        default_factory=dict,
        description="The teacher's threshold in a 1:N search: validation people's HR photos searched among the "
        "calibration's gallery with their own person left out (FPIR) and in (DIR), at `threshold` and at the "
        "thresholds giving FPIR 10% and 1% (`lrface bench frames --calibrate-routing --update-card`).",
    )

    @property
    def chip_switch(self) -> float:
        """The smallest chip (or box) side the teacher serves."""
        return float(self.min_face_px) if self.chip_min_face_px is None else self.chip_min_face_px

    @property
    def detected_switch(self) -> float:
        """The smallest detected face the teacher serves: the card's own switch for them, else the chips'."""
        return self.chip_switch if self.detected_min_face_px is None else self.detected_min_face_px


def fused_view_key(routing: Routing | None) -> dict[str, Any] | None:
    """What makes a fused distant view (:attr:`DistantViews.fused`) as it is: the detected switch and the
    detected fusion's weight and second views (None: no detected fusion, a view is the student's alone).
    The gallery records it (``Embedders.gallery_model_id``) and the calibration reports what its views
    were made with (``fused_views_made_with``): one rule for both."""
    fusion = routing.detected_fusion if routing is not None else None
    if routing is None or fusion is None:
        return None
    return {
        "detected_min_face_px": routing.detected_switch,
        **fusion.model_dump(include={"student_weight", "student_on_both_chips", "teacher_mirrored"}),
    }


def views_tag(views: DistantViews | None, routing: Routing | None) -> str:
    """What a student gallery filled with these distant views records after the models' ids (''
    without views): their sides, quality and weight, and for fused views what made them
    (:func:`fused_view_key`), so a gallery filled otherwise is refused until re-embedded."""
    if views is None:
        return ""
    tag = f"+views:{'/'.join(f'{s:g}' for s in views.sides)}:q{views.quality}:w{views.weight:g}"
    if views.fused:
        key = fused_view_key(routing)
        tag += ":fused" + ("" if key is None else "<" + ",".join(f"{k}={v}" for k, v in key.items()) + ">")
    return tag


# How distant views are made by default (the card records what its views were made with): the student's
# at three sides; fused ones (DistantViews.fused) at six, which did better than three fused (one-off on
# validation people's 12-24 px detected faces, session 15: 45.1% with the student's three, 46.2% with the
# same three fused, 47.4% with these six fused).
DISTANT_VIEW_SIDES = (16.0, 20.0, 24.0)
FUSED_VIEW_SIDES = (12.0, 14.0, 16.0, 18.0, 20.0, 24.0)
VIEW_SIDES = {False: DISTANT_VIEW_SIDES, True: FUSED_VIEW_SIDES}  # by DistantViews.fused
DISTANT_VIEW_QUALITY = 92


class DistantViews(BaseModel):
    """The student's gallery vector of an enrolled HR face also holds what the service makes of that
    face seen small: the HR chip as a distant camera sends it at each of :attr:`sides` px
    (:func:`lrface.degradation.distant_view`), found again by the service's detector, embedded by the
    student alone or, where :attr:`fused`, as a detected probe of that size is (both models fused as
    the card's ``routing.detected_fusion`` says), averaged; that mean, weighted by :attr:`weight`, is
    added to the centred teacher vector and the sum re-normalised (:func:`with_distant_views`). A small
    probe is then matched against the enrolled photo and against its small, compressed self. Chosen
    with the detected routing on JPEG frames of validation people (``lrface bench frames
    --calibrate-routing``)."""

    sides: list[float] = Field(
        default_factory=list,
        description="The chip's side in each view (absent: VIEW_SIDES of the kind, the student's or fused).",
    )
    quality: int = Field(DISTANT_VIEW_QUALITY, ge=1, le=100, description="JPEG quality of each view.")
    fused: bool = Field(
        False,
        description="Each view embedded as a detected probe of its size is (the card's detected fusion of "
        "both models below the teacher's switch), not by the student alone: each costs enrolment the "
        "teacher's passes too.",
    )
    weight: float = Field(gt=0.0, le=4.0, description="The views' mean's share, the centred teacher vector's being 1.")
    threshold: float = Field(
        description="Same-person cosine of a student probe (not fused: a chip, a box) against a gallery vector "
        "with views: validation people's 16-px aligned chips (replaces gallery_from_teacher.threshold)."
    )
    validation: dict[str, Any] = Field(default_factory=dict, description="What the threshold was chosen on.")

    @model_validator(mode="after")
    def _sides_of_the_kind(self) -> DistantViews:
        if not self.sides:
            self.sides = list(VIEW_SIDES[self.fused])
        return self


# The FPIR each open-set operating point stands for (lrface.settings.OperatingPoint).
OPERATING_FPIR = {"fpir_10": 0.10, "fpir_1": 0.01}


def open_set_threshold(
    best: float, validation: dict[str, Any], point: str, gallery_size: int | None = None
) -> tuple[float, str]:
    """The threshold of a kind of face at an operating point (:data:`lrface.settings.OperatingPoint`) and
    the point it is: ``best`` (its best-accuracy threshold) at 'best_accuracy' or where its
    ``validation`` has no ``open_set`` figure for ``point`` ('best_accuracy' then). Else, for a search of
    a gallery of ``gallery_size`` entries, :func:`scaled_open_set_threshold` where the figure holds the
    calibration's per-comparison impostor thresholds, or the threshold at which that FPIR was measured in
    the calibration's gallery. Never below ``best``: an operating point is there to be stricter (in a
    gallery of a few faces the FPIR is then below the one asked for)."""
    open_set = validation.get("open_set", {}) if point != "best_accuracy" else {}
    figure = open_set.get(point)
    threshold = figure.get("threshold") if isinstance(figure, dict) else None
    measured = float(threshold) if isinstance(threshold, int | float) else None
    table = sorted(
        ((float(rate), float(level)) for rate, level in open_set.get("per_comparison", {}).get("thresholds") or []),
        reverse=True,
    )
    if gallery_size is not None and point in OPERATING_FPIR and len(table) >= 2:
        calibrated = int(open_set.get("gallery", 0))
        scaled = scaled_open_set_threshold(table, OPERATING_FPIR[point], max(gallery_size, 1), measured, calibrated)
        return max(scaled, best), point
    return (max(measured, best), point) if measured is not None else (best, "best_accuracy")


def scaled_open_set_threshold(
    table: list[tuple[float, float]], fpir: float, size: int, measured: float | None, calibrated: int
) -> float:
    """The threshold an unknown face's best score reaches with probability ``fpir`` in a gallery of ``size``
    entries, from per-comparison impostor thresholds (``table``: ``(rate, threshold)``, rates falling): the
    threshold at the rate ``1 - (1 - fpir) ** (1 / size)`` (log-interpolated), as if the comparisons of a
    face with the gallery's entries were independent. They are not (several entries of a gallery look
    alike), so this mostly errs strict: on random galleries of 10-962 validation people the FPIR came out
    at 5-10% for 10% on 16-px chips, 9-14% for the teacher on 32-px chips (its table is from HR photos),
    and 0.2-1.3% for 1% (a one-off check); and in the calibration's gallery of ``calibrated``
    entries the threshold is stricter than the one ``measured`` there. Past the table's smallest rate the
    threshold runs on in log-size to ``measured`` at ``calibrated`` entries (where that is stricter) and
    stays there beyond: the FPIR of a gallery far larger than the calibration's is then above ``fpir``."""
    log_rates = np.log10([rate for rate, _ in table])  # falling
    levels = [level for _, level in table]  # rising with them
    wanted = float(np.log10(-np.expm1(np.log1p(-fpir) / size)))
    if wanted >= log_rates[-1] or measured is None or calibrated <= 0:
        return float(np.interp(-wanted, -log_rates, levels))  # np.interp needs rising x; clamps at the ends
    # past the table: from its strictest threshold (at the size where the table ends) to the calibration's
    end = fpir_size(10.0 ** log_rates[-1], fpir)
    if size >= calibrated or end >= calibrated:
        return max(levels[-1], measured)
    share = float(np.log(size / end) / np.log(calibrated / end))
    return levels[-1] + share * (max(levels[-1], measured) - levels[-1])


def fpir_size(rate: float, fpir: float) -> float:
    """The number of independent comparisons at a per-comparison ``rate`` that reach ``fpir``."""
    return float(np.log1p(-fpir) / np.log1p(-rate))


def with_distant_views(vectors: np.ndarray, views: np.ndarray, weight: float) -> np.ndarray:
    """Unit gallery vectors ``(N, D)`` and each face's unit mean distant view (a zero row: none found,
    the vector stays as it is) -> ``vectors + weight * views``, re-normalised (the one rule: service,
    re-embedding and calibration)."""
    return _unit(np.asarray(vectors, np.float32) + weight * np.asarray(views, np.float32))


class GalleryFromTeacher(BaseModel):
    """A student that embeds faces in the teacher's centred space (``teacher-lr``, v5): its gallery index
    holds the teacher's embedding of each enrolled face's HR chip minus :attr:`centre`, re-normalised
    (:meth:`vectors`), so a small probe is matched against the HR photo itself rather than against the
    photo shrunk to the student's input. Chosen because it identified better on validation people."""

    centre: list[float] = Field(description="The mean teacher embedding the student's outputs are centred on.")
    threshold: float = Field(
        description="Same-person cosine of a student probe against a centred teacher gallery vector (validation)."
    )
    validation: dict[str, Any] = Field(default_factory=dict, description="The measurements the choice was made on.")
    distant_views: DistantViews | None = Field(
        None,
        description="Where present, each HR face's vector also holds its views seen small (the student's, or fused "
        "as detected probes are).",
    )

    def vectors(self, teacher: np.ndarray) -> np.ndarray:
        """Unit teacher embeddings ``(N, D)`` -> the student's gallery vectors (the one rule: service,
        re-embedding, evaluation and calibration), before any :attr:`distant_views` join them (the
        service's; the offline evaluation has none: it cannot run the service's detector)."""
        return _unit(np.asarray(teacher, dtype=np.float32) - np.asarray(self.centre, dtype=np.float32))


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
    routing: Routing | None = Field(
        None, description="Which faces the teacher serves (absent: the student serves all)."
    )
    gallery_from_teacher: GalleryFromTeacher | None = Field(
        None,
        description="Where present (and the teacher serves), the student's gallery index holds centred "
        "teacher embeddings of the enrolled HR chips; absent: the student's own embeddings of the enrolled faces.",
    )
    onnx_sha256: str = Field(
        "",
        description="SHA-256 of the ONNX file's bytes: the model's identity. Re-released weights under an "
        "old version string get another hash, so a gallery never mixes their embeddings.",
    )

    @model_validator(mode="after")
    def _centre_fits(self) -> ModelCard:
        rule = self.gallery_from_teacher
        if rule is not None and len(rule.centre) != self.embedding_size:
            raise ValueError(
                f"gallery_from_teacher.centre has {len(rule.centre)} values for {self.embedding_size}-d embeddings"
            )
        return self

    @property
    def model_version(self) -> str:
        """``name:version``, as clients see it."""
        return f"{self.name}:{self.version}"

    @property
    def model_id(self) -> str:
        """``name:version@<12 hex of the weights' hash>``: what the gallery records with every embedding."""
        return f"{self.model_version}@{self.onnx_sha256[:12]}" if self.onnx_sha256 else self.model_version

    def save(self, directory: Path) -> Path:
        """Write ``card.json`` (atomically), recording the hash of the ONNX file beside it."""
        onnx_path = directory / self.onnx_file
        if onnx_path.is_file():
            self.onnx_sha256 = file_sha256(onnx_path)
        path = directory / CARD_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=2) + "\n")
        tmp.replace(path)
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
    onnx_path = directory / card.onnx_file
    if not onnx_path.is_file():
        raise ModelCardError(f"{onnx_path} named by {path} does not exist")
    if card.onnx_sha256 and file_sha256(onnx_path) != card.onnx_sha256:
        raise ModelCardError(
            f"{onnx_path} is not the model {path} describes (its SHA-256 differs from the card's onnx_sha256): "
            "re-release the model (lrface release) rather than replacing its weights"
        )
    return card


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
