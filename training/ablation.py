"""The ablation: train every row's config (resuming finished or interrupted runs), export each run,
and evaluate them all, with the teacher, in one report."""

from __future__ import annotations

import time
from pathlib import Path

from lrface.settings import Settings
from training.config import TrainConfig
from training.release_init import is_release

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
ABLATION_ROWS = ("identity", "first", "second", "hybrid", "hybrid-robust", "assistant-lr", "hybrid-assistant")
DEFAULT_PROTOCOLS = ("lr8", "lr12", "lr16", "lr20", "lr24", "lr32", "surveillance16")


def with_run_paths(config: TrainConfig, runs: Path) -> TrainConfig:
    """``assistant_run`` given as a run name resolves under ``runs`` (LRFACE_CACHE/runs), and so does
    ``init_from`` given as a run name (that run's ``best.pt``); a released model directory stays as it is."""
    update: dict[str, str] = {}
    if config.assistant_run and not Path(config.assistant_run).is_absolute():
        update["assistant_run"] = str(runs / config.assistant_run)
    if config.init_from and not Path(config.init_from).is_absolute() and not is_release(config.init_from):
        if (runs / config.init_from / "best.pt").is_file():
            update["init_from"] = str(runs / config.init_from / "best.pt")
        elif not Path(config.init_from).is_file():
            raise ValueError(
                f"init_from {config.init_from!r}: neither a checkpoint file, a released model directory "
                f"(card.json and its ONNX file) nor a run with a best.pt under {runs}"
            )
    return config.model_copy(update=update) if update else config


def run_ablation(settings: Settings, names: list[str], max_minutes: float, teacher: bool, out: Path) -> str | None:
    """Train, export and evaluate ``names`` (assistants before the students that use them). Returns
    None when the report is written, or why it stopped (the time limit: rerun to resume)."""
    from training.data_prep import prepare
    from training.loop import train as train_loop
    from training.release import release_run
    from training.report import run_evaluation

    runs = settings.cache / "runs"
    started = time.monotonic()
    prepared: dict[tuple[str, ...], tuple] = {}  # type: ignore[type-arg]  # one per set of extra data
    for name in names:
        cfg = with_run_paths(TrainConfig.load(CONFIG_DIR / f"{name}.json"), runs)
        left = max_minutes - (time.monotonic() - started) / 60
        if left <= 0:
            return f"time limit reached before {name}"
        key = tuple(cfg.extra_train_data)
        if key not in prepared:
            extra = [settings.data / folder for folder in key]
            prepared[key] = prepare(settings.lfw_root(), settings.cache, cfg.teacher, cfg.val_fraction, cfg.seed, extra)
        data = prepared[key]
        row = train_loop(cfg, runs / name, data[1], data[2], left)
        if row.get("stopped_early"):
            return f"{name} stopped at the time limit"
    exported = []
    for name in names:
        target = settings.cache / "ablation" / name
        release_run(settings, runs / name, target, name, "ablation")
        exported.append(target)
    run_evaluation(settings, exported, teacher, list(DEFAULT_PROTOCOLS), out)
    return None
