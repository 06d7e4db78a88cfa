"""Request and response bodies (pydantic); their descriptions and examples make the /docs page."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from lrface.settings import OperatingPoint

SUBJECT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
SUBJECT_ID_RE = re.compile(SUBJECT_ID_PATTERN)
# JSON parsers accept Infinity and NaN: refused at validation (422) wherever a number comes in.
Finite = Annotated[float, Field(allow_inf_nan=False)]
Box = tuple[Finite, Finite, Finite, Finite]
GALLERY_NAME_PATTERN = SUBJECT_ID_PATTERN  # lrface.settings.GALLERY_NAME_RE: API keys name galleries too
GalleryName = Annotated[
    str,
    Field(
        pattern=GALLERY_NAME_PATTERN,
        description="The gallery searched (see GET /galleries); 'default' is the one of the /gallery/... routes.",
        examples=["default", "lobby"],
    ),
]


class Strict(BaseModel):
    """A request body: fields it does not know are refused (422), never ignored."""

    model_config = ConfigDict(extra="forbid")


def _detect_mode(value: object) -> object:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        lowered = value.strip().lower()
        return {"1": "true", "yes": "true", "on": "true", "0": "false", "no": "false", "off": "false"}.get(
            lowered, lowered
        )
    return value


Detect = Annotated[
    Literal["auto", "true", "false"],
    BeforeValidator(_detect_mode),
    Field(
        description="How faces are taken from each image. 'auto' (default): an image that is a face chip (shorter "
        "side at most 64 px, or one face filling it) is the face; any other (a photo, a frame) is searched and "
        "yields its faces. 'true': always search (no face found: the answer says so). 'false': the whole image "
        "(or its box) is the face. JSON booleans are accepted. A `box` always names the face."
    ),
]
IncludeInput = Annotated[
    bool,
    Field(description="Add to each face the model's input as the model saw it (`input_png`, a PNG data URL)."),
]
InputKind = Annotated[
    Literal["chip", "crop", "detected", "box"],
    Field(
        description="How the face was taken: 'chip' (the whole image), 'crop' (a small image cut tight around a "
        "face, framed as its own box), 'detected' (found by the detector), 'box' (the client's box)."
    ),
]


class ImageIn(Strict):
    """One image as base64 (standard alphabet; a data: URL prefix is accepted)."""

    data: str = Field(
        description="Base64-encoded image bytes (JPEG, PNG, WebP, BMP, PGM, TIFF).", examples=["iVBORw0KGgo..."]
    )
    box: Box | None = Field(
        None, description="Face box [left, top, right, bottom] in pixels: this is the face (no search)."
    )


class EmbeddingIn(Strict):
    """An embedding computed by an edge client running the same ONNX model."""

    values: list[Finite] = Field(description="The embedding (unit length not required).", max_length=4096)
    model_version: str = Field(description="'name:version' of the model that computed it (see /readyz).")


class EmbedRequest(Strict):
    images: list[ImageIn] = Field(min_length=1, description="Face chips, photos or frames.")
    detect: Detect = "auto"
    include_input: IncludeInput = False


EmbedderName = Annotated[
    Literal["student", "teacher", "student+teacher"],
    Field(
        description="Which model embedded the face: 'student' (small faces), 'teacher' (faces of at least the "
        "card's switch: routing.chip_min_face_px for a chip or box, routing.detected_min_face_px for a detected "
        "face, either absent: routing.min_face_px) or 'student+teacher' (a smaller face embedded by both, fused in "
        "the student's space: the card's routing.detected_fusion for a detected face, routing.chip_fusion for a "
        "chip or box from its from_face_px); scores of the teacher are not comparable with the others'."
    ),
]


class FaceFound(BaseModel):
    """One face of a request: where it is and how it was taken."""

    image: int = Field(0, description="Index of the image it was found in (the request's order).")
    input: InputKind = "chip"
    box: Box | None = Field(
        description="The face box in the image's pixels: the detector's (clipped to the image), the client's, or "
        "None for a whole-image chip."
    )
    box_clipped: bool = Field(False, description="The client's box reached outside the image and was clipped to it.")
    detection_score: float | None = Field(None, description="The detector's face probability (None: not detected).")
    face_px: float = Field(
        0.0,
        description="Side of the square the models see, in the image's pixels (a chip: its longer side); the "
        "routing compares it with the card's switches (see `embedder`).",
    )
    embedder: EmbedderName = "student"
    input_png: str | None = Field(
        None, description="With include_input: the model's input as it saw it (data:image/png;base64,...)."
    )


class FaceEmbedding(FaceFound):
    embedding: list[float]


class EmbedResponse(BaseModel):
    model: str
    model_version: str
    embedder: EmbedderName = "student"
    faces: list[FaceEmbedding] = Field(description="Every face, image by image, the largest first within an image.")
    embeddings: list[FaceEmbedding] = Field(
        description="The same list as `faces` (the name used before detection; kept for existing clients)."
    )
    images_without_face: list[int] = Field(
        default_factory=list, description="Indexes of the images searched in which no face was found."
    )


class IdentifyRequest(Strict):
    image: ImageIn | None = None
    images: list[ImageIn] | None = Field(
        None, min_length=1, description="Several images of one person (a track): give fuse=true."
    )
    embedding: EmbeddingIn | None = None
    top_k: int = Field(5, ge=1, le=100)
    threshold: Finite | None = Field(None, ge=-1.0, le=1.0, description="Overrides the model card's threshold.")
    operating_point: OperatingPoint | None = Field(
        None,
        description="Where each face is decided, by its kind's threshold: 'best_accuracy', or 'fpir_10' / 'fpir_1' "
        "(the one an unknown face reaches 10% / 1% of the time in a search of this gallery, scaled to its size). "
        "Default: LRFACE_OPERATING_POINT; `threshold` overrides it.",
    )
    detect: Detect = "auto"
    fuse: bool = Field(
        False,
        description="The images are one track of one person: each image's face (its largest) is embedded, the "
        "embeddings averaged and searched once.",
    )
    include_input: IncludeInput = False
    gallery: GalleryName = "default"


class MatchOut(BaseModel):
    subject_id: str
    score: float = Field(description="Cosine similarity of the best face of this subject.")


Outcome = Literal["match", "unknown"]


# What a decision was made at: an operating point (LRFACE_OPERATING_POINT or the request's; 'best_accuracy' where
# the card has no open-set figure for the face's kind), or the request's own threshold.
DecidedAt = Literal["best_accuracy", "fpir_10", "fpir_1", "threshold"]


class IdentifiedFace(FaceFound):
    matches: list[MatchOut] | None = Field(None, description="This face's ranked subjects (None in a fused track).")
    threshold: float | None = None
    operating_point: DecidedAt | None = Field(
        None,
        description="What this face's threshold is: its kind's at the operating point asked for, 'best_accuracy' "
        "where the card measured no open-set figure for its kind, or 'threshold' (the request's own).",
    )
    decision: str | None = Field(None, description="The top subject when its score reaches the threshold, else null.")
    outcome: Outcome | None = Field(
        None, description="'match' (a decision) or 'unknown' (no enrolled subject reaches the threshold)."
    )


class IdentifyResponse(BaseModel):
    matches: list[MatchOut] = Field(description="The largest face's ranked subjects (the fused track's).")
    decision: str | None = Field(description="The top subject when its score reaches the threshold, else null.")
    outcome: Literal["match", "unknown", "no_face"] = Field(
        description="'match': a decision; 'unknown': a face, but no enrolled subject reaches the threshold; "
        "'no_face': no face was found in the image."
    )
    threshold: float
    model_version: str
    embedder: EmbedderName = "student"
    face_px: float | None = Field(
        None, description="The largest face's side (a fused track: its smallest face's); None: an embedding."
    )
    input: Literal["chip", "crop", "detected", "box", "embedding"] | None = Field(
        None, description="How the largest face was taken; None when there is none."
    )
    fused: int | None = Field(None, description="Faces averaged into the searched embedding (fuse=true).")
    operating_point: DecidedAt = Field(
        "best_accuracy",
        description="What the (largest face's) threshold is: its kind's at the request's (or the service's) operating "
        "point, 'best_accuracy' where the card measured no open-set figure for its kind, or 'threshold' when the "
        "request gave one.",
    )
    faces: list[IdentifiedFace] = Field(
        default_factory=list, description="Every face found, largest first, each identified on its own."
    )


class VerifyRequest(Strict):
    """Two faces (images or embeddings), or one face and an enrolled ``subject_id``."""

    image_a: ImageIn | None = None
    embedding_a: EmbeddingIn | None = None
    image_b: ImageIn | None = None
    embedding_b: EmbeddingIn | None = None
    subject_id: str | None = Field(None, pattern=SUBJECT_ID_PATTERN)
    threshold: Finite | None = Field(None, ge=-1.0, le=1.0)
    detect: Detect = "auto"
    gallery: GalleryName = Field("default", description="The gallery of `subject_id`.")


ProbeKind = Literal["chip", "crop", "detected", "box", "embedding"]


class VerifyResponse(BaseModel):
    score: float = Field(description="Similarity used for the decision (the best face's, against a subject).")
    same_person: bool
    threshold: float
    mean_score: float | None = Field(None, description="Mean over the subject's faces (subject mode only).")
    faces_compared: int = 1
    model_version: str
    embedder: EmbedderName = "student"
    input_a: ProbeKind = Field("chip", description="How the first face was taken (a searched image: its largest).")
    input_b: ProbeKind | None = Field(None, description="How the second face was taken (None: a subject).")


class EnrollRequest(Strict):
    images: list[ImageIn] = Field(
        min_length=1, description="One face per image: a chip, a box, or a photo's only (or clearly largest) face."
    )
    detect: Detect = "auto"


class EnrolledFace(BaseModel):
    face_id: int
    content_hash: str
    created: bool = Field(description="False when this exact image was already enrolled for the subject.")
    input: InputKind = "chip"
    box: Box | None = Field(None, description="The face enrolled, in the image's pixels (None: the whole image).")
    face_px: float = 0.0
    detection_score: float | None = None


class EnrollResponse(BaseModel):
    subject_id: str
    faces: list[EnrolledFace]


class FaceOut(BaseModel):
    face_id: int
    content_hash: str
    model_version: str
    created_at: float


class SubjectOut(BaseModel):
    subject_id: str
    created_at: float
    faces: list[FaceOut]


class SubjectSummary(BaseModel):
    subject_id: str
    face_count: int
    created_at: float


class SubjectPage(BaseModel):
    items: list[SubjectSummary]
    total: int
    offset: int
    limit: int


class GalleryOut(BaseModel):
    name: str
    created_at: float
    subject_count: int
    face_count: int


class GalleryList(BaseModel):
    items: list[GalleryOut] = Field(description="Every gallery this API key may use, by name.")


class GalleryDeleted(BaseModel):
    gallery: str
    deleted_subjects: int
    deleted_faces: int


class Ready(BaseModel):
    ready: bool
    model: str
    model_version: str
    model_sha256: str = Field(description="SHA-256 of the served ONNX weights (edge clients can compare theirs).")
    input_size: int
    embedding_size: int
    threshold: float
    providers: list[str]
    gallery_store: str
    gallery_faces: int
    gallery_seq: int = Field(description="Gallery change-log position this process's index reflects.")
    index_kind: str
    index_device: str
    embedders: str = Field(description="Which model serves which faces.")
    teacher_from_px: float | None = Field(
        None,
        description="Chips and boxes of at least this side go to the teacher (the card's routing.chip_min_face_px, "
        "else routing.min_face_px).",
    )
    chip_fused_from_px: float | None = Field(
        None,
        description="Chips and boxes from this side up to teacher_from_px are embedded by both models, fused (the "
        "card's routing.chip_fusion; None: the student alone below teacher_from_px).",
    )
    detected_teacher_from_px: float | None = Field(
        None,
        description="Faces the detector found go to the teacher from this face_px (the card's "
        "routing.detected_min_face_px; None: teacher_from_px).",
    )
    teacher_faces: int | None = Field(None, description="Faces in the teacher's index (None: no teacher).")
    operating_point: OperatingPoint = Field(
        "fpir_10", description="Where /identify decides unless a request says otherwise (LRFACE_OPERATING_POINT)."
    )
    student_gallery: str = Field(
        "student",
        description="What the student's index holds for each enrolled face: 'student' (its own embedding) or "
        "'teacher' (the teacher's centred embedding of the HR chip: the card's gallery_from_teacher, joined by "
        "the chip's distant views (the student's, or fused as detected probes are) where the card's "
        "gallery_from_teacher.distant_views says so).",
    )


class Problem(BaseModel):
    detail: str


def check_gallery_name(name: str) -> str:
    if not SUBJECT_ID_RE.fullmatch(name):  # fullmatch: re.match's '$' lets a trailing newline through
        raise ValueError(
            "a gallery name must be 1-128 characters of A-Z a-z 0-9 . _ - and start with a letter or digit"
        )
    return name


def check_subject_id(subject_id: str) -> str:
    if not SUBJECT_ID_RE.fullmatch(subject_id):
        raise ValueError("subject_id must be 1-128 characters of A-Z a-z 0-9 . _ - and start with a letter or digit")
    return subject_id
