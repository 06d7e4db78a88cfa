"""From which size a *detected* face goes to the teacher (``lrface bench frames --calibrate-routing``).

The card's ``routing.min_face_px`` was chosen on aligned chips of known size. A face the detector
finds in a frame is another input: the student sees its landmark chip (:mod:`lrface.landmarks`), the
teacher dlib's alignment of it (enlarged when small, :data:`lrface.alignment.ENLARGE_BELOW_PX`), and
its size is what the service measures (``face_px``: the framing rule's square around MTCNN's box,
tighter than the pasted face on small faces). So the switch for detected faces is chosen here, on
frames of *validation* people (never test people), through the service's own steps (``FaceDecoder``
with detection, ``Embedders``): each validation person's first photo enrolled in both spaces (with
training people's photos as distractors, :data:`GALLERY_SIZE`), their other photos pasted alone into
small frames at each size (sent as JPEG, quality 92, as cameras send frames), each face found
identified by both models; the threshold on ``face_px`` that maximises rank-1 over all the faces is
the one to use (on a plateau, the largest: :func:`choose_threshold`). Beside them, for the record of
why detected faces are seen so: the student on the framed box
(:func:`lrface.preprocessing.frame_face`) and the teacher on the landmark chip of the same faces; and
for the record of what compression costs the student, the same frames sent losslessly (PNG) and at a
lower JPEG quality (:data:`OTHER_ENCODINGS`), each searched again (a face not found there is a miss;
faces the search of the JPEG-92 frame missed are left out of every column).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lrface.data.lfw import identity_split
from lrface.detection import MtcnnDetector
from lrface.embedder import FaceInput
from lrface.preprocessing import FRAME_SCALE, frame_face, load_image, load_image_file
from lrface.settings import Settings
from service.embedders import Embedders, Space
from service.faces import DecodedFace, DetectionConfig, FaceDecoder, ImageItem
from service.frame_synthesis import Box, SourceFace, match_detections, synthetic_frames
from service.frames_bench import encode_image, photo_subject_box

SIZES = (14.0, 16.0, 17.0, 18.0, 19.0, 20.0, 22.0, 24.0)
# Rank-1 is flat near the crossing: among the thresholds within this much (a fraction) of the best,
# the largest is taken, because the teacher costs more per face than the student.
PLATEAU = 0.0025
FRAME_SIDE = 160  # one face a frame: the search is quick and every face counts once
# Gallery size: the validation people are joined by this many training people (one photo each, never a
# probe's answer), so a probe is searched among as many people as in the frame benchmark's gallery (the
# 963 test people). Among the 125 validation people alone the student's noisier embeddings rank the
# right person first more often than among 963, and the switch came out 2 px too high.
GALLERY_SIZE = 963
# The student on the same frames sent otherwise: column name, format, JPEG quality.
OTHER_ENCODINGS = (("png", "PNG", 100), ("jpeg75", "JPEG", 75))


def choose_threshold(candidates: Sequence[float], rank1: Sequence[float], plateau: float = PLATEAU) -> float:
    """The largest candidate whose rank-1 is within ``plateau`` of the best one's."""
    best = max(rank1)
    return max(t for t, r in zip(candidates, rank1, strict=True) if r >= best - plateau)


