"""What an enrollment is, in one function: decode each image (and find or take its face), embed it,
keep its canonical chip, and store it for the subject. The HTTP route
(``service.api.gallery_routes.enroll``), ``lrface enroll DIR`` (local gallery) and
``lrface enroll DIR --server URL`` (through that route) all enroll through :func:`enroll_images`.

Also here: the stored chip, and re-embedding a gallery from stored chips after a model change.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lrface.embedder import FaceInput
from lrface.preprocessing import CHIP_SIDE, HR_CHIP_SIDE, box_to_chip, encode_image, hr_chip, load_image
from service.embedders import Embedders
from service.faces import DecodedFace, DetectMode, FaceDecoder, ImageItem, largest_face
from service.gallery.gallery import Gallery
from service.gallery.store import FaceRecord, GalleryStore, NewFace
from service.gallery.tables import DEFAULT_GALLERY


def face_chip_png(face: FaceInput) -> bytes:
    """The canonical chip of a face (:func:`lrface.preprocessing.box_to_chip`) as PNG: re-embedding
    it gives the very input the face gave when it was enrolled."""
    return encode_image(box_to_chip(face.image, face.box))


def hr_chip_png(face: FaceInput) -> bytes:
    """The face at 150 px (:func:`lrface.preprocessing.hr_chip`) as PNG: the teacher's view, and what
    any future model can re-embed."""
    return encode_image(hr_chip(face.image, face.box))


def chip_face(png: bytes) -> FaceInput:
    return FaceInput(np.asarray(load_image(png)), None)


def enroll_images(
    gallery: Gallery,
    embedders: Embedders,
    decoder: FaceDecoder,
    subject_id: str,
    items: Sequence[ImageItem],
    detect: DetectMode = "auto",
    max_request_pixels: int | None = None,
    target: str = DEFAULT_GALLERY,
) -> list[tuple[FaceRecord, DecodedFace]]:
    """Enroll ``items`` for ``subject_id`` of the gallery ``target``, one face per image: a chip or a
    box as it is, a searched photo's largest face (refused when none is found or a second face is
    about as large, see :func:`service.faces.largest_face`). Each face keeps its student embedding,
    its teacher embedding (where the teacher serves large faces), its canonical chip and its HR chip
    (the teacher's view: the dlib-aligned chip of a detected face). Returns one ``(record, face)`` per
    item (``created`` False for an image already enrolled the same way). Raises
    :class:`service.faces.FaceInputError` for an unusable image before anything is stored: a request
    is enrolled whole or not at all."""
    if gallery.model_version != embedders.gallery_model_id:
        raise ValueError(
            f"the gallery was opened for {gallery.model_version}, these embedders fill it as "
            f"{embedders.gallery_model_id}: open it with Embedders.gallery_model_id"
        )
    found = decoder.decode_all(items, detect, max_request_pixels)
    faces = [largest_face([f for f in found if f.image == i], item.label) for i, item in enumerate(items)]
    use_teacher = embedders.teacher is not None and (gallery.teacher is not None or embedders.from_teacher is not None)
    teacher = embedders.embed(faces, "teacher") if use_teacher else None
    vectors = embedders.gallery_vectors(faces, teacher)
    if gallery.teacher is None:
        teacher = None
    new = [
        NewFace(f.digest, v, face_chip_png(f.face), None if teacher is None else teacher[i],
                hr_chip_png(f.teacher_face()))
        for i, (f, v) in enumerate(zip(faces, vectors, strict=True))
    ]  # fmt: skip
    return list(zip(gallery.enroll(subject_id, new, target), faces, strict=True))


def reembed_store(store: GalleryStore, embedders: Embedders) -> tuple[int, int, int]:
    """Re-embed every stored face the way :func:`enroll_images` embeds it now: the student index from
    the canonical chip (or, where the card says so, the teacher's centred embedding of the HR chip,
    with its distant views, the student's or fused: :meth:`Embedders.gallery_vectors`),
    the teacher's from the HR chip. A face enrolled before HR chips
    were kept gets no teacher embedding (its 64-px chip, up-sampled, would serve large probes worse than
    the student does): while any face lacks one, the student serves every face against the gallery, and
    its student-index vector is the student's own. A chip or box enrolled smaller than the canonical chip
    keeps its side in the stored chip and is re-embedded as a face of that side (the student's own or
    fused embedding below the teacher's switch, as enrolment made it); a face the detector found small
    in a frame is stored at the canonical chip's side and re-embedded as a large one. Returns
    (re-embedded, faces without a chip, faces without an HR chip)."""
    updates, teacher_updates = [], []
    missing = no_hr = 0
    teacher, rule = embedders.teacher, embedders.from_teacher
    for face_id, png, hr_png in store.chips():
        if png is None:
            missing += 1
            continue
        hr_face = chip_face(hr_png) if hr_png is not None else None
        hr_vector = teacher.embed([hr_face])[0] if teacher is not None and hr_face is not None else None
        chip = chip_face(png)
        if rule is not None and hr_vector is not None and hr_face is not None:
            side = max(chip.image.shape[:2])
            face = DecodedFace(chip, "", None, face_px=float(side if side < CHIP_SIDE else HR_CHIP_SIDE),
                               input="chip", teacher_input=hr_face)  # fmt: skip
            updates.append((face_id, embedders.gallery_vectors([face], hr_vector[None])[0]))
        else:
            updates.append((face_id, embedders.student.embed([chip])[0]))
        if hr_vector is not None:
            teacher_updates.append((face_id, hr_vector))
        no_hr += hr_png is None
    store.replace_embeddings(updates, embedders.gallery_model_id)
    if teacher is not None:
        store.replace_embeddings(teacher_updates, teacher.model_id, space="teacher")
    return len(updates), missing, no_hr
