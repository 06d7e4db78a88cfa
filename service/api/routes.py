"""Routes: parse the request, call the embedder and gallery, shape the response. No work of their own."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from service.api import schemas as s
from service.api.auth import require
from service.api.inputs import (
    DecodedFace,
    FaceDecoder,
    decode_b64,
    form_body,
    is_multipart,
    json_body,
    parse_bool,
    parse_box,
    upload_bytes,
)
from service.embedder import Embedder
from service.gallery.chips import face_chip_png
from service.gallery.gallery import Gallery
from service.gallery.store import NewFace

router = APIRouter()
# Request bodies the routes parse themselves (JSON or multipart): their schemas are added to the
# OpenAPI components by ``request_body_schemas`` so the `$ref`s below resolve.
BODY_MODELS: list[type[BaseModel]] = []


def _both_bodies(model: type[BaseModel], multipart_fields: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI: the route takes JSON (base64 images) or multipart (file uploads)."""
    BODY_MODELS.append(model)
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}},
                "multipart/form-data": {"schema": {"type": "object", "properties": multipart_fields}},
            },
        }
    }


FILE = {"type": "string", "format": "binary"}
FILES = {"type": "array", "items": FILE}
BOX = {"type": "string", "description": "left,top,right,bottom", "example": "10,12,74,80"}


def gallery_of(request: Request) -> Gallery:
    """The loaded gallery, or 503 while its index is still being built (or failed to load)."""
    gallery: Gallery | None = request.app.state.gallery
    if gallery is None:
        loader = getattr(request.app.state, "gallery_loader", None)
        detail = loader.status() if loader is not None else "gallery not loaded"
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail, headers={"Retry-After": "5"})
    return gallery


