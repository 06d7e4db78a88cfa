"""The training side's commands: teacher cache, train, release, quantize, evaluate, ablation, the
MTCNN detector export and the model benchmark. Registered on the ``lrface`` command by
``lrface_cli``, which replaces them with a clear message where the ``train`` extra (torch) is not
installed. torch is imported inside each command, never at import time."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from lrface.settings import get_settings
from training.ablation import ABLATION_ROWS, DEFAULT_PROTOCOLS, with_run_paths
from training.config import PACK_JPEG_QUALITY

if TYPE_CHECKING:
    from training.config import TrainConfig
    from training.dataset import FaceArrays
    from training.validation import ValData


def teacher_cache(
    teacher: str = typer.Option("dlib", help="Teacher name: dlib, facenet or onnx."),
    workers: int = typer.Option(2, min=1, help="Processes computing chips and embeddings."),
    limit: int = typer.Option(0, min=0, help="Only the first N images (0: all), for a quick check."),
    data: str = typer.Option("lfw", help="Data folder under LRFACE_DATA holding images/<identity>/*."),
) -> None:
    """Align every face under LRFACE_DATA/<data> and cache the teacher's embeddings in LRFACE_CACHE."""
    from lrface.data.lfw import list_identities
    from training.teacher_cache import TeacherCache

    settings = get_settings()
    files = [f for fs in list_identities(settings.data / data).values() for f in fs]
    if limit:
        files = files[:limit]
    cache = TeacherCache(settings.cache, teacher)
    targets = cache.targets(files, workers=workers)
    typer.echo(f"{len(files)} images: chips {targets.chips.shape}, embeddings {targets.emb.shape} in {cache.folder}")


def train(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, help="A JSON config (training/configs/*.json)."),
    run_name: str = typer.Option("", help="Run folder name under LRFACE_CACHE/runs (default: the config's name)."),
    epochs: int = typer.Option(0, min=0, help="Override the config's epoch count (0: keep it)."),
    max_minutes: float = typer.Option(
        0.0, min=0.0, help="Stop after the epoch that passes this many minutes; run again to resume (0: no limit)."
    ),
    progress: bool = typer.Option(True, help="Show progress bars."),
    pack: Path = typer.Option(
        None, exists=True, dir_okay=False, help="Train from a pack written by `lrface pack` (no data or dlib needed)."
    ),
    workers: int = typer.Option(0, min=0, help="Override the config's data-loader processes (0: keep it)."),
) -> None:
    """Train a student or assistant (resumes from LRFACE_CACHE/runs/NAME/last.pt when present; a run
    folder holding a run of another config is refused).

    The loss terms (identity, 1st/2nd/3rd order against the teacher, the same against an assistant)
    and their weights come from the config. Works under `torchrun --nproc_per_node N` unchanged.
    """
    from training.loop import ConfigMismatch
    from training.loop import train as train_loop
    from training.pack import read_pack

    settings = get_settings()
    cfg = _config(config, epochs)
    if workers:
        cfg = cfg.model_copy(update={"workers": workers})  # where it runs may change on resume
    runs = settings.cache / "runs"
    cfg = with_run_paths(cfg, runs)
    run_dir = runs / (run_name or cfg.name)
    train_data, val = read_pack(pack) if pack is not None else _prepared(cfg)
    try:
        row = train_loop(cfg, run_dir, train_data, val, max_minutes or None, progress)
    except ConfigMismatch as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"run {run_dir}: epoch {row.get('epoch')} val_accuracy {row.get('val_accuracy', float('nan')):.4f}"
        + (" (stopped at the time limit; run again to resume)" if row.get("stopped_early") else "")
    )


def _config(path: Path, epochs: int = 0) -> TrainConfig:
    from training.config import TrainConfig

    cfg = TrainConfig.load(path)
    return cfg.model_copy(update={"epochs": epochs}) if epochs else cfg


def _prepared(cfg: TrainConfig) -> tuple[FaceArrays, ValData]:
    from training.data_prep import prepare

    settings = get_settings()
    extra = [settings.data / name for name in cfg.extra_train_data]
    _, train_data, val = prepare(
        settings.lfw_root(), settings.cache, cfg.teacher, cfg.val_fraction, cfg.seed, extra, cfg.detector_crops > 0
    )
    return train_data, val


