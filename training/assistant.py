"""The assistant stream: a trained run (an LR network, or a compact HR one) frozen during the
student's training, giving embeddings and identity logits as extra distillation targets.

An assistant whose input side differs from the student's (the HR reading, e.g. 48 px) is fed its own
view of each face, made by the canonical preprocessing from the same chip (``DistillDataset`` item
``hr``); an assistant of the student's side sees the student's own (augmented) input.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from training.config import TrainConfig
from training.losses import MarginSoftmax
from training.models import get_model


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

    def own_view_size(self, student_input_size: int) -> int | None:
        """The side of the separate view this assistant needs, or None when it shares the student's."""
        return self.input_size if self.input_size != student_input_size else None

    def targets(
        self, student_input: torch.Tensor, batch: dict[str, torch.Tensor], device: torch.device
    ) -> dict[str, torch.Tensor]:
        """``assistant`` embeddings (and ``assistant_logits``) for one training batch."""
        x = batch["hr"].to(device) if "hr" in batch else student_input
        emb, logits = self(x)
        return {"assistant": emb} if logits is None else {"assistant": emb, "assistant_logits": logits}

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        emb = self.model(x)
        logits = self.head.cosine(emb) * self.head.scale if self.head is not None else None
        return emb, logits
