"""Turn request bodies (multipart or base64 JSON) into images, boxes and options, with 4xx errors that
say why; :class:`RequestContext` gives the routes the app's embedder, decoder and gallery, and runs
the CPU-heavy work (decoding, embedding, searching) in the thread pool, never on the event loop."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, get_args

import numpy as np
from fastapi import HTTPException, Request, status
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from lrface.embedder import OnnxEmbedder
from lrface.preprocessing import box_to_chip, encode_image, hr_chip, hr_to_lr
from lrface.settings import Settings
from service.api import schemas as s
from service.api.auth import check_gallery
from service.api.schemas import Box, ImageIn
from service.embedders import Embedders, Space
from service.faces import DecodedFace, DetectMode, FaceDecoder, ImageItem
from service.gallery.gallery import Gallery
from service.gallery.tables import DEFAULT_GALLERY

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
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, validation_detail(exc, model)) from None


def validation_detail(exc: ValidationError, model: type[BaseModel]) -> str:
    """One line per error (at most ten); an unknown field is named with the fields its place takes."""
    lines = []
    for error in exc.errors()[:10]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        if error["type"] == "extra_forbidden":
            allowed = ", ".join(_fields_at(model, error["loc"][:-1]))
            lines.append(f"unknown field '{where}' (not used: refused rather than ignored); allowed there: {allowed}")
        else:
            lines.append(f"{where}: {error['msg']}")
    return "; ".join(lines)


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names of the (nested) model at ``loc`` of a body of ``model``."""
    current: type[BaseModel] = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part)
        models = (
            [t for t in _types_in(field.annotation) if isinstance(t, type) and issubclass(t, BaseModel)]
            if field
            else []
        )
        if not models:
            return []
        current = models[0]
    return list(current.model_fields)


def _types_in(annotation: Any) -> list[Any]:
    args = get_args(annotation)
    return [annotation] if not args else [t for a in args for t in _types_in(a)]


def no_query(*allowed: str) -> Callable[[Request], None]:
    """A route dependency: query-string parameters other than ``allowed`` are refused (422) with
    where they belong, never silently ignored (``POST /identify?detect=true`` did nothing once)."""

    def check(request: Request) -> None:
        unknown = sorted({k for k in request.query_params if k not in allowed})
        if unknown:
            names = ", ".join(unknown)
            where = f"only {', '.join(allowed)} go in the query string; " if allowed else ""
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_ENTITY,
                f"unknown query parameter(s) {names}: {where}this route reads its options from the request body "
                "(a JSON field or a multipart form field of the same name, e.g. -F detect=true)",
            )

    return check


def check_form_fields(form: FormData, allowed: Sequence[str]) -> None:
    """Multipart fields other than ``allowed`` are refused (422), never ignored."""
    unknown = sorted({k for k in form if k not in allowed})
    if unknown:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY,
            f"unknown multipart field(s) {', '.join(unknown)}; this route takes: {', '.join(allowed)}",
        )


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


def parse_detect(text: object) -> DetectMode:
    """A multipart ``detect``: auto (absent), true or false (1/0, yes/no, on/off too)."""
    if text is None or text == "":
        return "auto"
    if not isinstance(text, str):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "detect must be a form field, not a file")
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return "true" if parse_bool(text.strip(), "detect") else "false"
    except HTTPException:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "detect must be auto, true or false") from None


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
    for name, value in fields.items():
        if value is not None and not isinstance(value, str):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"{name} must be a form field, not a file")
    try:
        return model.model_validate({k: v for k, v in fields.items() if v not in (None, "")})
    except ValidationError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, validation_detail(exc, model)) from None


def gallery_of(request: Request) -> Gallery:
    """The loaded gallery, or 503 while its index is still being built (or failed to load)."""
    gallery: Gallery | None = request.app.state.gallery
    if gallery is None:
        loader = getattr(request.app.state, "gallery_loader", None)
        detail = loader.status() if loader is not None else "gallery not loaded"
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail, headers={"Retry-After": "5"})
    return gallery


def gallery_name_of(name: str) -> str:
    try:
        return s.check_gallery_name(name)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from None


def target_gallery(request: Request, name: str) -> str:
    """``name`` checked: a valid name (422), one the key may use (403), an existing gallery (404)."""
    gallery_name_of(name)
    check_gallery(request, name)
    if not gallery_of(request).has_gallery(name):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"gallery {name!r} does not exist (GET /galleries lists them)")
    return name