class Ctx:
    """What the routes need from app state, typed."""

    def __init__(self, request: Request) -> None:
        state = request.app.state
        self.embedder: Embedder = state.embedder
        self.decoder: FaceDecoder = state.decoder
        self.settings = state.settings
        self.request = request

    @property
    def gallery(self) -> Gallery:
        return gallery_of(self.request)

    @property
    def threshold(self) -> float:
        return self.embedder.card.threshold

    async def faces_from_json(self, images: list[s.ImageIn], detect: bool, what: str) -> list[DecodedFace]:
        self._check_count(len(images))
        out = []
        for i, image in enumerate(images):
            label = f"{what}[{i}]" if len(images) > 1 else what
            data = decode_b64(image, label, self.settings.max_body_bytes)
            out.append(await run_in_threadpool(self.decoder.decode, data, label, image.box, detect))
        return out

    async def faces_from_form(
        self, form: Any, field: str, detect: bool, boxes: list[str] | None = None
    ) -> list[DecodedFace]:
        uploads = form.getlist(field)
        if not uploads:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"multipart field '{field}' (a file) is required")
        self._check_count(len(uploads))
        boxes = boxes or []
        if boxes and len(boxes) != len(uploads):
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_ENTITY, f"give one box per file or none ({len(uploads)} files)"
            )
        out = []
        for i, upload in enumerate(uploads):
            label = getattr(upload, "filename", None) or f"{field}[{i}]"
            data = await upload_bytes(upload, label)
            box = parse_box(boxes[i]) if boxes else None
            out.append(await run_in_threadpool(self.decoder.decode, data, label, box, detect))
        return out

    def _check_count(self, count: int) -> None:
        limit = self.settings.max_faces_per_request
        if count > limit:
            raise HTTPException(
                status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"{count} faces in one request; the limit is {limit}"
            )

    async def embed(self, faces: list[DecodedFace]) -> np.ndarray:
        return await run_in_threadpool(self.embedder.embed, [f.face for f in faces])

    def check_embedding(self, emb: s.EmbeddingIn, what: str) -> np.ndarray:
        card = self.embedder.card
        if emb.model_version != self.embedder.model_version:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"{what} comes from model {emb.model_version!r}; this service runs {self.embedder.model_version!r}",
            )
        vector = np.asarray(emb.values, dtype=np.float64)
        if vector.shape != (card.embedding_size,):
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_ENTITY,
                f"{what} has {vector.size} values; the model gives {card.embedding_size}",
            )
        norm = float(np.linalg.norm(vector)) if np.isfinite(vector).all() else float("nan")
        if not np.isfinite(norm) or norm == 0:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"{what} must be finite and non-zero")
        return (vector / norm).astype(np.float32)

    async def image_list(self, model: type[s.EmbedRequest] | type[s.EnrollRequest]) -> list[DecodedFace]:
        """The ``images`` of an embed or enroll request: multipart files (with optional ``box`` fields)
        or base64 JSON."""
        if not is_multipart(self.request):
            body = await json_body(self.request, model)
            return await self.faces_from_json(body.images, body.detect, "images")
        form = await form_body(self.request, self.settings.max_faces_per_request + 1)
        detect = parse_bool(form.get("detect"), "detect")  # type: ignore[arg-type]
        return await self.faces_from_form(form, "images", detect, [str(b) for b in form.getlist("box")])

    async def read(self, model: type[Any], form_fields: tuple[str, ...], max_files: int) -> tuple[Any, Any]:
        """The request as ``(body model, multipart form or None)``: JSON bodies validate whole, multipart
        forms contribute ``form_fields`` (files are read later by field name)."""
        if not is_multipart(self.request):
            return await json_body(self.request, model), None
        form = await form_body(self.request, max_files)
        return _form_model(model, {k: form.get(k) for k in form_fields}), form

    async def optional_vector(
        self,
        form: Any,
        field: str,
        image: s.ImageIn | None,
        embedding: s.EmbeddingIn | None,
        detect: bool,
        box: str | None = None,
    ) -> np.ndarray | None:
        """The unit embedding of one face given as a file, a base64 image or an edge embedding, or None."""
        if form is not None:
            if form.get(field) is None:
                return None
            faces = await self.faces_from_form(form, field, detect, [box] if box else None)
        elif image is not None and embedding is not None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_ENTITY, f"give {field} as an image or an embedding, not both"
            )
        elif embedding is not None:
            return self.check_embedding(embedding, f"{field} embedding")
        elif image is not None:
            faces = await self.faces_from_json([image], detect, field)
        else:
            return None
        return (await self.embed(faces))[0]


def request_body_schemas() -> dict[str, Any]:
    """JSON schemas of ``BODY_MODELS`` (and the models they use), keyed for ``#/components/schemas``."""
    schemas: dict[str, Any] = {}
    for model in BODY_MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def _subject(subject_id: str) -> str:
    try:
        return s.check_subject_id(subject_id)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from None


@router.get("/healthz", tags=["ops"], summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    tags=["ops"],
    response_model=s.Ready,
    summary="Model and gallery are loaded",
    responses={503: {"model": s.Problem}},
)
def readyz(request: Request) -> s.Ready:
    state = request.app.state
    if getattr(state, "embedder", None) is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "not ready: model not loaded")
    gallery = gallery_of(request)
    card = state.embedder.card
    return s.Ready(
        ready=True,
        model=card.name,
        model_version=state.embedder.model_version,
        input_size=card.input_size,
        embedding_size=card.embedding_size,
        threshold=card.threshold,
        providers=state.embedder.providers,
        gallery_store=gallery.store.describe(),
        gallery_faces=len(gallery),
        gallery_seq=gallery.seq,
        index_kind=gallery.index.active_kind,
        index_device=gallery.index.device,
    )


@router.get("/metrics", tags=["ops"], summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    m = request.app.state.metrics
    if getattr(request.app.state, "gallery", None) is not None:
        m.gallery_faces.set(len(request.app.state.gallery))
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)


