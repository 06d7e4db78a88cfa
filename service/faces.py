"""From uploaded bytes to the faces the embedders take: decode (with the per-image and per-request
pixel limits), then take the face as the client asked (``detect``):

- ``false``: the whole image (or the client's ``box``) is one face;
- ``true``: search the image with the MTCNN detector (:mod:`lrface.detection`) and take every face
  found, the largest first (none found: no faces);
- ``auto`` (the default): an image that is itself a face chip is taken whole, any other is searched.
  A chip is an image whose largest detected face, framed as the models see it, spans at least
  :data:`CHIP_FILL` of its shorter side, or a small one (at most :data:`CHIP_MAX_SIDE` px) where no face
  is found. A small image is searched enlarged, with margins (:meth:`FaceDecoder.search_small`): a crop
  around a face (a face of 12 px in a 20-px crop) yields its face as a frame's would, where it used to
  be taken whole and missed (crops 1.5 times MTCNN's box at 20 px, validation people: rank-1 4% whole);
  a small, squarish image whose face fills it but sits lower than in an aligned chip
  (:data:`TIGHT_EYE_LINE`: a detector's box cut out) is framed as its own box (``input: crop``), as a
  client's box covering it is.

A client ``box`` always names the face (no search) and goes to the models through
:func:`lrface.preprocessing.frame_face`, which also measures every face's size. A face the detector
found goes to the student as its aligned chip, made from the detector's 5 landmarks
(:func:`lrface.landmarks.landmark_chip`; the framed box when they cannot place one), and to the
teacher as dlib's own 5-point chip (how its training chips, and the evaluation's, were made; the
landmark chip without dlib), aligned only when it is needed. On frames of validation people the
teacher's choice beats the landmark chip for it, and the student on dlib's chip, better alone, adds
nothing fused (``lrface bench frames --calibrate-routing``; reports/teacher-lr-frames).

No FastAPI here: errors are :class:`FaceInputError` with the HTTP status a client should get, and
the API turns them into JSON ``detail`` answers, the CLI into a line naming the file."""

from __future__ import annotations

import hashlib
import io
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image

from lrface.alignment import AlignerUnavailable, DlibAligner, aligner_available
from lrface.embedder import FaceInput
from lrface.landmarks import LandmarkError, landmark_chip
from lrface.preprocessing import CHIP_SIDE, ImageDecodeError, frame_face, load_image

if TYPE_CHECKING:
    from lrface.detection import Detection, MtcnnDetector
    from lrface.settings import Settings

