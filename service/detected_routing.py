"""From which size a *detected* face goes to the teacher, and how both models are fused below it
(``lrface bench frames --calibrate-routing``).

The card's ``routing.min_face_px`` was chosen on aligned chips of known size. A face the detector
finds in a frame is another input: the student sees its landmark chip (:mod:`lrface.landmarks`), the
teacher dlib's alignment of it (enlarged when small, :data:`lrface.alignment.ENLARGE_BELOW_PX`), and
its size is what the service measures (``face_px``: the framing rule's square around MTCNN's box,
tighter than the pasted face on small faces). So the switch for detected faces is chosen here, on
frames of *validation* people (never test people), through the service's own steps (``FaceDecoder``
with detection, ``Embedders``): each validation person's first photo enrolled in both spaces (with
training people's photos as distractors, :data:`GALLERY_SIZE`), their other photos pasted alone into
small frames at each size (sent as JPEG, quality 92, as cameras send frames), each face found
identified by both models and by the two fused (:class:`lrface.model_card.DetectedFusion`, where the
student's space is the teacher's centred one); the threshold on ``face_px`` and the student's weight in
the fusion below it that maximise rank-1 over all the faces are the ones to use (on a plateau, the
cheaper threshold: :func:`choose_threshold`; a weight of 1 is the student alone), with the fusion's
same-person threshold (:func:`_choose_fusion`). Beside them, for the record of
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
from lrface.model_card import GalleryFromTeacher, fused_vectors
from lrface.preprocessing import FRAME_SCALE, frame_face, load_image, load_image_file
from lrface.settings import Settings
from service.embedders import Embedders, Space
from service.faces import DecodedFace, DetectionConfig, FaceDecoder, ImageItem
from service.frame_synthesis import Box, SourceFace, match_detections, synthetic_frames
from service.frames_bench import encode_image, photo_subject_box

SIZES = (14.0, 16.0, 17.0, 18.0, 19.0, 20.0, 22.0, 24.0, 26.0, 28.0, 32.0)
# The student's share in the fusion of both models below the switch (1: the student alone).
FUSION_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 1.0)
# Rank-1 is flat near the crossing: among the thresholds within this much (a fraction) of the best,
# the cheaper is taken (:func:`choose_threshold`).
PLATEAU = 0.0025
FRAME_SIDE = 160  # one face a frame: the search is quick and every face counts once
# Gallery size: the validation people are joined by this many training people (one photo each, never a
# probe's answer), so a probe is searched among as many people as in the frame benchmark's gallery (the
# 963 test people). Among the 125 validation people alone the student's noisier embeddings rank the
# right person first more often than among 963, and the switch came out 2 px too high.
GALLERY_SIZE = 963
# The student on the same frames sent otherwise: column name, format, JPEG quality.
OTHER_ENCODINGS = (("png", "PNG", 100), ("jpeg75", "JPEG", 75))


def choose_threshold(
    candidates: Sequence[float], rank1: Sequence[float], plateau: float = PLATEAU, largest: bool = True
) -> float:
    """The largest candidate whose rank-1 is within ``plateau`` of the best one's (``largest`` False: the
    smallest). The cheaper side of the plateau: the teacher costs more per face than the student, but
    less than both models fused."""
    best = max(rank1)
    on_plateau = [t for t, r in zip(candidates, rank1, strict=True) if r >= best - plateau]
    return max(on_plateau) if largest else min(on_plateau)


def calibrate_detected_routing(
    lfw_root: Path,
    embedders: Embedders,
    sizes: Sequence[float] = SIZES,
    seed: int = 0,
    progress: bool = True,
    gallery_size: int = GALLERY_SIZE,
) -> dict[str, Any]:
    """Rank-1 of the teacher, the student and the two fused on detected faces of validation people by
    pasted size, the ``face_px`` from which the teacher alone should serve them and how to fuse both
    below it (``fusion``: None where the student alone is best, or its space is not the teacher's)."""
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

    # pasted size, face_px, truth, hits: teacher, student, student on box, teacher on chip, student on OTHER_ENCODINGS
    rows: list[tuple[float, ...]] = []
    student: list[np.ndarray] = []  # each face's student and teacher embeddings, for the fusion
    teacher: list[np.ndarray] = []
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
            teacher.append(embedders.embed([face], "teacher")[0])
            student.append(embedders.student.embed([face.face])[0])  # alone, whatever the card fuses
            hits = [  # as each model sees the face in the service, then the other inputs
                hit("teacher", teacher[-1], truth),
                hit("student", student[-1], truth),
                hit("student", embedders.student.embed([FaceInput(load_image(data), frame_face(face.box))])[0], truth),
                hit("teacher", embedders.teacher.embed([face.face])[0], truth),
            ]
            for _, fmt, quality in OTHER_ENCODINGS:  # the student on the frame sent otherwise, searched again
                again = pasted_face(encode_image(frame.pixels, fmt, quality), pasted)
                hits.append(0 if again is None else hit("student", embedders.student.embed([again.face])[0], truth))
            rows.append((size, face.face_px, truth, *hits))
    if not rows:
        raise ValueError("the detector found none of the pasted faces: nothing to choose the switch on")
    table = np.asarray(rows, dtype=np.float64)
    truths = table[:, 2].astype(int)
    fusion = _choose_fusion(
        np.stack(student), np.stack(teacher), table[:, 1], truths, table[:, 3], matrices["student"], people,
        embedders.from_teacher, seed,
    )  # fmt: skip
    columns = ["teacher", "student", "student_framed_box", "teacher_landmark_chip"]
    columns += [f"student_{name}" for name, _, _ in OTHER_ENCODINGS]
    fused_hits = fusion.pop("hits")
    if fused_hits is not None:
        columns.append("fused")
        table = np.column_stack([table, fused_hits])
    by_size = {}
    for size in sizes:
        of_size = table[table[:, 0] == size]
        if len(of_size):
            by_size[f"{size:g}"] = {
                "faces": len(of_size),
                "face_px_median": round(float(np.median(of_size[:, 1])), 2),
                **{f"rank1_{c}": round(100 * float(of_size[:, 3 + i].mean()), 1) for i, c in enumerate(columns)},
            }
    return {
        "people": "validation",
        "enrolled": enrolled,
        "distractors": len(labels) - enrolled,
        "by_pasted_size": by_size,
        **fusion,
        "card_min_face_px": embedders.routing.min_face_px if embedders.routing is not None else None,
    }


def _choose_fusion(
    student: np.ndarray, teacher: np.ndarray, face_px: np.ndarray, truths: np.ndarray, teacher_hits: np.ndarray,
    gallery: np.ndarray, people: np.ndarray, space: GalleryFromTeacher | None, seed: int,
) -> dict[str, Any]:  # fmt: skip
    """The switch to the teacher and, where the student's space is the teacher's centred one, the
    student's weight in the fusion of both below it (:class:`lrface.model_card.DetectedFusion`): the pair
    maximising rank-1 over all faces (a weight of 1 is the student alone, no fusion), the switch on the
    plateau of the chosen weight's curve (:func:`choose_threshold`: its cheaper side, the largest for the
    student alone, the smallest for the fusion, which runs both models); and the fusion's same-person
    threshold, at the best accuracy on one genuine and one impostor score per fused face below the switch
    (its own person's enrolled vector, another enrolled validation person's, seeded)."""
    from sklearn.metrics import roc_curve  # the train extra's (a calibration, never a served request)

    candidates = [float(t) for t in np.round(np.arange(12.0, 34.01, 0.5), 1)]
    weights = FUSION_WEIGHTS if space is not None else (1.0,)
    curves: dict[float, list[float]] = {}
    hits: dict[float, np.ndarray] = {}
    for weight in weights:
        probes = student if space is None or weight == 1.0 else fused_vectors(student, teacher, weight, space)
        hits[weight] = (people[np.argmax(probes @ gallery.T, axis=1)] == truths).astype(np.float64)
        curves[weight] = [float(np.where(face_px >= t, teacher_hits, hits[weight]).mean()) for t in candidates]
    weight = max(weights, key=lambda w: (max(curves[w]), w))  # a tie: the student's larger share
    switch = choose_threshold(candidates, curves[weight], largest=weight == 1.0)
    chosen: dict[str, Any] = {
        "rank1_by_threshold": {f"{t:g}": round(100 * r, 2) for t, r in zip(candidates, curves[weight], strict=True)},
        "teacher_from_face_px": switch,
        "rank1_by_weight": {f"{w:g}": round(100 * max(curves[w]), 2) for w in weights},
        "rank1_by_threshold_student_alone": {
            f"{t:g}": round(100 * float(np.where(face_px >= t, teacher_hits, hits[1.0]).mean()), 2) for t in candidates
        },
    }
    below = face_px < switch
    if space is None or weight == 1.0 or not below.any():  # nothing to fuse
        return {**chosen, "fusion": None, "hits": None}
    probes = fused_vectors(student[below], teacher[below], weight, space)
    rng = np.random.default_rng(seed)
    enrolled = np.flatnonzero(people >= 0)
    own = np.array([np.flatnonzero(people == t)[0] for t in truths[below]], dtype=int)
    other = np.array([rng.choice(enrolled[people[enrolled] != t]) for t in truths[below]], dtype=int)
    scores = np.r_[(probes * gallery[own]).sum(axis=1), (probes * gallery[other]).sum(axis=1)]
    same = np.r_[np.ones(len(own)), np.zeros(len(other))]
    false_rate, true_rate, thresholds = roc_curve(same, scores)
    best = int(np.argmax(true_rate - false_rate))
    fusion = {
        "student_weight": weight,
        "threshold": round(float(thresholds[best]), 4),
        "validation": {
            "faces": int(below.sum()),
            "accuracy": round(float((true_rate[best] + 1 - false_rate[best]) / 2), 4),
            "pairs": "each face with its own person's enrolled face and another validation person's",
        },
    }
    return {**chosen, "fusion": fusion, "hits": hits[weight]}
