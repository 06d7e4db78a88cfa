"""Turn request bodies (multipart or base64 JSON) into decoded faces, with 4xx errors that say why."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import HTTPException, Request, status
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from lrface.alignment import AlignerUnavailable, DlibAligner
from lrface.preprocessing import ImageDecodeError, load_image
from service.api.schemas import Box, ImageIn
from service.embedder import FaceInput

M = TypeVar("M", bound=BaseModel)
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
    if len(parts) != 4:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "box must be four numbers: left,top,right,bottom")
    return (parts[0], parts[1], parts[2], parts[3])


def parse_bool(text: str | None, name: str) -> bool:
    if text is None or text == "":
        return False
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


@dataclass
class DecodedFace:
    face: FaceInput
    digest: str  # SHA-256 of the uploaded bytes: the gallery's content hash
    box: Box | None  # the face box used, in the uploaded image's pixels


class FaceDecoder:
    """Bytes -> :class:`FaceInput` with the service's pixel limit and optional dlib detection."""

    def __init__(self, max_pixels: int) -> None:
        self.max_pixels = max_pixels
        self._aligner: DlibAligner | None = None

    def aligner(self) -> DlibAligner:
        if self._aligner is None:
            try:
                self._aligner = DlibAligner()
            except AlignerUnavailable as exc:
                raise HTTPException(status.HTTP_501_NOT_IMPLEMENTED, f"detect=true is unavailable: {exc}") from None
        return self._aligner

    def decode(self, data: bytes, what: str, box: Box | None = None, detect: bool = False) -> DecodedFace:
        try:
            image = load_image(data, self.max_pixels)
        except ImageDecodeError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"{what}: {exc}") from None
        digest = hashlib.sha256(data).hexdigest()
        if box is not None:
            left, top, right, bottom = box
            h, w = image.shape[:2]
            if not (right > left and bottom > top) or right <= 0 or bottom <= 0 or left >= w or top >= h:
                raise HTTPException(
                    status.HTTP_422_UNPROCESSABLE_ENTITY,
                    f"{what}: box {list(box)} is empty or outside the {w}x{h} image",
                )
        if detect:
            aligner = self.aligner()
            found: list[Box] = [(float(a), float(b), float(c), float(d)) for a, b, c, d in aligner.detect(image)]
            boxes = found if box is None else [box]
            if not boxes:
                raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"{what}: no face found")
            return DecodedFace(FaceInput(aligner.align(image, boxes[0]), None), digest, boxes[0])
        return DecodedFace(FaceInput(image, box), digest, box)
