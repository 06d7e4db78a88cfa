"""What an enrollment is, in one function: decode each image (and find or take its face), embed it,
keep its canonical chip, and store it for the subject. The HTTP route
(``service.api.gallery_routes.enroll``), ``lrface enroll DIR`` (local gallery) and
``lrface enroll DIR --server URL`` (through that route) all enroll through :func:`enroll_images`.

Also here: the stored chip, and re-embedding a gallery from stored chips after a model change.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from lrface.embedder import FaceInput, OnnxEmbedder
from lrface.preprocessing import box_to_chip, load_image
from service.faces import FaceDecoder, ImageItem
from service.gallery.gallery import Gallery
from service.gallery.store import FaceRecord, GalleryStore, NewFace


def face_chip_png(face: FaceInput) -> bytes:
    """The canonical chip of a face (:func:`lrface.preprocessing.box_to_chip`) as PNG: re-embedding
    it gives the very input the face gave when it was enrolled."""
    buffer = io.BytesIO()
    Image.fromarray(box_to_chip(face.image, face.box)).save(buffer, format="PNG")
    return buffer.getvalue()


def chip_face(png: bytes) -> FaceInput:
    return FaceInput(np.asarray(load_image(png)), None)


def enroll_images(
    gallery: Gallery,
    embedder: OnnxEmbedder,
    decoder: FaceDecoder,
    subject_id: str,
    items: Sequence[ImageItem],
    detect: bool = False,
    max_request_pixels: int | None = None,
) -> list[FaceRecord]:
    """Enroll ``items`` for ``subject_id``; returns one record per item (``created`` False for an
    image already enrolled with the same box). Raises :class:`service.faces.FaceInputError` for an
    unusable image before anything is stored: a request is enrolled whole or not at all."""
    faces = decoder.decode_all(items, detect, max_request_pixels)
    vectors = embedder.embed([f.face for f in faces])
    new = [NewFace(f.digest, v, face_chip_png(f.face)) for f, v in zip(faces, vectors, strict=True)]
    return gallery.enroll(subject_id, new)


def reembed_store(store: GalleryStore, embedder: OnnxEmbedder) -> tuple[int, int]:
    """Re-embed every stored chip with ``embedder``; returns (re-embedded, faces without a chip)."""
    updates = []
    missing = 0
    for face_id, png in store.chips():
        if png is None:
            missing += 1
            continue
        updates.append((face_id, embedder.embed([chip_face(png)])[0]))
    store.replace_embeddings(updates, embedder.model_id)
    return len(updates), missing
