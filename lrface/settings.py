"""All runtime settings in one place, read from the environment with the ``LRFACE_`` prefix."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Where /identify decides (Settings.operating_point): each kind of face's best-accuracy threshold, or the
# one its validation measured an open-set false-positive identification rate (FPIR) of 10% / 1% at.
OperatingPoint = Literal["best_accuracy", "fpir_10", "fpir_1"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_MODEL_DIR = PROJECT_ROOT / "models" / "lrface-student"


# Gallery names follow the subject ids' rule (service.api.schemas.SUBJECT_ID_PATTERN).
GALLERY_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class KeyGrant:
    """What an API key may do: its scope, and the galleries it may use (None: every gallery)."""

    scope: Literal["read", "admin"]
    galleries: frozenset[str] | None = None


def _default_data_root() -> Path:
    # The shared data folder sits beside the checkout on our machines.
    for candidate in (PROJECT_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return Path.home() / ".cache" / "lrface" / "data"


class Settings(BaseSettings):
    """Settings of the service, the CLI and training. See the README's settings table."""

    model_config = SettingsConfigDict(env_prefix="LRFACE_", env_file=None, extra="ignore")

    data: Path = Field(default_factory=_default_data_root, description="Data root holding lfw/.")
    model: Path = Field(default=BUNDLED_MODEL_DIR, description="Model directory (model.onnx + card.json).")
    gallery_dir: Path = Field(default=Path("gallery"), description="Folder of the SQLite gallery.")
    database_url: str | None = Field(default=None, description="PostgreSQL URL; SQLite when unset.")
    api_keys: str = Field(
        default="",
        description="Comma-separated 'key:scope' pairs, scope 'read' (the default) or 'admin', each optionally "
        "limited to some galleries with '@name|name' ('k1:read@lobby|staff,k2:admin@lobby'): such a key gets 403 "
        "on any other gallery (the `/gallery/...` routes are the gallery 'default'), and only an admin key "
        "without '@' creates or deletes galleries. "
        "Empty: no auth, which `lrface serve` allows on loopback only (see allow_anonymous).",
    )
    allow_anonymous: bool = Field(
        False, description="Serve without API keys on a non-loopback address (every route open to anyone)."
    )
    cache: Path = Field(default=Path.home() / ".cache" / "lrface", description="Teacher caches, runs, ckpts.")
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_body_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_request_pixels: int = Field(
        80_000_000, ge=1, description="Decoded pixels allowed in one request, all images together (413 above)."
    )
    max_faces_per_request: int = 64
    detector: Literal["mtcnn", "off"] = Field(
        "mtcnn", description="Face detector for photos and frames ('off': every image or box is taken as one face)."
    )
    detector_model: Path = Field(
        default=PROJECT_ROOT / "models" / "mtcnn", description="Folder of the MTCNN networks (pnet/rnet/onet.onnx)."
    )
    teacher_model: Path = Field(
        default=PROJECT_ROOT / "models" / "teacher-dlib",
        description="Folder of the teacher's ONNX network (dlib's ResNet, `lrface export-teacher`), which serves "
        "faces from the card's switch (`routing.chip_min_face_px` for chips and boxes, `routing.detected_min_face_px` "
        "for detected faces; either absent: `routing.min_face_px`).",
    )
    detect_min_face_px: float = Field(
        16.0,
        ge=6.0,
        description="Smallest face side the detector looks for (px): the first level of its image pyramid, most "
        "of a frame's cost. MTCNN still finds faces a little smaller, so 16 finds at least as many faces as 12 "
        "from 16 px and nearly as many at 12 px for two thirds of the CPU (frames of validation people, `lrface bench "
        "frames --calibrate`, reports/bench/detect-threshold.json).",
    )
    detect_thresholds: Annotated[tuple[float, float, float], NoDecode] = Field(
        (0.85, 0.7, 0.9),
        description="MTCNN's three stage thresholds (P-, R-, O-Net), as 'p,r,o', chosen on frames of validation "
        "people (`lrface bench frames --calibrate`, reports/bench/detect-threshold.json). O-Net 0.9: 0.03 false "
        "faces per frame, every face of 20 px and more found (MTCNN's own 0.7: 0.18). P-Net 0.85: a third of the "
        "CPU per 1280x720 frame of MTCNN's 0.6 (fewer candidates for R-Net), one face fewer found at 12 and at "
        "16 px of about 60 each.",
    )
    max_faces_per_frame: int = Field(32, ge=1, le=1000, description="Faces kept per image, the largest first.")
    detect_max_pixels: int = Field(
        2_100_000,
        ge=10_000,
        le=3840 * 2160,
        description="Larger images are shrunk to this many pixels for the detector (memory: full HD is searched "
        "whole; one search of that size peaks near 400 MB).",
    )
    detect_concurrency: int = Field(
        2, ge=1, description="Detector searches run at once per process (each holds its pyramid in memory)."
    )
    detect_threads: int = Field(
        1,
        ge=0,
        description="ONNX Runtime threads of one detector search (0: all cores). One thread per search, with "
        "LRFACE_DETECT_CONCURRENCY searches at once, gives the most frames/s on few cores (reports/bench/"
        "detector.json: `python -m lrface.detection_bench --workers 2` with 1 and 2 threads); more threads "
        "shorten one search where frames come one at a time.",
    )
    detect_wait: float = Field(
        30.0, gt=0, description="Seconds a request waits for a free detector before it is answered 503."
    )
    index: Literal["auto", "flat", "hnsw"] = "auto"
    gallery_engine: Literal["auto", "faiss", "pgvector"] = Field(
        "auto",
        description="Where the gallery is searched: 'pgvector' in PostgreSQL (refused without the vector "
        "extension), 'faiss' in each process's memory; 'auto': pgvector where the database has it, else FAISS.",
    )
    pgvector_ef_search: int = Field(100, ge=1, description="pgvector HNSW candidates per search (recall vs speed).")
    hnsw_threshold: int = 50_000
    providers: Literal["auto", "cpu", "cuda"] = Field("auto", description="ONNX Runtime providers.")
    faiss_device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where FAISS searches.")
    threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads (0: all cores).")
    operating_point: OperatingPoint = Field(
        "fpir_10",
        description="Which threshold /identify (a 1:N search; /verify stays 1:1) decides at, per kind of face: "
        "'best_accuracy' (each model's same-person threshold on validation pairs), or 'fpir_10' / 'fpir_1': the one "
        "an unknown face reaches 10% / 1% of the time when the gallery searched is, scaled to that gallery's size "
        "from the card's per-comparison impostor scores (`open_set.per_comparison`; without them, as measured among "
        "the calibration's 963 people). The default is 'fpir_10': at 'best_accuracy' an unknown face is matched to "
        "someone of a large gallery almost always. A kind of face the card has no figure for keeps its best-accuracy "
        "threshold, and the answer says so. A request's `operating_point` overrides it, its `threshold` both.",
    )
    use_teacher: bool = Field(
        True, description="Serve large faces with the teacher where the model card routes them (needs dlib)."
    )
    gallery_load_attempts: int = Field(
        5, ge=1, description="Tries to load the gallery at start-up before /healthz fails (the process is restarted)."
    )
    gallery_load_backoff: float = Field(2.0, gt=0, description="Seconds before the first retry; doubles up to 60.")
    db_pool_size: int = Field(
        4, ge=1, description="PostgreSQL connections kept per process (5 replicas x 2 workers x 6 fit the default 100)."
    )
    db_max_overflow: int = Field(2, ge=0, description="Extra PostgreSQL connections per process under load.")
    sync_interval: float = Field(
        0.25, ge=0, description="Seconds between reads of the gallery change log (other workers/replicas; 0: off)."
    )

    @field_validator("data", "model", "gallery_dir", "cache", "detector_model", "teacher_model", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("detect_thresholds", mode="before")
    @classmethod
    def _thresholds(cls, value: object) -> object:
        if isinstance(value, str):  # LRFACE_DETECT_THRESHOLDS=0.6,0.7,0.7
            return tuple(float(v) for v in value.replace("[", "").replace("]", "").split(","))
        return value

    @field_validator("detect_thresholds", mode="after")
    @classmethod
    def _threshold_range(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(0.0 < v < 1.0 for v in value):
            raise ValueError("detector thresholds are probabilities between 0 and 1")
        return value

    def lfw_root(self) -> Path:
        return self.data / "lfw"

    def parsed_api_keys(self) -> dict[str, str]:
        """Map key -> scope. Raises ValueError on a malformed entry."""
        return {key: grant.scope for key, grant in self.api_key_grants().items()}

    def api_key_grants(self) -> dict[str, KeyGrant]:
        """Map key -> :class:`KeyGrant` ('key:scope@gallery|gallery'). Raises ValueError on a malformed entry."""
        keys: dict[str, KeyGrant] = {}
        for entry in filter(None, (part.strip() for part in self.api_keys.split(","))):
            key, _, grant = entry.partition(":")
            scope, limited, names = grant.partition("@")
            scope = scope or "read"  # least privilege: admin must be asked for
            if scope not in ("read", "admin") or not key:
                raise ValueError(
                    f"LRFACE_API_KEYS entry {entry!r}: expected 'key:read' or 'key:admin' "
                    "(optionally '@gallery|gallery')"
                )
            galleries = frozenset(names.split("|")) if limited else None
            if galleries is not None and not all(GALLERY_NAME_RE.fullmatch(name) for name in galleries):
                raise ValueError(
                    f"LRFACE_API_KEYS entry {entry!r}: galleries after '@' are names of A-Z a-z 0-9 . _ - separated "
                    "by '|'"
                )
            keys[key] = KeyGrant("admin" if scope == "admin" else "read", galleries)
        return keys


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