@router.post(
    "/embed",
    tags=["recognition"],
    response_model=s.EmbedResponse,
    dependencies=[Depends(require("read"))],
    summary="Embed one or more faces",
    description="Each face (a pre-cropped chip of any size, or a photo with `detect=true`) is brought to the "
    "model's low-resolution input by the shared preprocessing and embedded (unit length).",
    openapi_extra=_both_bodies(
        s.EmbedRequest, {"images": FILES, "box": {"type": "array", "items": BOX}, "detect": {"type": "boolean"}}
    ),
)
async def embed(request: Request) -> s.EmbedResponse:
    ctx = Ctx(request)
    faces = await ctx.image_list(s.EmbedRequest)
    vectors = await ctx.embed(faces)
    card = ctx.embedder.card
    return s.EmbedResponse(
        model=card.name,
        model_version=ctx.embedder.model_version,
        embeddings=[s.FaceEmbedding(embedding=v.tolist(), box=f.box) for v, f in zip(vectors, faces, strict=True)],
    )


@router.post(
    "/identify",
    tags=["recognition"],
    response_model=s.IdentifyResponse,
    dependencies=[Depends(require("read"))],
    summary="Find who a face belongs to",
    description="Ranked subjects (each scored by its best enrolled face) and a decision at the model card's "
    "calibrated threshold (or `threshold`). Send an image, or an `embedding` computed at the edge.",
    openapi_extra=_both_bodies(
        s.IdentifyRequest,
        {
            "image": FILE,
            "top_k": {"type": "integer", "default": 5},
            "threshold": {"type": "number"},
            "box": BOX,
            "detect": {"type": "boolean"},
        },
    ),
)
async def identify(request: Request) -> s.IdentifyResponse:
    ctx = Ctx(request)
    body, form = await ctx.read(s.IdentifyRequest, ("top_k", "threshold", "detect"), 2)
    box = str(form.get("box")) if form is not None and form.get("box") else None
    query = await ctx.optional_vector(form, "image", body.image, body.embedding, body.detect, box)
    if query is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "give a query image or embedding")
    matches = await run_in_threadpool(ctx.gallery.search, query, body.top_k)
    threshold = body.threshold if body.threshold is not None else ctx.threshold
    decision = matches[0].subject_id if matches and matches[0].score >= threshold else None
    return s.IdentifyResponse(
        matches=[s.MatchOut(subject_id=m.subject_id, score=m.score) for m in matches],
        decision=decision,
        threshold=threshold,
        model_version=ctx.embedder.model_version,
    )


@router.post(
    "/verify",
    tags=["recognition"],
    response_model=s.VerifyResponse,
    dependencies=[Depends(require("read"))],
    summary="Are two faces the same person? Or: is this face an enrolled subject?",
    openapi_extra=_both_bodies(
        s.VerifyRequest,
        {
            "image_a": FILE,
            "image_b": FILE,
            "subject_id": {"type": "string"},
            "threshold": {"type": "number"},
            "detect": {"type": "boolean"},
        },
    ),
)
async def verify(request: Request) -> s.VerifyResponse:
    ctx = Ctx(request)
    body, form = await ctx.read(s.VerifyRequest, ("subject_id", "threshold", "detect"), 3)
    vec_a = await ctx.optional_vector(form, "image_a", body.image_a, body.embedding_a, body.detect)
    vec_b = await ctx.optional_vector(form, "image_b", body.image_b, body.embedding_b, body.detect)
    if vec_a is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "give a first face: image_a or embedding_a")
    threshold = body.threshold if body.threshold is not None else ctx.threshold
    version = ctx.embedder.model_version
    if (vec_b is None) == (body.subject_id is None):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY, "give a second face (image_b/embedding_b) or a subject_id"
        )
    if vec_b is not None:
        score = float(vec_a @ vec_b)
        return s.VerifyResponse(
            score=score, same_person=score >= threshold, threshold=threshold, mean_score=None, model_version=version
        )
    assert body.subject_id is not None
    result = await run_in_threadpool(ctx.gallery.subject_scores, body.subject_id, vec_a)
    if result is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"subject {body.subject_id!r} is not enrolled")
    best, mean, count = result
    return s.VerifyResponse(
        score=best,
        same_person=best >= threshold,
        threshold=threshold,
        mean_score=mean,
        faces_compared=count,
        model_version=version,
    )