def pack(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, help="A JSON config (training/configs/*.json)."),
    out: Path = typer.Option(..., help="The pack file to write (.npz)."),
    quality: int = typer.Option(
        PACK_JPEG_QUALITY, min=50, max=95, help="JPEG quality of the chips (lower: a smaller pack, e.g. for an upload)."
    ),
) -> None:
    """Write the config's training faces (canonical chips, detector-box chips where the config uses
    them, teacher targets, detected views where the config uses them) and validation faces into one
    compact file, for `lrface train --pack` on a machine without the data, dlib, the detector or the
    teacher cache (e.g. a GPU machine)."""
    from training.dataset import canonical_chips
    from training.detected_views import with_detected_views
    from training.pack import write_pack

    cfg = _config(config)
    train_data, val = _prepared(cfg)
    if cfg.augment_enabled and cfg.augment.detected_view_probability > 0:  # made here, where the detector is
        train_data, val_views = with_detected_views(cfg, canonical_chips(train_data), val)
        if val_views is not None:
            val = val_views
    size = write_pack(out, train_data, val, quality)
    faces = f"{len(train_data.labels)} training faces, {len(val.chips)} validation faces"
    typer.echo(f"wrote {out}: {faces}, {size / 2**20:.1f} MiB")


def release(
    run_name: str = typer.Argument(..., help="Run folder name under LRFACE_CACHE/runs."),
    out: Path = typer.Option(Path("models/lrface-student"), help="Where model.onnx and card.json go."),
    name: str = typer.Option("lrface-student", help="Model name in the card."),
    version: str = typer.Option("1", help="Model version in the card."),
    torch_weights: bool = typer.Option(
        True,
        help="Keep the torch weights (student.pt) beside the ONNX file, for CI to re-check ONNX/torch parity. "
        "--no-torch-weights for a large student (teacher-lr: 11 MB more in every clone); parity is still "
        "checked here and recorded in the card.",
    ),
) -> None:
    """Export a run's best checkpoint to ONNX, check ONNX Runtime against torch (1e-4) on real
    validation faces, calibrate thresholds on the validation split, and write the model directory
    (built aside and moved in complete, the card last)."""
    from training.release import release_run

    settings = get_settings()
    card = release_run(settings, settings.cache / "runs" / run_name, out, name, version, torch_weights)
    typer.echo(
        f"released {card.model_version} to {out}: threshold {card.threshold:.4f}, "
        f"onnx/torch max diff {card.accuracy['onnx_torch_max_abs_diff']:.2e}"
    )


def quantize(
    model: Path = typer.Argument(..., exists=True, file_okay=False, help="Released FP32 model directory."),
    out: Path = typer.Option(..., help="Where the INT8 model.onnx and card.json go."),
    calibration_faces: int = typer.Option(512, min=16, help="Training-split faces used to calibrate."),
) -> None:
    """INT8 variant of a released student (ONNX Runtime static quantization, calibrated on training
    faces; thresholds re-calibrated on validation people). Compare with `lrface evaluate` before use."""
    from training.quantize import quantize_release

    card = quantize_release(get_settings(), model, out, calibration_faces)
    typer.echo(f"wrote {out / card.onnx_file} ({card.model_version}), threshold {card.threshold:.4f}")


def evaluate(
    models: list[Path] = typer.Argument(None, help="Model directories (model.onnx + card.json) to evaluate."),
    teacher: bool = typer.Option(False, help="Also evaluate the teacher on HR and up-sampled LR faces."),
    protocols: str = typer.Option(
        ",".join(DEFAULT_PROTOCOLS),
        help="Probe protocols: lr<size> (area down-sampling) or surveillance<size>.",
    ),
    out: Path = typer.Option(Path("reports/latest"), help="Folder for results.json and report.md."),
    update_card: bool = typer.Option(False, help="Write the LFW test accuracies into each model's card.json."),
    route: bool = typer.Option(
        False,
        help="With --teacher: choose on validation people the face size from which the teacher identifies "
        "better than the first model, and add the routed row.",
    ),
) -> None:
    """LFW View 1 test (people unseen in training): 1:N identification with every test person enrolled
    (rank-1/5 per probe and per person, FNIR at FPIR), verification accuracy (10-fold), AUC, TAR@FAR,
    HR-HR / LR-LR / HR-LR protocols, extended pair set."""
    from training.report import record_in_cards, run_evaluation

    settings = get_settings()
    results = run_evaluation(settings, models or [], teacher, protocols.split(","), out, route)
    if update_card:
        record_in_cards(results, out)
    typer.echo(f"wrote {out / 'results.json'} and {out / 'report.md'} ({len(results['models'])} models)")


