"""The one training loop. Loss terms are plug-ins built from the config's weights; the loop only
sums them. Resumable (``last.pt``, refused when the run's saved config differs), seeded, DDP-aware
(``torchrun``: gloo on CPU, nccl on GPU; rank 0 decides when every rank stops), mixed precision
(float16 with loss scaling on CUDA, or bfloat16 where ``amp_dtype`` asks for it, CPU included)."""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from lrface.preprocessing import CHIP_SIDE
from training.assistant import FrozenAssistant
from training.config import TrainConfig
from training.dataset import DistillDataset, FaceArrays, canonical_chips, center_targets
from training.losses import EmbeddingMatchLoss, LogitKDLoss, MarginSoftmax, PairwiseDistanceLoss, TripletAngleLoss
from training.models import get_model
from training.release_init import is_release, state_from_release
from training.validation import ValData, validate

Outputs = dict[str, torch.Tensor]
# Settings that may change when a run is resumed: more epochs extend it; where it runs is free.
RESUMABLE_CHANGES = frozenset({"epochs", "workers", "device"})


class ConfigMismatch(ValueError):
    """A run folder holds a run of another config; resuming it would mix two experiments."""


@dataclass
class LossTerm:
    name: str
    weight: float
    fn: Callable[[Outputs], torch.Tensor]


def pick_device(setting: str) -> torch.device:
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def _init_distributed(device: torch.device) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def build_terms(
    config: TrainConfig, head: MarginSoftmax | None, projector: nn.Module, has_assistant: bool
) -> list[LossTerm]:
    """Turn the config's weights into loss plug-ins; zero weights are left out."""
    w = config.losses
    instance, pairwise, angle = EmbeddingMatchLoss(), PairwiseDistanceLoss(), TripletAngleLoss()
    kd = LogitKDLoss(config.kd_temperature)
    candidates: list[tuple[str, float, Callable[[Outputs], torch.Tensor]]] = [
        ("instance", w.instance, lambda o: instance(projector(o["emb"]), o["target"])),
        ("pairwise", w.pairwise, lambda o: pairwise(o["emb"], o["target"])),
        ("angle", w.angle, lambda o: angle(o["emb"], o["target"])),
    ]
    if head is not None:
        candidates.append(("identity", w.identity, lambda o: head(o["emb"], o["label"])))
    if has_assistant:
        candidates += [
            ("assistant_instance", w.assistant_instance, lambda o: instance(o["emb"], o["assistant"])),
            ("assistant_pairwise", w.assistant_pairwise, lambda o: pairwise(o["emb"], o["assistant"])),
            ("assistant_angle", w.assistant_angle, lambda o: angle(o["emb"], o["assistant"])),
        ]
        if head is not None:
            candidates.append(
                (
                    "assistant_logits",
                    w.assistant_logits,
                    lambda o: kd(head.cosine(o["emb"]) * head.scale, o["assistant_logits"]),
                ),
            )
    return [LossTerm(name, weight, fn) for name, weight, fn in candidates if weight > 0]


def check_resumable(saved_path: Path, config: TrainConfig) -> None:
    """Refuse to resume a run whose saved config differs from ``config`` (beyond RESUMABLE_CHANGES)."""
    if not saved_path.exists():
        return
    saved = TrainConfig.load(saved_path).model_dump()
    wanted = config.model_dump()
    differ = sorted(k for k in wanted if k not in RESUMABLE_CHANGES and saved.get(k) != wanted[k])
    if differ:
        raise ConfigMismatch(
            f"{saved_path.parent} holds a run of another config (differs in: {', '.join(differ)}); "
            "resume it with its own config, or train into a new run folder (--run-name)"
        )


def lr_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> LRScheduler:
    """Linear warm-up from lr/warmup_steps to lr, then cosine decay to 0, stepped once per batch."""
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup_steps))
    if warmup_steps <= 1:
        return cosine
    warmup = LinearLR(optimizer, start_factor=1 / warmup_steps, end_factor=1.0, total_iters=warmup_steps - 1)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])