Box = tuple[float, float, float, float]
DetectMode = Literal["auto", "true", "false"]
InputKind = Literal["chip", "crop", "detected", "box"]
# An image at most this side (the canonical chip's: every face is brought to at most 64 px, and the
# gallery stores its faces so) is a face chip under detect=auto unless a face clearly smaller than it is
# found in it (FaceDecoder.search_small): the service's faces are 8-32 px, and a detector may miss the
# face of a degraded 16-px chip, which must not turn a valid chip into "no face".
CHIP_MAX_SIDE = CHIP_SIDE
# Under detect=auto, an image whose largest face (framed as the models see it) spans at least this
# share of its shorter side is a chip already framed around that face, and is taken whole. Measured on
# 300 random LFW photos (MTCNN, frame_face): their own largest face spans 0.33-0.80 of the photo
# (median 0.47, 99th percentile 0.63); in the 294 dlib-aligned 150-px chips made from them, 0.79-1.73
# (median 1.11, 1st percentile 0.88).
CHIP_FILL = 0.7
# A small image (at most CHIP_MAX_SIDE px) is searched enlarged to this side, margins included (see
# FaceDecoder.search_small): a face filling a crop of 16-64 px is then about 35 px, one of 0.6 of it 21 px.
# On crops of validation people's photos at 16-48 px (150 a size) the face was found in 98-100% of them
# and its framed square spanned, by the 5th / 50th / 95th percentile of crops, 0.87-0.90 / 1.01-1.03 /
# 1.19-1.21 of a dlib-aligned chip's side, 0.91-0.93 / 0.99-1.00 / 1.09-1.11 of a crop framed by the framing
# rule, 0.83-0.86 / 0.90-0.91 / 0.95-0.97 of the square of MTCNN's box and 0.53-0.55 / 0.58-0.59 / 0.64 of
# a crop 1.5 times that box: only the last falls under CHIP_FILL (a crop around a face, not a chip). The
# search costs the service about 11% of its throughput on 24-px chips (`lrface bench load`; at 160 px, 30%).
SMALL_SEARCH_SIDE = 72
# A small, squarish image whose face fills it is a chip (taken whole) where the eyes sit where an aligned
# chip holds them, and a face detector's tight crop (its box cut out) where they sit lower: at or below
# this share of the image's height (the mean of the two eyes the search finds, pixel centres at i + 0.5),
# the image is taken as its own face box and framed by the framing rule, as a client's box covering it
# is. Chosen on validation people's photos (240 a size, 12-64 px; 5th / 50th / 95th percentile): aligned
# chips 0.29-0.31 / 0.32-0.33 / 0.33-0.34 (0-1.6% at or below it), the square of MTCNN's box 0.35-0.37 /
# 0.40-0.41 / 0.44-0.45 (96-98%), squares cut by the framing rule 0.27-0.28 / 0.32-0.33 / 0.36-0.37 (9-17%).
TIGHT_EYE_LINE = 0.35
# Only an image at most this much longer than wide (or wider than tall) is taken for a tight crop: a face
# box is about square (MTCNN's 1.0-1.1, others' up to 1.3); a longer image filled by its face across its
# shorter side is a loose crop along the other, whose centre need not be the face's.
TIGHT_ASPECT = 1.3
# Enrolment refuses a photo whose second face is at least this share of the largest one's side: two
# people at about the same distance from the camera, and no way to know which one is the subject. On
# 300 random LFW photos 43 held two or more faces: the second's side was 0.21-1.08 of the largest's
# (median 0.81); 22 were at 0.8 or more (refused), the smaller ones background faces (enrolled).
COMPARABLE_FACE = 0.8
# Photos or frames searched by the detector in one request (each search costs up to ~0.3 s of CPU and
# hundreds of MB): a fused track of frames fits, 64 uploads of full-HD noise do not.
SEARCHES_PER_REQUEST = 16


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
    """One face ready for the embedders: the student's input (the image and the framed square the
    model sees, or a detected face's landmark chip), how it was taken, and where it is in the image
    the client sent."""

    face: FaceInput  # the student's input: an image and the face's square in it (None: the whole image)
    digest: str  # the gallery's content hash: the bytes and how the face was taken from them
    box: Box | None  # the face box in the uploaded image's pixels (None: the whole image)
    box_clipped: bool = False  # the client's box reached outside the image and was clipped to it
    face_px: float = 0.0  # the side of the square the models see, in the image's pixels (a chip: its side)
    input: InputKind = "chip"
    detection_score: float | None = None
    image: int = 0  # index of the image in the request
    label: str = ""  # the image's name in messages
    teacher_input: FaceInput | Callable[[], FaceInput] | None = field(default=None, repr=False)

    def teacher_face(self) -> FaceInput:
        """The teacher's input: dlib's aligned chip for a detected face (aligned on first use), else
        the student's input (the teacher brings it to 150 px)."""
        if self.teacher_input is None:
            return self.face
        if not isinstance(self.teacher_input, FaceInput):
            self.teacher_input = self.teacher_input()
        return self.teacher_input


