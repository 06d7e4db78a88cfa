"""Turn request bodies (multipart or base64 JSON) into images, boxes and options, with 4xx errors that
say why; :class:`RequestContext` gives the routes the app's embedder, decoder and gallery, and runs
the CPU-heavy work (decoding, embedding, searching) in the thread pool, never on the event loop."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from fastapi import HTTPException, Request, status
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from lrface.embedder import OnnxEmbedder
from lrface.settings import Settings
from service.api import schemas as s
from service.api.schemas import Box, ImageIn
from service.embedders import Embedders, Space
from service.faces import DecodedFace, FaceDecoder, ImageItem
from service.gallery.gallery import Gallery

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
MULTIPART = "multipart/form-data"


def bad_request(detail: str, code: int = status.HTTP_400_BAD_REQUEST) -> HTTPException:
    return HTTPException(code, detail)


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith(MULTIPART)


async def json_body(request: Request, model: type[M]) -> M:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("application/json"):
        raise bad_request(
            f"unsupported content type {content_type or '(none)'}: send multipart/form-data or application/json",
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        )
    raw = await request.body()
    return await run_in_threadpool(_parse_json, raw, model)  # a 20 MB body is CPU work: off the event loop


def _parse_json(raw: bytes, model: type[M]) -> M:
    try:
        payload = json.loads(raw)
    except RecursionError:
        raise bad_request("JSON body is nested too deeply") from None
    except ValueError as exc:
        raise bad_request(f"body is not valid JSON: {exc}") from None
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:10])
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, errors) from None


async def form_body(request: Request, max_files: int) -> FormData:
    try:
        return await request.form(max_files=max_files, max_fields=100)
    except HTTPException:
        raise
    except StarletteHTTPException as exc:  # the parser's own limits (too many files or fields)
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"multipart body: {exc.detail}") from None
    except Exception as exc:  # noqa: BLE001 - the multipart parser raises several types
        raise bad_request(f"malformed multipart body: {exc}") from None


def parse_box(text: str | None) -> Box | None:
    if text is None or text == "":
        return None
    try:
        parts = [float(v) for v in text.replace("[", "").replace("]", "").split(",")]
    except ValueError:
        parts = []
    if len(parts) != 4 or not np.isfinite(parts).all():
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY, "box must be four finite numbers: left,top,right,bottom"
        )
    return (parts[0], parts[1], parts[2], parts[3])


def parse_bool(text: object, name: str) -> bool:
    if text is None or text == "":
        return False
    if not isinstance(text, str):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"{name} must be a form field, not a file")
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"{name} must be true or false")


def decode_b64(image: ImageIn, what: str, max_bytes: int) -> bytes:
    data = image.data
    if data.startswith("data:"):
        data = data.partition(",")[2]
    if len(data) > max_bytes * 4 // 3 + 8:
        raise bad_request(f"{what}: image larger than {max_bytes} bytes", status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{what}: data is not valid base64") from None


async def upload_bytes(upload: Any, what: str) -> bytes:
    if not isinstance(upload, UploadFile):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"{what} must be a file upload")
    return await upload.read()


def form_model(model: type[M], fields: dict[str, Any]) -> M:
    try:
        return model.model_validate({k: v for k, v in fields.items() if v not in (None, "")})
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:10])
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, errors) from None


def gallery_of(request: Request) -> Gallery:
    """The loaded gallery, or 503 while its index is still being built (or failed to load)."""
    gallery: Gallery | None = request.app.state.gallery
    if gallery is None:
        loader = getattr(request.app.state, "gallery_loader", None)
        detail = loader.status() if loader is not None else "gallery not loaded"
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail, headers={"Retry-After": "5"})
    return gallery


def subject_id_of(subject_id: str) -> str:
    try:
        return s.check_subject_id(subject_id)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from None


@dataclass
class Probe:
    """A face to compare: decoded (embedded once its space is chosen), or an edge embedding."""

    face: DecodedFace | None
    vector: np.ndarray | None = None


class RequestContext:
    """What a route needs from the app's state and its request, typed."""

    def __init__(self, request: Request) -> None:
        state = request.app.state
        self.embedders: Embedders = state.embedders
        self.embedder: OnnxEmbedder = state.embedders.student
        self.decoder: FaceDecoder = state.decoder
        self.settings: Settings = state.settings
        self.request = request

    @property
    def gallery(self) -> Gallery:
        return gallery_of(self.request)

    @property
    def threshold(self) -> float:
        return self.embedder.card.threshold

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """CPU-heavy work in the thread pool (the event loop keeps serving other requests)."""
        return await run_in_threadpool(fn, *args)

    def items_from_json(self, images: list[ImageIn], what: str) -> list[ImageItem]:
        self._check_count(len(images))
        out = []
        for i, image in enumerate(images):
            label = f"{what}[{i}]" if len(images) > 1 else what
            out.append(ImageItem(decode_b64(image, label, self.settings.max_body_bytes), label, image.box))
        return out

    async def items_from_form(self, form: Any, field: str, boxes: list[str] | None = None) -> list[ImageItem]:
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
            out.append(ImageItem(data, label, parse_box(boxes[i]) if boxes else None))
        return out

    def _check_count(self, count: int) -> None:
        limit = self.settings.max_faces_per_request
        if count > limit:
            raise HTTPException(
                status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"{count} faces in one request; the limit is {limit}"
            )

    async def image_list(self, model: type[s.EmbedRequest] | type[s.EnrollRequest]) -> tuple[list[ImageItem], bool]:
        """The ``images`` of an embed or enroll request and its ``detect``: multipart files (with
        optional ``box`` fields) or base64 JSON."""
        if not is_multipart(self.request):
            body = await json_body(self.request, model)
            return await self.run(self.items_from_json, body.images, "images"), body.detect
        form = await form_body(self.request, self.settings.max_faces_per_request + 1)
        detect = parse_bool(form.get("detect"), "detect")
        return await self.items_from_form(form, "images", [str(b) for b in form.getlist("box")]), detect

    def _decode_and_embed(self, items: list[ImageItem], detect: bool) -> tuple[list[DecodedFace], np.ndarray]:
        faces = self.decoder.decode_all(items, detect, self.settings.max_request_pixels)
        return faces, self.embedders.embed(faces, "student")

    async def embed_students(self, items: list[ImageItem], detect: bool) -> tuple[list[DecodedFace], np.ndarray]:
        """Decode (under the request's pixel budget) and embed with the student (the space edge clients
        compute), in the thread pool."""
        return await self.run(self._decode_and_embed, items, detect)

    async def read(self, model: type[M], form_fields: tuple[str, ...], max_files: int) -> tuple[M, Any]:
        """The request as ``(body model, multipart form or None)``: JSON bodies validate whole, multipart
        forms contribute ``form_fields`` (files are read later by field name)."""
        if not is_multipart(self.request):
            return await json_body(self.request, model), None
        form = await form_body(self.request, max_files)
        return form_model(model, {k: form.get(k) for k in form_fields}), form

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

    async def optional_probe(
        self,
        form: Any,
        field: str,
        image: s.ImageIn | None,
        embedding: s.EmbeddingIn | None,
        detect: bool,
        box: str | None = None,
    ) -> Probe | None:
        """One face given as a file, a base64 image (decoded, not embedded yet) or an edge embedding
        (the student's space), or None when absent."""
        if form is not None:
            if form.get(field) is None:
                return None
            items = await self.items_from_form(form, field, [box] if box else None)
        elif image is not None and embedding is not None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_ENTITY, f"give {field} as an image or an embedding, not both"
            )
        elif embedding is not None:
            return Probe(None, self.check_embedding(embedding, f"{field} embedding"))
        elif image is not None:
            items = await self.run(self.items_from_json, [image], field)
        else:
            return None
        decoded = await self.run(self.decoder.decode_all, items, detect, self.settings.max_request_pixels)
        return Probe(decoded[0], None)

    def _embed_probes(self, probes: list[Probe], gallery: Gallery | None) -> tuple[list[np.ndarray], Space]:
        faces = [p.face for p in probes if p.face is not None]
        routed = {self.embedders.space_for(f) for f in faces}
        # Against a gallery, the teacher only when it holds every face (a gallery enrolled before the
        # teacher served has none until `lrface gallery reembed`: its faces stay with the student).
        complete = gallery is None or (gallery.teacher is not None and len(gallery.teacher) == len(gallery))
        space: Space = "teacher" if len(faces) == len(probes) and routed == {"teacher"} and complete else "student"
        vectors = iter(self.embedders.embed(faces, space)) if faces else iter(())
        return [p.vector if p.vector is not None else next(vectors) for p in probes], space

    async def embed_probes(self, probes: list[Probe], gallery: Gallery | None = None) -> tuple[list[np.ndarray], Space]:
        """Unit embeddings of ``probes`` in one space: the teacher's when every probe is a face large
        enough for it (see the model card's routing) and ``gallery`` (when given) holds every face in
        the teacher's space, else the student's."""
        return await self.run(self._embed_probes, probes, gallery)