def fast_forward(scheduler: LRScheduler, steps: int) -> None:
    """Bring a fresh schedule to ``steps`` (a resumed run; the schedule follows the current epochs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "step() before optimizer.step()"
        for _ in range(steps):
            scheduler.step()


def rank0_decides(flag: bool, device: torch.device, world: int) -> bool:
    """Rank 0's ``flag`` on every rank (each rank's own clock can disagree, and a rank that stops
    alone leaves the others waiting in a collective forever)."""
    if world == 1:
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.broadcast(value, src=0)
    return bool(value.item())


def _atomic_save(obj: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def train(
    config: TrainConfig,
    run_dir: Path,
    train_data: FaceArrays,
    val: ValData | None = None,
    max_minutes: float | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume) the run in ``run_dir``; returns the final metrics row."""
    device = pick_device(config.device)
    rank, world = _init_distributed(device)
    torch.manual_seed(config.seed)
    last = run_dir / "last.pt"
    if last.exists():
        check_resumable(run_dir / "config.json", config)
    run_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        config.save(run_dir / "config.json")

    num_classes = int(train_data.labels.max()) + 1
    teacher_dim = train_data.emb.shape[1]
    model = get_model(config.model, config.input_size, config.embedding_size).to(device)
    needs_head = config.losses.identity > 0 or config.losses.assistant_logits > 0
    head = (
        MarginSoftmax(config.embedding_size, num_classes, config.margin_scale, config.arc_margin).to(device)
        if needs_head
        else None
    )
    projector: nn.Module = (
        nn.Identity()
        if teacher_dim == config.embedding_size
        else nn.Linear(config.embedding_size, teacher_dim, bias=False)
    ).to(device)
    if config.init_from and not last.exists():  # a resumed run starts from last.pt (below) instead
        if is_release(config.init_from):  # a released model: its ONNX file read back
            model.load_state_dict(state_from_release(model, Path(config.init_from)))
        else:
            model.load_state_dict(torch.load(config.init_from, map_location=device, weights_only=False)["model"])
    assistant = FrozenAssistant(Path(config.assistant_run), device) if config.assistant_run else None

    terms = build_terms(config, head, projector, assistant is not None)
    if not terms:
        raise ValueError("every loss weight is zero: nothing to train")
    params = [p for m in (model, head, projector) if m is not None for p in m.parameters()]
    optimizer: torch.optim.Optimizer = (
        torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        if config.optimizer == "adamw"
        else torch.optim.SGD(params, lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    )

    hr_size = assistant.own_view_size(config.input_size) if assistant is not None else None
    train_data = canonical_chips(train_data, max(CHIP_SIDE, hr_size or 0))
    if config.center_targets:
        if isinstance(getattr(model, "centre", None), torch.Tensor) and not last.exists():
            # A model that outputs centred embeddings (teacher-lr) starts at the targets' centre.
            model.centre.copy_(torch.from_numpy(train_data.emb.mean(axis=0)).to(device))  # type: ignore[operator]
        train_data = center_targets(train_data)
    augment = config.augment if config.augment_enabled else None
    if augment is not None and augment.detected_view_probability > 0:  # the faces as detected in JPEG frames
        from training.detected_views import with_detected_views

        train_data, val = with_detected_views(config, train_data, val, progress and rank == 0)
    dataset = DistillDataset(train_data, config.input_size, augment, config.seed, hr_size, config.detector_crops)
    sampler: DistributedSampler[dict[str, torch.Tensor]] | None = (
        DistributedSampler(dataset, world, rank, shuffle=True, seed=config.seed) if world > 1 else None
    )
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=True,
        num_workers=config.workers,
        generator=generator,
        persistent_workers=False,
    )
    steps_per_epoch = max(1, len(loader))

    start_epoch, best = 0, -math.inf
    if last.exists():
        state = torch.load(last, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        projector.load_state_dict(state["projector"])
        if head is not None:
            head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:  # the schedule is replayed from the base rate, not the saved one
            group["lr"] = group.get("initial_lr", config.lr)
        start_epoch, best = state["epoch"] + 1, state["best"]
        torch.set_rng_state(state["torch_rng"].cpu())  # map_location put it on the GPU; the CPU RNG wants it back
    scheduler = lr_schedule(optimizer, config.warmup_epochs * steps_per_epoch, config.epochs * steps_per_epoch)
    fast_forward(scheduler, start_epoch * steps_per_epoch)

    ddp_model: nn.Module = model
    if world > 1:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    amp_dtype = torch.bfloat16 if config.amp_dtype == "bfloat16" else torch.float16
    use_amp = config.amp and (device.type == "cuda" or amp_dtype == torch.bfloat16)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)
    started = time.monotonic()
    row: dict[str, Any] = {}
    for epoch in range(start_epoch, config.epochs):
        dataset.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        ddp_model.train()
        sums: dict[str, float] = {}
        seen = 0
        epoch_start = time.monotonic()
        bar = tqdm(
            loader, desc=f"{config.name} {epoch + 1}/{config.epochs}", disable=not progress or rank != 0, leave=False
        )
        for step_in_epoch, batch in enumerate(bar):
            x = batch["lr"].to(device, non_blocking=True)
            out: Outputs = {"label": batch["label"].to(device), "target": batch["target"].to(device)}
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                out["emb"] = ddp_model(x).float()
                if assistant is not None:
                    out.update(assistant.targets(x, batch, device))
                values = {t.name: t.fn(out) for t in terms}
                loss = torch.stack([t.weight * values[t.name] for t in terms]).sum()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            seen += len(x)
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
            bar.set_postfix(
                loss=f"{sums['loss'] / (step_in_epoch + 1):.4f}", fps=f"{seen / (time.monotonic() - epoch_start):.0f}"
            )
        row = {"epoch": epoch + 1, **{k: v / steps_per_epoch for k, v in sums.items()}}
        row["lr"] = optimizer.param_groups[0]["lr"]  # for the next step: the schedule, as it stands
        row["faces_per_s"] = seen * world / (time.monotonic() - epoch_start)
        if rank == 0:
            if val is not None:
                row.update(validate(model, val, config.input_size, device))
            score = row.get(config.select_by, row.get("val_accuracy", -row["loss"]))
            state = {
                "model": model.state_dict(),
                "head": head.state_dict() if head is not None else None,
                "projector": projector.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch,
                "best": max(best, score),
                "torch_rng": torch.get_rng_state(),
                "config": config.model_dump(),
            }
            if score > best:
                best = score
                _atomic_save(state, run_dir / "best.pt")
            _atomic_save(state, last)
            with (run_dir / "metrics.jsonl").open("a") as log:
                log.write(json.dumps(row) + "\n")
            if progress:
                tqdm.write(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
        out_of_time = max_minutes is not None and (time.monotonic() - started) / 60 > max_minutes
        if rank0_decides(out_of_time, device, world) and epoch + 1 < config.epochs:
            row["stopped_early"] = True
            break
    if world > 1:
        dist.barrier()
    return row