def calibrate_detected_routing(
    lfw_root: Path,
    embedders: Embedders,
    sizes: Sequence[float] = SIZES,
    seed: int = 0,
    progress: bool = True,
    gallery_size: int = GALLERY_SIZE,
) -> dict[str, Any]:
    """Rank-1 of the teacher and the student on detected faces of validation people by pasted size,
    and the ``face_px`` from which the teacher should serve them."""
    if embedders.teacher is None:
        raise ValueError(
            "no teacher to route to: the model card has no routing, the teacher's network "
            "(LRFACE_TEACHER_MODEL) is missing, or dlib is not installed"
        )
    split = identity_split(lfw_root)
    names = sorted(split.val)
    settings = Settings()
    decoder = FaceDecoder(settings.max_image_pixels, DetectionConfig.from_settings(settings))
    reference = MtcnnDetector(min_face_px=20)  # the subject's box in each HR photo, for pasting
    gallery: dict[Space, list[np.ndarray]] = {"student": [], "teacher": []}
    labels: list[int] = []
    sources: list[SourceFace] = []

    def enrol(photo: Path, person: int) -> bool:
        """The photo's face in both spaces, as enrolment fills them; False without a face."""
        faces = decoder.decode(ImageItem(photo.read_bytes(), photo.name), "auto")
        if not faces:
            return False
        teacher = embedders.embed(faces[:1], "teacher")
        gallery["teacher"].append(teacher[0])
        gallery["student"].append(embedders.gallery_vectors(faces[:1], teacher)[0])
        labels.append(person)
        return True

    for person, name in enumerate(tqdm(names, desc="enrolling", disable=not progress)):
        photos = split.val[name]
        if not enrol(photos[0], person):
            continue
        for path in photos[1:]:
            image = load_image_file(path)
            box = photo_subject_box(image, reference)
            if box is not None:
                sources.append(SourceFace(image, box, person))
    if not labels or not sources:
        raise ValueError(f"{lfw_root}: no validation person enrolled with another photo to paste")
    enrolled = len(labels)
    for name in tqdm(sorted(split.train), desc="distractors", disable=not progress):
        if len(labels) >= gallery_size:
            break
        enrol(split.train[name][0], -1)  # -1: nobody's answer
    matrices = {space: np.stack(vectors) for space, vectors in gallery.items()}
    people = np.asarray(labels)

    def pasted_face(data: bytes, pasted: Box) -> DecodedFace | None:
        """The face pasted at ``pasted`` as the service finds it in the frame sent as ``data`` (None: missed)."""
        found = decoder.decode(ImageItem(data, "frame"), "true")
        matched = match_detections([pasted], [f.box for f in found if f.box is not None])
        return found[matched[0]] if 0 in matched else None

    def hit(space: Space, vector: np.ndarray, truth: int) -> int:
        return int(people[int(np.argmax(matrices[space] @ vector))] == truth)

    # pasted size, face_px, hits: teacher, student, student on box, teacher on chip, student on OTHER_ENCODINGS
    rows: list[tuple[float, ...]] = []
    for size in sizes:
        frames = synthetic_frames(sources, len(sources), [size / FRAME_SCALE], width=FRAME_SIDE, height=FRAME_SIDE,
                                  faces_per_frame=(1, 1), empty_fraction=0.0, seed=seed + int(10 * size))  # fmt: skip
        for frame in tqdm(frames, desc=f"{size:g} px", disable=not progress):
            if not frame.faces:
                continue
            pasted, truth = frame.faces[0].box, frame.faces[0].person
            data = encode_image(frame.pixels, "JPEG")  # as a camera sends frames (and `lrface bench frames`)
            face = pasted_face(data, pasted)
            if face is None or face.box is None:
                continue
            hits = [  # as the service sees the face, then the other inputs
                hit("teacher", embedders.embed([face], "teacher")[0], truth),
                hit("student", embedders.embed([face], "student")[0], truth),
                hit("student", embedders.student.embed([FaceInput(load_image(data), frame_face(face.box))])[0], truth),
                hit("teacher", embedders.teacher.embed([face.face])[0], truth),
            ]
            for _, fmt, quality in OTHER_ENCODINGS:  # the student on the frame sent otherwise, searched again
                again = pasted_face(encode_image(frame.pixels, fmt, quality), pasted)
                hits.append(0 if again is None else hit("student", embedders.embed([again], "student")[0], truth))
            rows.append((size, face.face_px, *hits))
    if not rows:
        raise ValueError("the detector found none of the pasted faces: nothing to choose the switch on")
    table = np.asarray(rows, dtype=np.float64)
    by_size = {
        f"{size:g}": {
            "faces": int((table[:, 0] == size).sum()),
            "face_px_median": round(float(np.median(table[table[:, 0] == size, 1])), 2),
            "rank1_teacher": round(100 * float(table[table[:, 0] == size, 2].mean()), 1),
            "rank1_student": round(100 * float(table[table[:, 0] == size, 3].mean()), 1),
            "rank1_student_framed_box": round(100 * float(table[table[:, 0] == size, 4].mean()), 1),
            "rank1_teacher_landmark_chip": round(100 * float(table[table[:, 0] == size, 5].mean()), 1),
            **{
                f"rank1_student_{name}": round(100 * float(table[table[:, 0] == size, 6 + i].mean()), 1)
                for i, (name, _, _) in enumerate(OTHER_ENCODINGS)
            },
        }
        for size in sizes
        if (table[:, 0] == size).any()
    }
    candidates = [float(t) for t in np.round(np.arange(12.0, 26.01, 0.5), 1)]
    overall = [float(np.where(table[:, 1] >= t, table[:, 2], table[:, 3]).mean()) for t in candidates]
    return {
        "people": "validation",
        "enrolled": enrolled,
        "distractors": len(labels) - enrolled,
        "by_pasted_size": by_size,
        "rank1_by_threshold": {f"{t:g}": round(100 * r, 2) for t, r in zip(candidates, overall, strict=True)},
        "teacher_from_face_px": choose_threshold(candidates, overall),
        "card_min_face_px": embedders.routing.min_face_px if embedders.routing is not None else None,
    }
