"""The one training loop. Loss terms are plug-ins built from the config's weights; the loop only
sums them. Resumable (``last.pt``), seeded, DDP-aware (``torchrun``: gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from training.config import TrainConfig
from training.dataset import DistillDataset, FaceArrays, center_targets, shrink_chips
from training.losses import EmbeddingMatchLoss, LogitKDLoss, MarginSoftmax, PairwiseDistanceLoss, TripletAngleLoss
from training.metrics import kfold_accuracy
from training.models import get_model

Outputs = dict[str, torch.Tensor]


@dataclass
class ValData:
    """Validation faces (clean chips) and pairs of row indices with a same-person flag."""

    chips: np.ndarray
    pairs: np.ndarray  # (P, 2) int
    same: np.ndarray  # (P,) bool


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


class FrozenAssistant(nn.Module):
    """A trained assistant run, frozen: gives embeddings (and identity logits) as extra targets."""

    def __init__(self, run_dir: Path, device: torch.device) -> None:
        super().__init__()
        config = TrainConfig.load(run_dir / "config.json")
        state = torch.load(run_dir / "best.pt", map_location=device, weights_only=False)
        self.input_size = config.input_size
        self.model = get_model(config.model, config.input_size, config.embedding_size)
        self.model.load_state_dict(state["model"])
        self.head = None
        if state.get("head") is not None:
            self.head = MarginSoftmax(config.embedding_size, state["head"]["weight"].shape[0])
            self.head.load_state_dict(state["head"])
        self.to(device).eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        emb = self.model(x)
        logits = self.head.cosine(emb) * self.head.scale if self.head is not None else None
        return emb, logits


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


@torch.no_grad()
def embed_batches(model: nn.Module, inputs: np.ndarray, device: torch.device, batch: int = 512) -> np.ndarray:
    model.eval()
    out = [
        model(torch.from_numpy(inputs[i : i + batch]).to(device)).float().cpu() for i in range(0, len(inputs), batch)
    ]
    return F.normalize(torch.cat(out)).numpy()


def validate(model: nn.Module, val: ValData, input_size: int, device: torch.device) -> float:
    from lrface.preprocessing import face_to_input

    inputs = np.stack([face_to_input(chip, input_size) for chip in val.chips])
    emb = embed_batches(model, inputs, device)
    scores = (emb[val.pairs[:, 0]] * emb[val.pairs[:, 1]]).sum(1)
    return kfold_accuracy(scores, val.same)[0]


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
    if config.init_from:
        init = torch.load(config.init_from, map_location=device, weights_only=False)
        model.load_state_dict(init["model"])
    assistant = FrozenAssistant(Path(config.assistant_run), device) if config.assistant_run else None

    terms = build_terms(config, head, projector, assistant is not None)
    if not terms:
        raise ValueError("every loss weight is zero: nothing to train")
    params = [p for m in (model, head, projector) if m is not None for p in m.parameters()]
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)

    hr_size = assistant.input_size if assistant is not None and assistant.input_size != config.input_size else None
    train_data = shrink_chips(train_data, max(config.train_chip_size, hr_size or 0, config.input_size))
    if config.center_targets:
        train_data = center_targets(train_data)
    dataset = DistillDataset(
        train_data, config.input_size, config.augment if config.augment_enabled else None, config.seed, hr_size
    )
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
    total_steps = config.epochs * steps_per_epoch

    def lr_at(step: int) -> float:
        warm = config.warmup_epochs * steps_per_epoch
        if step < warm:
            return config.lr * (step + 1) / warm
        return 0.5 * config.lr * (1 + math.cos(math.pi * (step - warm) / max(1, total_steps - warm)))

    start_epoch, best = 0, -math.inf
    last = run_dir / "last.pt"
    if last.exists():
        state = torch.load(last, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        projector.load_state_dict(state["projector"])
        if head is not None:
            head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best = state["epoch"] + 1, state["best"]
        torch.set_rng_state(state["torch_rng"])

    ddp_model: nn.Module = model
    if world > 1:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
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
            step = epoch * steps_per_epoch + step_in_epoch
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            x = batch["lr"].to(device, non_blocking=True)
            out: Outputs = {"label": batch["label"].to(device), "target": batch["target"].to(device)}
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                out["emb"] = ddp_model(x).float()
                if assistant is not None:
                    a_in = batch["hr"].to(device) if hr_size is not None else x
                    out["assistant"], a_logits = assistant(a_in)
                    if a_logits is not None:
                        out["assistant_logits"] = a_logits
                values = {t.name: t.fn(out) for t in terms}
                loss = torch.stack([t.weight * values[t.name] for t in terms]).sum()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            seen += len(x)
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
            bar.set_postfix(
                loss=f"{sums['loss'] / (step_in_epoch + 1):.4f}", fps=f"{seen / (time.monotonic() - epoch_start):.0f}"
            )
        row = {"epoch": epoch + 1, **{k: v / steps_per_epoch for k, v in sums.items()}}
        row["faces_per_s"] = seen * world / (time.monotonic() - epoch_start)
        if rank == 0:
            if val is not None:
                row["val_accuracy"] = validate(model, val, config.input_size, device)
            score = row.get("val_accuracy", -row["loss"])
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
        if max_minutes is not None and (time.monotonic() - started) / 60 > max_minutes and epoch + 1 < config.epochs:
            row["stopped_early"] = True
            break
    if world > 1:
        dist.barrier()
    return row
