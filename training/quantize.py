"""INT8 variant of a released student: ONNX Runtime static quantization (QDQ, per-channel weights),
calibrated on LR faces of the training split, thresholds re-calibrated on the validation split."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from lrface.data.lfw import identity_split
from lrface.embedder import FaceInput, OnnxEmbedder
from lrface.model_card import ModelCard, load_card
from lrface.settings import Settings
from training.config import TrainConfig
from training.release import calibrate_thresholds, choose_gallery_from_teacher
from training.teacher_cache import TeacherCache
from training.validation import val_data


def calibration_inputs(chips: np.ndarray, model_dir: Path, count: int, seed: int = 0) -> np.ndarray:
    """``count`` model inputs from random HR chips, through the embedder's canonical preprocessing."""
    rows = np.random.default_rng(seed).choice(len(chips), size=min(count, len(chips)), replace=False)
    embedder = OnnxEmbedder(model_dir, "cpu")
    return np.stack([embedder.preprocess(FaceInput(chips[i])) for i in sorted(rows)])


def quantize_model(model_dir: Path, out: Path, inputs: np.ndarray) -> ModelCard:
    """Write the INT8 ``model.onnx`` and a copy of the card (name ``<name>-int8``) into ``out``."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    card = load_card(model_dir)
    input_name = onnx.load(str(model_dir / card.onnx_file)).graph.input[0].name

    class Batches(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._batches = iter([{input_name: inputs[i : i + 64]} for i in range(0, len(inputs), 64)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Symbolic shape inference cannot follow the teacher-lr network's shape arithmetic (dlib's sums over
        # the overlap of two shapes); ONNX's own shape inference is enough for static quantisation.
        quant_pre_process(str(model_dir / card.onnx_file), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out / card.onnx_file),
            Batches(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    int8 = card.model_copy(deep=True)
    int8.name = f"{card.name}-int8"
    int8.accuracy = {"quantized_from": card.model_id, "calibration_faces": int(len(inputs))}
    int8.save(out)
    return int8


def quantize_release(settings: Settings, model_dir: Path, out: Path, calibration_faces: int = 512) -> ModelCard:
    config = TrainConfig.model_validate_json((model_dir / "train_config.json").read_text())
    split = identity_split(settings.lfw_root(), config.val_fraction, config.seed)
    cache = TeacherCache(settings.cache, config.teacher)
    train_files = sorted(f for files in split.train.values() for f in files)
    chips = cache.targets(train_files).chips
    card = quantize_model(model_dir, out, calibration_inputs(chips, model_dir, calibration_faces))
    val = val_data(split.val, cache, config.seed)
    calibrate_thresholds(card, out, val)
    if card.gallery_from_teacher is not None:  # its own threshold (and check) for the INT8 network; distant
        # views are not carried over: `lrface bench frames --calibrate-routing --update-card` chooses the INT8's
        centre = card.gallery_from_teacher.centre
        card.gallery_from_teacher = None
        choose_gallery_from_teacher(card, out, val, centre)
    shutil.copy(model_dir / "train_config.json", out / "train_config.json")
    return card