def subject_gallery(request: Request) -> str:
    """The gallery a subject route works on: ``{gallery}`` under ``/galleries/{gallery}/subjects``, the
    default gallery under ``/gallery/subjects`` (checked as :func:`target_gallery`, after the key)."""
    return target_gallery(request, request.path_params.get("gallery", DEFAULT_GALLERY))


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

    @property
    def kind(self) -> s.ProbeKind:
        return self.face.input if self.face is not None else "embedding"


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

    async def gallery_named(self, name: str) -> str:
        """:func:`target_gallery`; a named gallery is looked up in the store, off the event loop (the
        default one always exists: no lookup, no thread hop on the common path)."""
        if name == DEFAULT_GALLERY:
            return target_gallery(self.request, name)
        return await self.run(target_gallery, self.request, name)

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

    async def image_list(
        self, model: type[s.EmbedRequest] | type[s.EnrollRequest], form_fields: Sequence[str]
    ) -> tuple[list[ImageItem], DetectMode, bool]:
        """The ``images`` of an embed or enroll request, its ``detect`` and ``include_input``:
        multipart files (with optional ``box`` fields, one per file) or base64 JSON."""
        if not is_multipart(self.request):
            body = await json_body(self.request, model)
            items = await self.run(self.items_from_json, body.images, "images")
            return items, body.detect, bool(getattr(body, "include_input", False))
        form = await form_body(self.request, self.settings.max_faces_per_request + 1)
        check_form_fields(form, form_fields)
        detect = parse_detect(form.get("detect"))
        include = parse_bool(form.get("include_input"), "include_input")
        return await self.items_from_form(form, "images", [str(b) for b in form.getlist("box")]), detect, include

    def decode(self, items: list[ImageItem], detect: DetectMode) -> list[DecodedFace]:
        """Every face of ``items`` (under the request's pixel budget); call through :meth:`run`."""
        return self.decoder.decode_all(items, detect, self.settings.max_request_pixels)

    async def read(
        self, model: type[M], form_fields: tuple[str, ...], file_fields: tuple[str, ...], max_files: int
    ) -> tuple[M, Any]:
        """The request as ``(body model, multipart form or None)``: JSON bodies validate whole, multipart
        forms contribute ``form_fields`` (files are read later by field name); any other multipart field
        is refused."""
        if not is_multipart(self.request):
            return await json_body(self.request, model), None
        form = await form_body(self.request, max_files)
        check_form_fields(form, (*file_fields, *form_fields))
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
        detect: DetectMode,
        box: str | None = None,
    ) -> Probe | None:
        """One face given as a file, a base64 image (decoded, not embedded yet; a searched image gives
        its largest face, none found is a 422) or an edge embedding (the student's space), or None
        when absent."""
        if form is not None:
            if form.get(field) is None:
                return None
            items = await self.items_from_form(form, field, [box] if box else None)
            if len(items) > 1:
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"give one file as {field}")
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
        decoded = await self.run(self.decode, items, detect)
        if not decoded:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_ENTITY,
                f"{items[0].label}: no face found (an image that is itself the face: send detect=false)",
            )
        return Probe(decoded[0], None)

    def teacher_complete(self, gallery: Gallery | None) -> bool:
        """Whether the teacher may serve against ``gallery``: it holds every face in the teacher's space
        (a gallery enrolled before the teacher served has none until `lrface gallery reembed`)."""
        return gallery is None or (gallery.teacher is not None and len(gallery.teacher) == len(gallery))

    def _embed_probes(
        self, probes: list[Probe], gallery: Gallery | None, fuse: bool = True
    ) -> tuple[list[np.ndarray], Space]:
        faces = [p.face for p in probes if p.face is not None]
        routed = {self.embedders.space_for(f, fuse) for f in faces}
        complete = self.teacher_complete(gallery)
        space: Space = "teacher" if len(faces) == len(probes) and routed == {"teacher"} and complete else "student"
        vectors = iter(self.embedders.embed(faces, space, fuse)) if faces else iter(())
        return [p.vector if p.vector is not None else next(vectors) for p in probes], space

    async def embed_probes(
        self, probes: list[Probe], gallery: Gallery | None = None, fuse: bool = True
    ) -> tuple[list[np.ndarray], Space]:
        """Unit embeddings of ``probes`` in one space: the teacher's when every probe is a face large
        enough for it (see the model card's routing) and ``gallery`` (when given) holds every face in
        the teacher's space, else the student's (faces below the teacher's switch fused with the
        teacher's view where the card says so; with ``fuse`` False none is, and the teacher serves from
        the card's ``min_face_px``: :meth:`Embedders.teacher_from`)."""
        return await self.run(self._embed_probes, probes, gallery, fuse)

    def embed_each(self, faces: list[DecodedFace], gallery: Gallery | None) -> tuple[list[np.ndarray], list[Space]]:
        """Each face in its own routed space (the teacher's for a large face where ``gallery`` allows
        it), embedded space by space; call through :meth:`run`."""
        complete = self.teacher_complete(gallery)
        spaces: list[Space] = [self.embedders.space_for(f) if complete else "student" for f in faces]
        vectors: list[np.ndarray] = [np.zeros(0, np.float32)] * len(faces)
        for space in set(spaces):
            chosen = [i for i, sp in enumerate(spaces) if sp == space]
            for i, vector in zip(chosen, self.embedders.embed([faces[i] for i in chosen], space), strict=True):
                vectors[i] = vector
        return vectors, spaces

    def input_png(self, face: DecodedFace, space: Space) -> str:
        """The model's input as the model saw it, as a PNG data URL: the student's LR face
        (:func:`lrface.preprocessing.hr_to_lr` of the canonical chip) or the teacher's 150-px chip."""
        if space == "teacher":
            seen = face.teacher_face()
            pixels = hr_chip(seen.image, seen.box)
        else:
            pixels = hr_to_lr(box_to_chip(face.face.image, face.face.box), self.embedder.card.input_size)
        return "data:image/png;base64," + base64.b64encode(encode_image(pixels)).decode()