def content_hash(data: bytes, box: Box | None = None, detect: bool = False) -> str:
    """What makes an enrollment idempotent: the same bytes with the same box (or the detector's largest
    face) is the same face; another box in the same photo is another face. A whole image keeps the
    plain SHA-256 of its bytes (what galleries made before boxes counted hold)."""
    digest = hashlib.sha256(data)
    if box is not None or detect:
        digest.update(f"|box={list(box) if box is not None else None}|detect={detect}".encode())
    return digest.hexdigest()


class RequestBudget:
    """What one request may cost: decoded pixels (images are refused from their header once the sum
    would pass the limit, so a small body of many large images cannot decode gigabytes) and detector
    searches (:data:`SEARCHES_PER_REQUEST`)."""

    def __init__(self, limit: int | None) -> None:
        self.left = limit
        self.limit = limit
        self.searches = SEARCHES_PER_REQUEST

    def take_search(self, what: str) -> None:
        if self.searches <= 0:
            raise FaceInputError(
                f"{what}: more than {SEARCHES_PER_REQUEST} images to search for faces in one request; "
                "send fewer photos or frames per request (images of at most 64 px are not counted)",
                413,
            )
        self.searches -= 1

    def take(self, width: int, height: int, what: str) -> None:
        if self.left is None:
            return
        if width * height > self.left:
            raise FaceInputError(
                f"{what}: decoding {width}x{height} pixels would pass this request's limit of {self.limit} "
                "decoded pixels (LRFACE_MAX_REQUEST_PIXELS); send fewer or smaller images",
                413,
            )
        self.left -= width * height


def clip_box(box: Box, width: int, height: int, what: str) -> tuple[Box, bool]:
    """``box`` clipped to the image, and whether that changed it. A box may reach a little past the
    edge of the image (a face at the border): it is clipped and the answer says so. A box with more
    than half its area outside the image, empty or non-finite is refused (422)."""
    if not all(math.isfinite(v) for v in box):
        raise FaceInputError(f"{what}: box {list(box)} must be four finite numbers")
    left, top, right, bottom = box
    if not (right - left >= 1 and bottom - top >= 1):  # a sub-pixel box holds no face (and underflows below)
        raise FaceInputError(f"{what}: box {list(box)} is empty or under a pixel; expected [left, top, right, bottom]")
    clipped = (max(left, 0.0), max(top, 0.0), min(right, float(width)), min(bottom, float(height)))
    inside = max(clipped[2] - clipped[0], 0.0) * max(clipped[3] - clipped[1], 0.0)
    if inside < 0.5 * (right - left) * (bottom - top):
        raise FaceInputError(
            f"{what}: box {list(box)} lies mostly outside the {width}x{height} image; boxes are in the image's pixels"
        )
    return clipped, clipped != tuple(box)


@dataclass(frozen=True)
class DetectionConfig:
    """How the service searches images for faces (``LRFACE_DETECTOR`` and ``LRFACE_DETECT_*``)."""

    enabled: bool = True
    model_dir: Path | None = None  # None: the bundled models/mtcnn
    min_face_px: float = 16.0  # see Settings.detect_min_face_px
    thresholds: tuple[float, float, float] = (0.85, 0.7, 0.9)  # see Settings.detect_thresholds
    max_faces: int = 32
    max_pixels: int = 2_100_000  # larger images are shrunk for the search (memory and time bounded)
    threads: int = 1  # per search; see Settings.detect_threads
    concurrency: int = 2  # searches at once: each holds its pyramid (hundreds of MB for full HD)
    wait: float = 30.0  # seconds a request waits for a free search before a 503

    @classmethod
    def from_settings(cls, settings: Settings) -> DetectionConfig:
        return cls(
            enabled=settings.detector != "off",
            model_dir=settings.detector_model,
            min_face_px=settings.detect_min_face_px,
            thresholds=settings.detect_thresholds,
            max_faces=settings.max_faces_per_frame,
            max_pixels=settings.detect_max_pixels,
            threads=settings.detect_threads,
            concurrency=settings.detect_concurrency,
            wait=settings.detect_wait,
        )


