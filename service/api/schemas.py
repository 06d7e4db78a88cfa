"""Request and response bodies (pydantic); their descriptions and examples make the /docs page."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, Field

SUBJECT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
SUBJECT_ID_RE = re.compile(SUBJECT_ID_PATTERN)
# JSON parsers accept Infinity and NaN: refused at validation (422) wherever a number comes in.
Finite = Annotated[float, Field(allow_inf_nan=False)]
Box = tuple[Finite, Finite, Finite, Finite]


class ImageIn(BaseModel):
    """One image as base64 (standard alphabet; a data: URL prefix is accepted)."""

    data: str = Field(
        description="Base64-encoded image bytes (JPEG, PNG, WebP, BMP, PGM, TIFF).", examples=["iVBORw0KGgo..."]
    )
    box: Box | None = Field(None, description="Face box [left, top, right, bottom] in pixels; whole image when absent.")


class EmbeddingIn(BaseModel):
    """An embedding computed by an edge client running the same ONNX model."""

    values: list[Finite] = Field(description="The embedding (unit length not required).", max_length=4096)
    model_version: str = Field(description="'name:version' of the model that computed it (see /readyz).")


class EmbedRequest(BaseModel):
    images: list[ImageIn] = Field(min_length=1, description="One or more faces.")
    detect: bool = Field(False, description="Find and align the largest face first (needs the dlib extra).")


class FaceEmbedding(BaseModel):
    embedding: list[float]
    box: Box | None = Field(description="The face box used, in input-image pixels (None: the whole image).")
    box_clipped: bool = Field(False, description="The given box reached outside the image and was clipped to it.")
    face_px: float = Field(0.0, description="The face's side in the image as sent (its box's, or the image's).")


EmbedderName = Annotated[
    Literal["student", "teacher"],
    Field(
        description="Which model embedded the face: 'student' (small faces) or 'teacher' (faces of at least the "
        "card's routing.min_face_px); scores of one are not comparable with the other's."
    ),
]


class EmbedResponse(BaseModel):
    model: str
    model_version: str
    embedder: EmbedderName = "student"
    embeddings: list[FaceEmbedding]


class IdentifyRequest(BaseModel):
    image: ImageIn | None = None
    embedding: EmbeddingIn | None = None
    top_k: int = Field(5, ge=1, le=100)
    threshold: Finite | None = Field(None, ge=-1.0, le=1.0, description="Overrides the model card's threshold.")
    detect: bool = False


class MatchOut(BaseModel):
    subject_id: str
    score: float = Field(description="Cosine similarity of the best face of this subject.")


class IdentifyResponse(BaseModel):
    matches: list[MatchOut]
    decision: str | None = Field(description="The top subject when its score reaches the threshold, else null.")
    threshold: float
    model_version: str
    embedder: EmbedderName = "student"
    face_px: float | None = Field(None, description="The probe face's side in the image as sent (None: embedding).")


class VerifyRequest(BaseModel):
    """Two faces (images or embeddings), or one face and an enrolled ``subject_id``."""

    image_a: ImageIn | None = None
    embedding_a: EmbeddingIn | None = None
    image_b: ImageIn | None = None
    embedding_b: EmbeddingIn | None = None
    subject_id: str | None = Field(None, pattern=SUBJECT_ID_PATTERN)
    threshold: Finite | None = Field(None, ge=-1.0, le=1.0)
    detect: bool = False


class VerifyResponse(BaseModel):
    score: float = Field(description="Similarity used for the decision (the best face's, against a subject).")
    same_person: bool
    threshold: float
    mean_score: float | None = Field(None, description="Mean over the subject's faces (subject mode only).")
    faces_compared: int = 1
    model_version: str
    embedder: EmbedderName = "student"


class EnrollRequest(BaseModel):
    images: list[ImageIn] = Field(min_length=1)
    detect: bool = False


class EnrolledFace(BaseModel):
    face_id: int
    content_hash: str
    created: bool = Field(description="False when this exact image was already enrolled for the subject.")


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
    teacher_from_px: int | None = Field(None, description="Faces of at least this side go to the teacher.")
    teacher_faces: int | None = Field(None, description="Faces in the teacher's index (None: no teacher).")


class Problem(BaseModel):
    detail: str


def check_subject_id(subject_id: str) -> str:
    if not SUBJECT_ID_RE.match(subject_id):
        raise ValueError("subject_id must be 1-128 characters of A-Z a-z 0-9 . _ - and start with a letter or digit")
    return subject_id
