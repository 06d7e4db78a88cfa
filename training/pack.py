"""A compact training pack: everything a run needs in one file, for a GPU machine that has neither the
data nor dlib nor the teacher cache. Canonical chips (:data:`lrface.preprocessing.CHIP_SIDE` px) are
stored as JPEG mosaics (chip edges fall on JPEG block edges, so no chip bleeds into another), teacher
targets as float16; validation chips the same way, with their pairs and people; where the config
uses detected views (:mod:`training.detected_views`), the training and validation faces' views as
they are, with what made them (a run refuses views made with other settings).

``lrface pack CONFIG`` writes one; ``lrface train CONFIG --pack FILE`` trains from it. A run from a
pack sees the chips after one JPEG round trip (quality :data:`QUALITY`, mean absolute error about 2.7
grey levels at 64 px, averaged away at the 16-px input); every view still goes through the canonical
preprocessing.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from lrface.preprocessing import CHIP_SIDE, box_to_chip, encode_image, resize
from training.config import PACK_JPEG_QUALITY
from training.dataset import FaceArrays
from training.validation import ValData

QUALITY = PACK_JPEG_QUALITY
TILES = 32  # chips per mosaic side: 32 x 32 chips of 64 px make 2048-px JPEGs


def _canonical(chips: np.ndarray) -> np.ndarray:
    """Chips of exactly :data:`CHIP_SIDE` px (the training chips are larger; a smaller one is enlarged)."""
    if chips.shape[1] == CHIP_SIDE:
        return np.asarray(chips)
    return np.stack([resize(box_to_chip(np.asarray(chip)), CHIP_SIDE) for chip in chips])


def encode_chips(chips: np.ndarray, quality: int = QUALITY) -> list[bytes]:
    """Canonical chips -> JPEG mosaics of ``TILES x TILES`` chips (the last one padded with black)."""
    chips = _canonical(chips)
    per = TILES * TILES
    out = []
    for start in range(0, len(chips), per):
        part = chips[start : start + per]
        padded = np.zeros((per, CHIP_SIDE, CHIP_SIDE, 3), np.uint8)
        padded[: len(part)] = part
        mosaic = padded.reshape(TILES, TILES, CHIP_SIDE, CHIP_SIDE, 3).transpose(0, 2, 1, 3, 4)
        out.append(encode_image(mosaic.reshape(TILES * CHIP_SIDE, TILES * CHIP_SIDE, 3), "JPEG", quality))
    return out


def decode_chips(mosaics: list[bytes], count: int) -> np.ndarray:
    tiles = []
    for data in mosaics:
        mosaic = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.uint8)
        grid = mosaic.reshape(TILES, CHIP_SIDE, TILES, CHIP_SIDE, 3).transpose(0, 2, 1, 3, 4)
        tiles.append(grid.reshape(TILES * TILES, CHIP_SIDE, CHIP_SIDE, 3))
    return np.concatenate(tiles)[:count] if tiles else np.zeros((0, CHIP_SIDE, CHIP_SIDE, 3), np.uint8)


def _blob(mosaics: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.cumsum([0, *(len(m) for m in mosaics)]).astype(np.int64)
    return np.frombuffer(b"".join(mosaics), np.uint8), offsets


def _unblob(data: np.ndarray, offsets: np.ndarray) -> list[bytes]:
    raw = data.tobytes()
    return [raw[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def write_pack(path: Path, train: FaceArrays, val: ValData, quality: int = QUALITY) -> int:
    """Write ``train`` and ``val`` to ``path`` (.npz), chips at JPEG ``quality``; returns its size in bytes."""
    arrays: dict[str, np.ndarray] = {
        "labels": train.labels.astype(np.int32),
        "emb": train.emb.astype(np.float16),
        "emb_flip": train.emb_flip.astype(np.float16),
        "val_pairs": val.pairs.astype(np.int32),
        "val_same": val.same,
    }
    if val.labels is not None:
        arrays["val_labels"] = val.labels.astype(np.int32)
    named = {"chips": train.chips, "val_chips": val.chips}
    if train.detector_chips is not None:
        named["detector_chips"] = train.detector_chips
    for name, chips in named.items():
        arrays[name], arrays[f"{name}_offsets"] = _blob(encode_chips(chips, quality))
        arrays[f"{name}_count"] = np.asarray(len(chips))
    # Detected views are kept as they are (input-sized, a few hundred bytes each): a JPEG round trip
    # would add to the very compression they are made of.
    for prefix, faces in (("", train), ("val_", val)):
        if faces.detected is not None:
            arrays[f"{prefix}detected_views"], arrays[f"{prefix}detected_found"] = faces.detected
            arrays[f"{prefix}detected_recipe"] = np.asarray(faces.detected_recipe)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, allow_pickle=False, **arrays)
    return path.stat().st_size


def read_pack(path: Path) -> tuple[FaceArrays, ValData]:
    with np.load(path) as pack:

        def chips(name: str) -> np.ndarray:
            return decode_chips(_unblob(pack[name], pack[f"{name}_offsets"]), int(pack[f"{name}_count"]))

        def detected(prefix: str) -> dict[str, object]:
            if f"{prefix}detected_views" not in pack:
                return {}
            views = (pack[f"{prefix}detected_views"], pack[f"{prefix}detected_found"].astype(bool))
            return {"detected": views, "detected_recipe": str(pack[f"{prefix}detected_recipe"])}

        train = FaceArrays(
            chips=chips("chips"),
            labels=pack["labels"].astype(np.int64),
            emb=pack["emb"].astype(np.float32),
            emb_flip=pack["emb_flip"].astype(np.float32),
            detector_chips=chips("detector_chips") if "detector_chips" in pack else None,
            **detected(""),  # type: ignore[arg-type]
        )
        val = ValData(
            chips=chips("val_chips"),
            pairs=pack["val_pairs"].astype(np.int64),
            same=pack["val_same"].astype(bool),
            labels=pack["val_labels"].astype(np.int64) if "val_labels" in pack else None,
            **detected("val_"),  # type: ignore[arg-type]
        )
    return train, val
