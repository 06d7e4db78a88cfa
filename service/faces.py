"""From uploaded bytes to a face the embedder takes: decode (with the per-image and per-request
pixel limits), check and clip the face box, or find the face with dlib's detector (``detect``).
No FastAPI here: errors are :class:`FaceInputError` with the HTTP status a client should get, and
the API turns them into JSON ``detail`` answers, the CLI into a line naming the file."""

from __future__ import annotations

import hashlib
import io
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from lrface.alignment import AlignerUnavailable, DlibAligner
from lrface.embedder import FaceInput
from lrface.preprocessing import ImageDecodeError, load_image

Box = tuple[float, float, float, float]


class FaceInputError(ValueError):
    """An image or box the service cannot use; ``status`` is the HTTP status to answer with."""

    def __init__(self, detail: str, status: int = 422) -> None:
        super().__init__(detail)
        self.detail, self.status = detail, status


@dataclass(frozen=True)
class ImageItem:
    """One uploaded image as the client sent it: bytes, a label for messages, an optional box."""

    data: bytes
    label: str
    box: Box | None = None


@dataclass
class DecodedFace:
    face: FaceInput
    digest: str  # the gallery's content hash: the bytes and how the face was taken from them
    box: Box | None  # the face box used, in the uploaded image's pixels
    box_clipped: bool = False  # the given box reached outside the image and was clipped to it
    face_px: float = 0.0  # the face's side in the image as received (its box's longer side, or the image's)


def content_hash(data: bytes, box: Box | None = None, detect: bool = False) -> str:
    """What makes an enrollment idempotent: the same bytes with the same box (and detection
    setting) is the same face; another box in the same photo is another face. A plain image keeps
    the plain SHA-256 of its bytes (what galleries made before boxes counted hold)."""
    digest = hashlib.sha256(data)
    if box is not None or detect:
        digest.update(f"|box={list(box) if box is not None else None}|detect={detect}".encode())
    return digest.hexdigest()


class PixelBudget:
    """Decoded pixels allowed in one request: images are refused from their header once the sum
    would pass the limit, so a small body of many large images cannot decode gigabytes."""

    def __init__(self, limit: int) -> None:
        self.left = limit
        self.limit = limit

    def take(self, width: int, height: int, what: str) -> None:
        if width * height > self.left:
            raise FaceInputError(
                f"{what}: decoding {width}x{height} pixels would pass this request's limit of {self.limit} "
                "decoded pixels (LRFACE_MAX_REQUEST_PIXELS); send fewer or smaller images",
                413,
            )
        self.left -= width * height


def clip_box(box: Box, width: int, height: int, what: str) -> tuple[Box, bool]:
    """``box`` clipped to the image, and whether that changed it. A detector's box may reach a little
    past the edge of the image (a face at the border): it is clipped and the answer says so. A box
    with more than half its area outside the image, empty or non-finite is refused (422)."""
    if not all(math.isfinite(v) for v in box):
        raise FaceInputError(f"{what}: box {list(box)} must be four finite numbers")
    left, top, right, bottom = box
    if not (right > left and bottom > top):
        raise FaceInputError(f"{what}: box {list(box)} is empty; expected [left, top, right, bottom]")
    clipped = (max(left, 0.0), max(top, 0.0), min(right, float(width)), min(bottom, float(height)))
    inside = max(clipped[2] - clipped[0], 0.0) * max(clipped[3] - clipped[1], 0.0)
    if inside < 0.5 * (right - left) * (bottom - top):
        raise FaceInputError(
            f"{what}: box {list(box)} lies mostly outside the {width}x{height} image; boxes are in the image's pixels"
        )
    return clipped, clipped != tuple(box)


class FaceDecoder:
    """Bytes -> :class:`DecodedFace` with the service's pixel limits and optional dlib detection."""

    def __init__(self, max_pixels: int) -> None:
        self.max_pixels = max_pixels
        self._aligner: DlibAligner | None = None
        self._lock = threading.Lock()

    def aligner(self) -> DlibAligner:
        with self._lock:
            if self._aligner is None:
                try:
                    self._aligner = DlibAligner()
                except AlignerUnavailable as exc:
                    raise FaceInputError(f"detect=true is unavailable: {exc}", 501) from None
            return self._aligner

    def decode(self, item: ImageItem, detect: bool = False, budget: PixelBudget | None = None) -> DecodedFace:
        if budget is not None:
            size = _header_size(item.data)
            if size is not None:
                budget.take(*size, item.label)
        try:
            image = load_image(item.data, self.max_pixels)
        except ImageDecodeError as exc:
            raise FaceInputError(f"{item.label}: {exc}") from None
        digest = content_hash(item.data, item.box, detect)
        box, clipped = item.box, False
        if box is not None:
            box, clipped = clip_box(box, image.shape[1], image.shape[0], item.label)
        if detect:
            aligner = self.aligner()
            boxes: list[Box] = [box] if box is not None else [tuple(map(float, b)) for b in aligner.detect(image)]  # type: ignore[misc]
            if not boxes:
                raise FaceInputError(f"{item.label}: no face found")
            found = boxes[0]
            return DecodedFace(FaceInput(aligner.align(image, found), None), digest, found, clipped, _side(found))
        side = _side(box) if box is not None else float(max(image.shape[:2]))
        return DecodedFace(FaceInput(image, box), digest, box, clipped, side)

    def decode_all(
        self, items: Sequence[ImageItem], detect: bool = False, max_request_pixels: int | None = None
    ) -> list[DecodedFace]:
        """Every item of one request, under one pixel budget."""
        budget = PixelBudget(max_request_pixels) if max_request_pixels else None
        return [self.decode(item, detect, budget) for item in items]


def _side(box: Box) -> float:
    return float(max(box[2] - box[0], box[3] - box[1]))


def _header_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the image header (no pixels decoded), None when unreadable (the
    decoder then says why)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # noqa: BLE001 - load_image reports the real error
        return None
