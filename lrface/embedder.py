"""The one ONNX embedder: a released model directory (``model.onnx`` + ``card.json``) run by ONNX
Runtime, its input size and normalisation taken from the card.

Callers: the service (``service.app`` lifespan, enrolment, re-embedding), evaluation, release
threshold calibration and quantisation (``training.evaluate``, ``training.release``,
``training.quantize``). Faces reach it as decoded images with an optional box and go through
:func:`lrface.preprocessing.face_to_input`, the canonical preprocessing. :func:`onnx_session` (providers,
threads, CUDA falling back to the CPU) also opens the teacher's network (:mod:`lrface.teacher`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lrface.model_card import ModelCard, ModelCardError, check_input_shape, load_card
from lrface.preprocessing import face_to_input

log = logging.getLogger("lrface.embedder")


def choose_providers(setting: str, available: Sequence[str]) -> list[str]:
    """ONNX Runtime providers for ``setting`` ('auto', 'cpu', 'cuda') given what the build offers."""
    if setting == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if setting == "cuda":
        log.warning("LRFACE_PROVIDERS=cuda but this onnxruntime has no CUDA provider; falling back to CPU")
    return ["CPUExecutionProvider"]


def onnx_session(path: Path, providers: str = "auto", threads: int = 0) -> Any:
    """An ONNX Runtime session for ``path`` on the providers ``providers`` asks for ('auto', 'cpu',
    'cuda'), with ``threads`` intra-op threads (0: ONNX Runtime's choice)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    # Idle intra-op threads sleep instead of spinning (ONNX Runtime's default is to spin): the service
    # runs requests and the detector side by side on few cores, where spinning threads take the CPU
    # the others need (`lrface bench frames` reports the server's CPU per frame).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return open_with_fallback(ort, str(path), options, choose_providers(providers, ort.get_available_providers()))


def open_with_fallback(ort: Any, path: str, options: Any, chosen: list[str]) -> Any:
    """Open the session; a CUDA provider that cannot start (no GPU visible) falls back to the CPU."""
    if "CUDAExecutionProvider" not in chosen:
        return ort.InferenceSession(path, options, providers=chosen)
    try:
        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()  # CUDA/cuDNN from NVIDIA's pip wheels (the GPU image has no system CUDA)
        session = ort.InferenceSession(path, options, providers=chosen)
    except Exception as exc:  # noqa: BLE001
        log.warning("CUDA execution provider failed (%s); running on the CPU", exc)
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    if "CUDAExecutionProvider" not in session.get_providers():
        log.warning("no usable GPU for ONNX Runtime (CUDA provider did not start); running on the CPU")
    return session


@dataclass(frozen=True)
class FaceInput:
    image: np.ndarray  # decoded uint8 RGB
    box: tuple[float, float, float, float] | None = None

    def mirrored(self) -> FaceInput:
        """The same face seen in a mirror: the image flipped left to right, the box with it."""
        width = self.image.shape[1]
        box = None if self.box is None else (width - self.box[2], self.box[1], width - self.box[0], self.box[3])
        return FaceInput(np.ascontiguousarray(self.image[:, ::-1]), box)


class OnnxEmbedder:
    """Embeds faces with a released model; ``batch`` bounds the inputs run at once."""

    batch = 256

    def __init__(self, model_dir: Path, providers: str = "auto", threads: int = 0) -> None:
        self.card: ModelCard = load_card(model_dir)
        path = model_dir / self.card.onnx_file
        try:
            self.session = onnx_session(path, providers, threads)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ModelCardError(f"cannot load {path}: {exc}") from None
        self.providers = list(self.session.get_providers())
        graph_input = self.session.get_inputs()[0]
        check_input_shape(self.card, list(graph_input.shape))
        self.input_name = graph_input.name
        self.norm = self.card.normalisation.to_normalisation()
        log.info("model %s %s on %s", self.card.name, self.card.version, self.providers)

    @property
    def model_version(self) -> str:
        """``name:version``, as clients see it (responses, edge embeddings)."""
        return self.card.model_version

    @property
    def model_id(self) -> str:
        """``name:version@hash``: what the gallery records with each embedding (see the card)."""
        return self.card.model_id

    def preprocess(self, face: FaceInput) -> np.ndarray:
        return face_to_input(face.image, self.card.input_size, face.box, self.norm)

    def embed_inputs(self, batch: np.ndarray) -> np.ndarray:
        """``(N, 3, S, S)`` float32 -> ``(N, D)`` unit-norm float32."""
        (out,) = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        out = np.asarray(out, dtype=np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def embed(self, faces: Sequence[FaceInput]) -> np.ndarray:
        """Unit embeddings ``(N, D)`` of decoded faces (each an image and an optional box)."""
        if not faces:
            return np.zeros((0, self.card.embedding_size), dtype=np.float32)
        parts = [
            self.embed_inputs(np.stack([self.preprocess(face) for face in faces[i : i + self.batch]]))
            for i in range(0, len(faces), self.batch)
        ]
        return np.concatenate(parts)

    def embed_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Unit embeddings of whole images (face chips of any size, no box)."""
        return self.embed([FaceInput(np.asarray(image)) for image in images])