class FaceDecoder:
    """Bytes -> :class:`DecodedFace` with the service's pixel limits and face detection."""

    def __init__(self, max_pixels: int, detection: DetectionConfig | None = None) -> None:
        self.max_pixels = max_pixels
        self.detection = detection or DetectionConfig()
        self._detector: MtcnnDetector | None = None
        self._aligner: DlibAligner | None = None
        self._aligner_checked = False
        self._lock = threading.Lock()
        self._searches = threading.BoundedSemaphore(self.detection.concurrency)

    @classmethod
    def from_settings(cls, settings: Settings) -> FaceDecoder:
        return cls(settings.max_image_pixels, DetectionConfig.from_settings(settings))

    def detector(self) -> MtcnnDetector:
        """The MTCNN detector, loaded on first use (once per process)."""
        with self._lock:
            if self._detector is None:
                from lrface.detection import BUNDLED_DETECTOR_DIR, MtcnnDetector

                config = self.detection
                try:
                    self._detector = MtcnnDetector(
                        config.model_dir or BUNDLED_DETECTOR_DIR,
                        min_face_px=config.min_face_px,
                        thresholds=config.thresholds,
                        max_faces=config.max_faces,
                        threads=config.threads,
                    )
                except Exception as exc:  # noqa: BLE001 - a missing or broken detector model
                    raise FaceInputError(f"face detection is unavailable on this service: {exc}", 501) from None
            return self._detector

    def aligner(self) -> DlibAligner | None:
        """dlib's 5-point aligner (the teacher's chips), or None without the ``align`` extra."""
        with self._lock:
            if not self._aligner_checked:
                self._aligner_checked = True
                if aligner_available():
                    try:
                        self._aligner = DlibAligner()
                    except AlignerUnavailable:
                        self._aligner = None
            return self._aligner

    def decode(
        self, item: ImageItem, detect: DetectMode = "auto", budget: RequestBudget | None = None, index: int = 0
    ) -> list[DecodedFace]:
        """The faces of one image, the largest first: one for a chip or a box, any number (even none)
        for a searched image."""
        if budget is not None:
            size = _header_size(item.data)
            if size is not None:
                budget.take(*size, item.label)
        try:
            image = load_image(item.data, self.max_pixels)
        except ImageDecodeError as exc:
            raise FaceInputError(f"{item.label}: {exc}") from None
        base = DecodedFace(FaceInput(image, None), "", None, image=index, label=item.label)
        if item.box is not None:
            box, clipped = clip_box(item.box, image.shape[1], image.shape[0], item.label)
            framed = frame_face(box)
            return [
                replace(base, face=FaceInput(image, framed), digest=content_hash(item.data, item.box), box=box,
                        box_clipped=clipped, face_px=_side(framed), input="box")
            ]  # fmt: skip
        chip = replace(base, digest=content_hash(item.data), face_px=float(max(image.shape[:2])))
        small = min(image.shape[:2]) <= CHIP_MAX_SIDE
        if detect == "false" or (detect == "auto" and not self.detection.enabled):
            return [chip]
        if not self.detection.enabled:
            raise FaceInputError("detect=true: face detection is off on this service (LRFACE_DETECTOR=off)", 501)
        if small and detect == "auto":  # a chip, or a crop around a face? (a search of SMALL_SEARCH_SIDE px)
            found = self.search_small(image)
        else:
            if budget is not None:
                budget.take_search(item.label)
            found = self.search(image)
        fills = bool(found) and _side(frame_face(found[0].box)) >= CHIP_FILL * min(image.shape[:2])
        if detect == "auto" and small and fills and _tight(image, found[0]):
            whole = (0.0, 0.0, float(image.shape[1]), float(image.shape[0]))  # a tight crop: its own face box
            framed = frame_face(whole)
            return [  # the hash of a client box covering it: the same face, the same embedding
                replace(chip, face=FaceInput(image, framed), digest=content_hash(item.data, whole), box=whole,
                        face_px=_side(framed), input="crop")
            ]  # fmt: skip
        if detect == "auto" and (fills or (small and not found)):  # a chip, taken whole
            return [chip]
        # A small image keeps its plain hash: the same bytes enrolled before it was searched are the same face.
        digest = chip.digest if small and detect == "auto" else content_hash(item.data, None, True)
        return [self._detected(base, image, digest, d) for d in found]

    def search(self, image: np.ndarray) -> list[Detection]:
        """Faces in ``image``, the largest first, in its pixels; an image of more than the configured
        pixels is searched shrunk (the smallest face found grows with it)."""
        from lrface.detection import MAX_DETECT_PIXELS, MAX_PYRAMID_PIXELS, DetectionInputError

        height, width = image.shape[:2]
        # Within the detector's own limits too: its pyramid starts at 12 / min_face times the image.
        budget = min(
            self.detection.max_pixels,
            MAX_DETECT_PIXELS,
            int(0.95 * MAX_PYRAMID_PIXELS * (self.detection.min_face_px / 12.0) ** 2),
        )
        scale = min(1.0, math.sqrt(budget / (height * width)))
        detector = self.detector()
        if not self._searches.acquire(timeout=self.detection.wait):
            raise FaceInputError("every face detector is busy; retry in a few seconds (LRFACE_DETECT_CONCURRENCY)", 503)
        try:
            if scale >= 1.0:
                return list(detector.detect(image))
            small = (max(1, round(width * scale)), max(1, round(height * scale)))
            shrunk = np.asarray(Image.fromarray(image).resize(small, Image.Resampling.BILINEAR, reducing_gap=2.0))
            found = detector.detect(shrunk)
        except DetectionInputError as exc:
            raise FaceInputError(f"image of {width}x{height} pixels: {exc}", 413) from None
        finally:
            self._searches.release()
        fx, fy = width / small[0], height / small[1]
        return [
            replace(
                d,
                box=(d.box[0] * fx, d.box[1] * fy, d.box[2] * fx, d.box[3] * fy),
                # landmarks are pixel positions (pixel i spans [i - 0.5, i + 0.5]), boxes are edges
                landmarks=tuple(((x + 0.5) * fx - 0.5, (y + 0.5) * fy - 0.5) for x, y in d.landmarks),
            )
            for d in found
        ]

    def search_small(self, image: np.ndarray) -> list[Detection]:
        """Faces in a small image (a chip, or a crop around a face, whose shorter side is at most
        :data:`CHIP_MAX_SIDE` px), the largest first, in its pixels: searched in a copy with margins of
        half its longer side (its edge pixels repeated: a face filling the crop still has surroundings)
        brought to :data:`SMALL_SEARCH_SIDE` px, so a face of a few pixels is within the detector's reach;
        only faces centred inside the image are kept. An optional step: none where the image is longer
        than twice :data:`CHIP_MAX_SIDE` (no face of its height would be found) or the detector is off or
        missing; it runs beside the frames' searches (a 72-px search needs no detector slot) and never
        fails the request."""
        height, width = image.shape[:2]
        if max(height, width) > 2 * CHIP_MAX_SIDE:
            return []
        try:
            detector = self.detector()
        except FaceInputError:
            return []
        pad = max(height, width) // 2
        padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        k = SMALL_SEARCH_SIDE / max(padded.shape[:2])
        size = (max(1, round(padded.shape[1] * k)), max(1, round(padded.shape[0] * k)))
        enlarged = np.asarray(Image.fromarray(padded).resize(size, Image.Resampling.BICUBIC))
        fx, fy = padded.shape[1] / size[0], padded.shape[0] / size[1]
        try:
            found = detector.detect(enlarged)
        except Exception:  # noqa: BLE001 - an optional step: the image is then taken whole
            return []
        mapped = [
            replace(
                d,
                box=(d.box[0] * fx - pad, d.box[1] * fy - pad, d.box[2] * fx - pad, d.box[3] * fy - pad),
                landmarks=tuple(((x + 0.5) * fx - 0.5 - pad, (y + 0.5) * fy - 0.5 - pad) for x, y in d.landmarks),
            )
            for d in found
        ]
        return [
            d for d in mapped if 0 <= (d.box[0] + d.box[2]) / 2 <= width and 0 <= (d.box[1] + d.box[3]) / 2 <= height
        ]

    def _detected(self, base: DecodedFace, image: np.ndarray, digest: str, found: Detection) -> DecodedFace:
        height, width = image.shape[:2]
        left, top, right, bottom = found.box
        shown = (max(left, 0.0), max(top, 0.0), min(right, float(width)), min(bottom, float(height)))
        framed = frame_face(found.box)
        try:  # the aligned chip from the detector's landmarks (lrface.landmarks), else the framed box
            face = FaceInput(landmark_chip(image, found.landmarks), None)
        except LandmarkError:
            face = FaceInput(image, framed)
        aligner = self.aligner()

        def aligned() -> FaceInput:  # dlib's chip, as the teacher's training chips were made
            assert aligner is not None
            return FaceInput(aligner.align(image, found.box), None)

        return replace(
            base,
            face=face,
            digest=digest,
            box=tuple(round(v, 1) for v in shown),  # type: ignore[arg-type]
            face_px=_side(framed),
            input="detected",
            detection_score=round(float(found.score), 4),
            teacher_input=aligned if aligner is not None else face,
        )

    def decode_all(
        self, items: Sequence[ImageItem], detect: DetectMode = "auto", max_request_pixels: int | None = None
    ) -> list[DecodedFace]:
        """The faces of every item of one request (each tagged with its item's index), under one
        budget (:class:`RequestBudget`)."""
        budget = RequestBudget(max_request_pixels or None)
        return [face for i, item in enumerate(items) for face in self.decode(item, detect, budget, i)]