def ablation(
    configs: str = typer.Option(
        ",".join(ABLATION_ROWS),
        help="Comma-separated config names in training/configs, in order "
        "(assistants before the students that use them).",
    ),
    max_minutes: float = typer.Option(85.0, min=1.0, help="Stop training after this many minutes; rerun to resume."),
    teacher: bool = typer.Option(True, help="Also evaluate the teacher on HR and up-sampled LR faces."),
    out: Path = typer.Option(Path("reports/ablation"), help="Folder for results.json and report.md."),
) -> None:
    """Train every ablation row (resuming finished or interrupted runs), export each to ONNX, and
    evaluate them all with the teacher in one report."""
    from training.ablation import run_ablation

    names = [n.strip() for n in configs.split(",") if n.strip()]
    stopped = run_ablation(get_settings(), names, max_minutes, teacher, out)
    if stopped:
        typer.echo(f"{stopped}; rerun `lrface ablation` to resume")
        raise typer.Exit(3)
    typer.echo(f"wrote {out / 'report.md'}")


def bench_models_command(
    model: Path = typer.Option(None, help="Released model directory (default LRFACE_MODEL)."),
    int8: Path = typer.Option(None, help="Also time this INT8 model directory (e.g. models/lrface-student-int8)."),
    threads: int = typer.Option(2, min=1, help="Threads for every model (the machine's cores)."),
    repeats: int = typer.Option(50, min=5, help="Timed batches of 64 (batch-1 runs are 10x this)."),
    out: Path = typer.Option(None, help="Also write the JSON here."),
) -> None:
    """Teacher vs student (torch) vs student (ONNX Runtime): faces/s at batch 1 and 64, p50/p99
    latency, size, peak memory and speed-up over the teacher, all in one run."""
    import json

    from training.bench import bench_models

    text = json.dumps(bench_models(model or get_settings().model, threads, repeats, int8), indent=2)
    typer.echo(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


def export_detector(
    out: Path = typer.Option(Path("models/mtcnn"), help="Where pnet/rnet/onet.onnx, card.json and README.md go."),
) -> None:
    """Export facenet-pytorch's MTCNN (P-Net, R-Net, O-Net) to ONNX for the torch-free detector
    (lrface/detection.py), each checked against torch on random input, with a card of sources,
    licences, SHA-256 digests and default settings."""
    from training.detector_export import export_detector as export

    card = export(out)
    files = card["files"]
    assert isinstance(files, dict)
    for name, info in files.items():
        typer.echo(f"{out / name}: onnx/torch max abs diff {info['onnx_torch_max_abs_diff']:.2e}")
    typer.echo(f"wrote {out / 'card.json'} and {out / 'README.md'}")


def export_teacher(
    out: Path = typer.Option(Path("models/teacher-dlib"), help="Where dlib_resnet.onnx, card.json and README.md go."),
) -> None:
    """Export dlib's face-recognition ResNet (the teacher, from face-recognition-models) to ONNX,
    read from dlib's own file and checked against dlib's descriptors on face chips, with a card of
    source, licence, SHA-256 and the largest difference to dlib."""
    from lrface.teacher import TEACHER_FILE
    from training.teacher_export import export_teacher as export

    card = export(out)
    typer.echo(f"{out / TEACHER_FILE}: onnx/dlib max abs diff {card['onnx_dlib_max_abs_diff']:.2e}")
    typer.echo(f"wrote {out / 'card.json'} and {out / 'README.md'}")


COMMANDS: dict[str, Callable[..., None]] = {
    "teacher-cache": teacher_cache,
    "train": train,
    "pack": pack,
    "release": release,
    "quantize": quantize,
    "evaluate": evaluate,
    "ablation": ablation,
    "export-detector": export_detector,
    "export-teacher": export_teacher,
}
BENCH_COMMANDS: dict[str, Callable[..., None]] = {"models": bench_models_command}


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    for name, command in COMMANDS.items():
        app.command(name)(command)
    for name, command in BENCH_COMMANDS.items():
        bench_app.command(name)(command)