def _form_model(model: type[Any], fields: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    try:
        return model.model_validate({k: v for k, v in fields.items() if v not in (None, "")})
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:10])
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, errors) from None


@router.post(
    "/gallery/subjects/{subject_id}/faces",
    tags=["gallery"],
    response_model=s.EnrollResponse,
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(require("admin"))],
    summary="Enroll one or more faces of a subject (created when new)",
    description="Acknowledged only after the store has committed. Re-sending an image already enrolled for "
    "the subject adds nothing and reports `created: false`.",
    openapi_extra=_both_bodies(s.EnrollRequest, {"images": FILES, "detect": {"type": "boolean"}}),
)
async def enroll(subject_id: str, request: Request) -> s.EnrollResponse:
    ctx = Ctx(request)
    _subject(subject_id)
    faces = await ctx.image_list(s.EnrollRequest)
    vectors = await ctx.embed(faces)
    new = [NewFace(f.digest, v, face_chip_png(f.face)) for f, v in zip(faces, vectors, strict=True)]
    records = await run_in_threadpool(ctx.gallery.enroll, subject_id, new)
    return s.EnrollResponse(
        subject_id=subject_id,
        faces=[s.EnrolledFace(face_id=r.face_id, content_hash=r.content_hash, created=r.created) for r in records],
    )


@router.get(
    "/gallery/subjects",
    tags=["gallery"],
    response_model=s.SubjectPage,
    dependencies=[Depends(require("read"))],
    summary="List enrolled subjects, paged",
)
def list_subjects(
    request: Request, offset: int = Query(0, ge=0, le=1_000_000_000), limit: int = Query(50, ge=1, le=1000)
) -> s.SubjectPage:
    rows, total = gallery_of(request).store.list_subjects(offset, limit)
    items = [s.SubjectSummary(subject_id=r[0], face_count=r[1], created_at=r[2]) for r in rows]
    return s.SubjectPage(items=items, total=total, offset=offset, limit=limit)


@router.get(
    "/gallery/subjects/{subject_id}",
    tags=["gallery"],
    response_model=s.SubjectOut,
    dependencies=[Depends(require("read"))],
    responses={404: {"model": s.Problem}},
)
def get_subject(subject_id: str, request: Request) -> s.SubjectOut:
    record = gallery_of(request).get_subject(_subject(subject_id))
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"subject {subject_id!r} is not enrolled")
    faces = [
        s.FaceOut(
            face_id=f.face_id, content_hash=f.content_hash, model_version=f.model_version, created_at=f.created_at
        )
        for f in record.faces
    ]
    return s.SubjectOut(subject_id=record.subject_id, created_at=record.created_at, faces=faces)


@router.delete(
    "/gallery/subjects/{subject_id}",
    tags=["gallery"],
    dependencies=[Depends(require("admin"))],
    responses={404: {"model": s.Problem}},
)
def delete_subject(subject_id: str, request: Request) -> dict[str, Any]:
    removed = gallery_of(request).delete_subject(_subject(subject_id))
    if removed is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"subject {subject_id!r} is not enrolled")
    return {"subject_id": subject_id, "deleted_faces": len(removed)}


@router.delete(
    "/gallery/subjects/{subject_id}/faces/{face_id}",
    tags=["gallery"],
    dependencies=[Depends(require("admin"))],
    responses={404: {"model": s.Problem}},
)
def delete_face(subject_id: str, request: Request, face_id: int = Path(ge=1, le=2**63 - 1)) -> dict[str, Any]:
    if not gallery_of(request).delete_face(_subject(subject_id), face_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"face {face_id} of subject {subject_id!r} does not exist")
    return {"subject_id": subject_id, "deleted_face": face_id}