def largest_face(faces: Sequence[DecodedFace], label: str) -> DecodedFace:
    """The one face of an image for enrolment: refused (422, naming the image) when none was found
    or when a second face is comparable in size (at least :data:`COMPARABLE_FACE` of the largest's
    side): then it is not clear who the subject is."""
    if not faces:
        raise FaceInputError(f"{label}: no face found (an image that is itself the face: send detect=false)")
    if len(faces) > 1 and faces[1].face_px >= COMPARABLE_FACE * faces[0].face_px:
        raise FaceInputError(
            f"{label}: {len(faces)} faces found, the two largest of similar size ({faces[0].face_px:.0f} and "
            f"{faces[1].face_px:.0f} px, boxes {list(faces[0].box or ())} and {list(faces[1].box or ())}); "
            f"enrol a photo of the subject alone, crop it, or give the face's box"
        )
    return faces[0]


def _tight(image: np.ndarray, found: Detection) -> bool:
    """Whether ``image`` is a face detector's tight crop of ``found`` (:data:`TIGHT_EYE_LINE`,
    :data:`TIGHT_ASPECT`): about square, the eyes (the detector's first two landmarks, pixel centres)
    low in it."""
    height, width = image.shape[:2]
    eyes = (found.landmarks[0][1] + found.landmarks[1][1]) / 2 + 0.5  # pixel i spans [i, i + 1) from the top
    return max(height, width) <= TIGHT_ASPECT * min(height, width) and eyes >= TIGHT_EYE_LINE * height


def _side(box: Sequence[float]) -> float:
    return round(float(max(box[2] - box[0], box[3] - box[1])), 1)  # tenths of a pixel, as boxes are answered


def _header_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the image header (no pixels decoded), None when unreadable (the
    decoder then says why)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # noqa: BLE001 - load_image reports the real error
        return None
