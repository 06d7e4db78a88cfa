"""Release a run as the service's model: ONNX export + parity, thresholds from validation, card."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from lrface.data.lfw import identity_split
from lrface.model_card import GalleryFromTeacher, ModelCard
from lrface.settings import Settings
from training.evaluate import student_embedder
from training.export import EXTRA_DATA_LICENCES, LFW_LICENCE, release
from training.identification import identification
from training.metrics import kfold_accuracy, threshold_at_far
from training.teacher_cache import TeacherCache
from training.validation import ValData, val_data


def release_run(
    settings: Settings, run_dir: Path, out: Path, name: str, version: str, torch_weights: bool = True
) -> ModelCard:
    """Export a run's best checkpoint, calibrate its thresholds on validation people and publish the
    model directory (ONNX, card, the run's config and, with ``torch_weights``, the torch weights) in
    one step."""
    from training.config import TrainConfig

    config = TrainConfig.load(run_dir / "config.json")
    split = identity_split(settings.lfw_root(), config.val_fraction, config.seed)
    val = val_data(split.val, TeacherCache(settings.cache, config.teacher), config.seed)

    def finish(card: ModelCard, stage: Path) -> None:
        calibrate_thresholds(card, stage, val)
        centre = _output_centre(run_dir)
        if centre is not None:
            choose_gallery_from_teacher(card, stage, val, centre)
        shutil.copy(run_dir / "config.json", stage / "train_config.json")
        if torch_weights:
            _save_torch_weights(run_dir, stage)

    return release(
        run_dir,
        out,
        val.chips[:64],
        name,
        version,
        data=f"LFW deep-funneled, identity-disjoint train split ({len(split.train)} people; "
        f"people of pairsDevTest.txt excluded), seed {config.seed}"
        + "".join(f"; plus every person of {name} (LFW-disjoint)" for name in config.extra_train_data),
        data_licence="; ".join(
            [
                LFW_LICENCE,
                *(EXTRA_DATA_LICENCES.get(name, f"{name}: see its README") for name in config.extra_train_data),
            ]
        ),
        finish=finish,
    )


def calibrate_thresholds(card: ModelCard, model_dir: Path, val: ValData) -> None:
    """Decision thresholds from validation people only (never the test pairs), with the ONNX file
    in ``model_dir``; writes the card."""
    emb = student_embedder(model_dir)(list(val.chips))
    scores = (emb[val.pairs[:, 0]] * emb[val.pairs[:, 1]]).sum(1)
    accuracy, _, best = kfold_accuracy(scores, val.same)
    card.threshold = best
    card.thresholds = {
        "best_accuracy": best,
        "far_1e-2": threshold_at_far(scores, val.same, 1e-2),
        "far_1e-3": threshold_at_far(scores, val.same, 1e-3),
    }
    card.accuracy["validation"] = {"pairs": int(len(scores)), "accuracy_16px_from_hr": accuracy}
    card.save(model_dir)


def choose_gallery_from_teacher(card: ModelCard, model_dir: Path, val: ValData, centre: list[float]) -> None:
    """For a student whose outputs live in the teacher's centred space: on validation people, identify
    each 16-px probe against every person's first face enrolled either as the student's embedding of it
    (shrunk to the input) or as the teacher's HR embedding, centred; keep the second in the card
    (``gallery_from_teacher``, with its threshold from validation pairs, gallery side HR) only where
    it identifies better. Writes the card."""
    if val.labels is None or val.teacher is None:
        raise ValueError("validation faces without people or teacher embeddings: cannot compare identification")
    probes = student_embedder(model_dir)(list(val.chips))
    rule = GalleryFromTeacher(centre=centre, threshold=0.0)
    gallery = rule.vectors(val.teacher)
    own = identification(probes, probes, val.labels)["rank1"]
    shared = identification(gallery, probes, val.labels)["rank1"]
    scores = (gallery[val.pairs[:, 0]] * probes[val.pairs[:, 1]]).sum(1)
    accuracy, _, threshold = kfold_accuracy(scores, val.same)
    if shared > own:
        rule.threshold = threshold
        rule.validation = {
            "rank1_16px_gallery_student": own,
            "rank1_16px_gallery_teacher": shared,
            "accuracy_16px_against_teacher_hr": accuracy,
            "pairs": int(len(scores)),
            "people": int(len(np.unique(val.labels))),
        }
        card.gallery_from_teacher = rule
    card.save(model_dir)


def _output_centre(run_dir: Path) -> list[float] | None:
    """The centre a ``teacher-lr`` student subtracts from its outputs (None for other students)."""
    import torch

    state = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=False)
    centre = state["model"].get("centre")
    return None if centre is None else [float(v) for v in centre.float().tolist()]


def _save_torch_weights(run_dir: Path, out: Path) -> None:
    """Keep the torch weights beside the ONNX file so CI can re-check ONNX/torch parity."""
    import torch

    state = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=False)
    torch.save({"model": state["model"], "config": state["config"]}, out / "student.pt")
