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
same-person threshold (:func:`_choose_fusion`), and, chosen with them, the weight of each enrolled
face's distant views in the student's gallery and whether they are the student's or fused as detected
probes are (at more sides; made with the card's fusion as loaded: :func:`_choose_views`,
:class:`lrface.model_card.DistantViews`), and how a fused face is seen (:func:`_choose_probe_views`: the
student on its landmark chip alone or with dlib's chip too, the teacher with its mirror image or not).
Beside them, for the record of why detected faces are seen so: the student on the framed box
(:func:`lrface.preprocessing.frame_face`) and on dlib's chip (the teacher's) instead of the landmark
chip, and the teacher on the landmark chip of the same faces; and
for the record of what compression costs the student, the same frames sent losslessly (PNG) and at a
lower JPEG quality (:data:`OTHER_ENCODINGS`), each searched again (a face not found there is a miss;
faces the search of the JPEG-92 frame missed are left out of every column).

Chips (and client boxes) are chosen for apart, on the same validation people's aligned chips at
:data:`CHIP_SIZES` sent as PNG chips against the gallery so chosen (:func:`_choose_chip_routing`): the
student alone below one side, both fused up to the teacher's switch for chips, the teacher from it
(the card's ``routing.chip_fusion`` and ``routing.chip_min_face_px``; the offline
``routing.min_face_px`` compared the student alone, without distant views, with the teacher).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lrface.alignment import DlibAligner
from lrface.data.lfw import identity_split
from lrface.degradation import DegradationConfig, degrade
from lrface.detection import MtcnnDetector
from lrface.embedder import FaceInput
from lrface.model_card import (
    DISTANT_VIEW_QUALITY,
    VIEW_SIDES,
    ChipFusion,
    DetectedFusion,
    DistantViews,
    GalleryFromTeacher,
    ModelCard,
    Routing,
    fused_vectors,
    fused_view_key,
    with_distant_views,
)
from lrface.preprocessing import FRAME_SCALE, encode_image, frame_face, hr_to_lr, load_image, load_image_file
from lrface.settings import Settings
from service.embedders import Embedders, Space
from service.faces import DecodedFace, DetectionConfig, FaceDecoder, ImageItem
from service.frame_synthesis import Box, SourceFace, match_detections, synthetic_frames
from service.frames_bench import photo_subject_box

SIZES = (14.0, 16.0, 17.0, 18.0, 19.0, 20.0, 22.0, 24.0, 26.0, 28.0, 32.0)
# The sides of the aligned validation chips the routing of chips (and client boxes) is chosen on.
CHIP_SIZES = (12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 40)
# The student's share in the fusion of both models below the switch (1: the student alone).
FUSION_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 1.0)
# The weight of each enrolled face's distant views in the student's gallery vector (0: none), chosen with
# the fusion (:class:`lrface.model_card.DistantViews`, made at their kind's sides, VIEW_SIDES, and quality 92).
VIEW_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
# The size of the aligned validation chips a student probe's threshold against a gallery with distant
# views is chosen on (as the card's gallery_from_teacher.threshold was: 16-px probes).
CHIP_PX = 16
# The fewest impostor scores above a per-comparison threshold for it to be recorded (open_set).
PER_COMPARISON_MIN = 10
# Rank-1 is flat near the crossing: among the thresholds within this much (a fraction) of the best,
# the cheaper is taken (:func:`choose_threshold`).
PLATEAU = 0.0025
FRAME_SIDE = 160  # one face a frame: the search is quick and every face counts once
# Gallery size: the validation people are joined by this many training people (one photo each, never a
# probe's answer), so a probe is searched among as many people as in the frame benchmark's gallery (the
# 963 test people). Among the 125 validation people alone the student's noisier embeddings rank the
# right person first more often than among 963, and the switch came out 2 px too high.
GALLERY_SIZE = 963
# How a fused face is seen (DetectedFusion.student_on_both_chips, .teacher_mirrored), the cheapest first: the
# student's embedding of the teacher's chip costs a 16-px forward pass, the teacher's of the mirror a 150-px one.
PROBE_VIEWS = ((False, False), (True, False), (False, True), (True, True))
# The student on the same frames sent otherwise: column name, format, JPEG quality.
OTHER_ENCODINGS = (("png", "PNG", 100), ("jpeg75", "JPEG", 75))


def rank1_hits(probes: np.ndarray, gallery: np.ndarray, people: np.ndarray, truths: np.ndarray) -> np.ndarray:
    """1.0 where the gallery entry nearest each probe is its own person (``truths``), else 0.0."""
    return (people[np.argmax(probes @ gallery.T, axis=1)] == truths).astype(np.float64)


def served_hits(face_px: np.ndarray, switch: float, teacher_hits: np.ndarray, below: np.ndarray) -> np.ndarray:
    """Each face's hit as the service serves it: the teacher's from ``switch`` (``face_px`` at least it),
    ``below`` (the fusion's, or the student's alone) under it."""
    return np.where(face_px >= switch, teacher_hits, below)


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
    space = embedders.from_teacher
    gallery: dict[Space, list[np.ndarray]] = {"student": [], "teacher": []}
    # each enrolled face's distant views, where the space is the teacher's: the student's (False) and fused (True)
    views: dict[bool, list[np.ndarray]] = {False: [], True: []}
    labels: list[int] = []
    sources: list[SourceFace] = []

    def enrol(photo: Path, person: int) -> bool:
        """The photo's face in both spaces, as enrolment fills them (the student's without distant
        views: they are chosen here), and its distant views; False without a face."""
        faces = decoder.decode(ImageItem(photo.read_bytes(), photo.name), "auto")
        if not faces:
            return False
        teacher = embedders.embed(faces[:1], "teacher")
        gallery["teacher"].append(teacher[0])
        gallery["student"].append(embedders.gallery_vectors(faces[:1], teacher, views=False)[0])
        if space is not None:
            every_side = sorted({side for sides in VIEW_SIDES.values() for side in sides})  # each searched once
            found = embedders.distant_view_faces(faces[0].teacher_face(), every_side, DISTANT_VIEW_QUALITY)
            for fused, sides in VIEW_SIDES.items():
                views[fused].append(embedders.views_mean([found[s] for s in sides if s in found], fused=fused))
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

    def hit(vector: np.ndarray, truth: int) -> int:
        """Whether the teacher's gallery ranks ``truth`` first for ``vector``."""
        return int(people[int(np.argmax(matrices["teacher"] @ vector))] == truth)

    # pasted size, face_px, truth, hits: teacher, teacher on the landmark chip
    rows: list[tuple[float, ...]] = []
    student: list[np.ndarray] = []  # each face's student and teacher embeddings, for the fusion
    teacher: list[np.ndarray] = []
    on_teacher_chip: list[np.ndarray] = []  # the student on the teacher's chip, the teacher on its mirror
    mirrored: list[np.ndarray] = []
    # the student on the framed box and on OTHER_ENCODINGS (None: missed there), searched once the gallery is chosen
    others: list[list[np.ndarray | None]] = []
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
            seen: list[np.ndarray | None] = [
                embedders.student.embed([FaceInput(load_image(data), frame_face(face.box))])[0]
            ]
            for _, fmt, quality in OTHER_ENCODINGS:  # the student on the frame sent otherwise, searched again
                again = pasted_face(encode_image(frame.pixels, fmt, quality), pasted)
                seen.append(None if again is None else embedders.student.embed([again.face])[0])
            on_teacher_chip.append(embedders.student.embed([face.teacher_face()])[0])  # the student on dlib's chip
            seen.append(on_teacher_chip[-1])
            others.append(seen)
            mirrored.append(embedders.teacher.embed([face.teacher_face().mirrored()])[0])
            # as the teacher sees the face in the service, and on the landmark chip
            on_chip = embedders.teacher.embed([face.face])[0]
            rows.append((size, face.face_px, truth, hit(teacher[-1], truth), hit(on_chip, truth)))
    if not rows:
        raise ValueError("the detector found none of the pasted faces: nothing to choose the switch on")
    table = np.asarray(rows, dtype=np.float64)
    truths = table[:, 2].astype(int)
    aligner = DlibAligner()
    aligned = [aligner.align(source.image, source.box) for source in sources]
    chips = [FaceInput(hr_to_lr(chip, CHIP_PX)) for chip in aligned]
    chip_probes = (embedders.student.embed(chips), np.asarray([source.person for source in sources]))
    assert embedders.routing is not None
    hr_probes = embedders.teacher.embed([FaceInput(chip) for chip in aligned])
    teacher_open_set = {
        **open_set(hr_probes, matrices["teacher"], people, chip_probes[1], embedders.routing.threshold),
        "probes": "validation people's HR photos (dlib-aligned), searched by the teacher",
    }
    fusion = _choose_probe_views(
        (np.stack(student), np.stack(on_teacher_chip)), (np.stack(teacher), np.stack(mirrored)), table[:, 1], truths,
        table[:, 3], matrices["student"], {k: np.stack(v) for k, v in views.items()} if views[False] else None,
        people, space, seed, chip_probes,
    )  # fmt: skip
    chosen_gallery = fusion.pop("gallery")
    chip_routing = _choose_chip_routing(
        *_chip_probes(aligned, [source.person for source in sources], embedders, decoder, progress),
        chosen_gallery, matrices["teacher"], people, space, seed,
    )  # fmt: skip

    def student_hits(vectors: Sequence[np.ndarray | None]) -> np.ndarray:
        """Whether the chosen student gallery ranks each face's person first (a missed face: no)."""
        pairs = zip(vectors, truths, strict=True)
        found = [v is not None and people[int(np.argmax(chosen_gallery @ v))] == t for v, t in pairs]
        return np.asarray(found, np.float64)

    columns = ["teacher", "teacher_landmark_chip", "student", "student_framed_box"]
    columns += [f"student_{name}" for name, _, _ in OTHER_ENCODINGS] + ["student_dlib_chip"]
    table = np.column_stack(
        [table, student_hits(student), *(student_hits([o[i] for o in others]) for i in range(len(others[0])))]
    )
    fused_hits = fusion.pop("hits")
    below = fused_hits if fused_hits is not None else table[:, 5]  # the fusion, or the student alone
    served = served_hits(table[:, 1], fusion["teacher_from_face_px"], table[:, 3], below)
    if fused_hits is not None:
        columns.append("fused")
        table = np.column_stack([table, fused_hits])
    columns.append("served")
    table = np.column_stack([table, served])
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
        "fused_views_made_with": fused_view_key(embedders.routing),  # the card's as loaded made the fused views
        "chips": chip_routing,
        "teacher_open_set": teacher_open_set,
    }


def write_routing(card: ModelCard, result: dict[str, Any]) -> Routing:
    """Write a calibration's choice (:func:`calibrate_detected_routing`'s ``result``) into ``card``: the
    routing's detected switch and fusion, chip switch and fusion, the teacher's open-set figures, what
    they were chosen on, and the student gallery's distant views (``--update-card``); the routing so
    written. A card without routing (no teacher to route to) is refused (ValueError)."""
    routing = card.routing
    if routing is None:
        raise ValueError("its card routes no faces to the teacher")
    routing.detected_min_face_px = result["teacher_from_face_px"]
    fusion = result["fusion"]
    routing.detected_fusion = None if fusion is None else DetectedFusion(**fusion)
    chips = result["chips"]
    routing.chip_min_face_px = chips["teacher_from_face_px"]
    routing.chip_fusion = None if chips["fusion"] is None else ChipFusion(**chips["fusion"])
    routing.chip_validation = {k: v for k, v in chips.items() if k not in ("teacher_from_face_px", "fusion")}
    routing.teacher_open_set = result["teacher_open_set"]
    views = result["distant_views"]
    if card.gallery_from_teacher is not None:
        card.gallery_from_teacher.distant_views = None if views is None else DistantViews(**views)
    skipped = ("teacher_from_face_px", "fusion", "distant_views", "chips", "teacher_open_set")
    routing.detected_validation = {k: v for k, v in result.items() if k not in skipped}
    return routing


def _chip_probes(
    aligned: Sequence[np.ndarray], people: Sequence[int], embedders: Embedders, decoder: FaceDecoder, progress: bool,
    sizes: Sequence[int] = CHIP_SIZES,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Each aligned validation chip at each of ``sizes`` px (a clean probe, as ``lrface bench identify``
    makes them: :func:`lrface.degradation.degrade`), sent as a PNG chip and taken as the service takes
    it: ``(face_px, truths, student embeddings, teacher embeddings)``."""
    face_px, truths, student, teacher = [], [], [], []
    for size in tqdm(sizes, desc="chips", disable=not progress):
        items = [ImageItem(encode_image(degrade(chip, DegradationConfig(size=size))), "chip") for chip in aligned]
        faces = [decoder.decode(item, "false")[0] for item in items]
        face_px += [face.face_px for face in faces]
        truths += list(people)
        student.append(embedders.student.embed([face.face for face in faces]))
        teacher.append(embedders.embed(faces, "teacher"))
    return np.asarray(face_px), np.asarray(truths), np.concatenate(student), np.concatenate(teacher)


def _choose_chip_routing(
    face_px: np.ndarray, truths: np.ndarray, student: np.ndarray, teacher: np.ndarray, gallery: np.ndarray,
    teacher_gallery: np.ndarray, people: np.ndarray, space: GalleryFromTeacher | None, seed: int,
) -> dict[str, Any]:  # fmt: skip
    """How chips (and client boxes) are served, by their side: the student alone below ``from``, both
    fused (the student's weight among :data:`FUSION_WEIGHTS`) from ``from`` to the switch, the teacher
    from the switch (each a chip size). The triple maximising rank-1 over all chips (every size as
    many), on the plateau the narrowest fusion band (it runs both models); the fusion's same-person
    threshold on the fused chips (:func:`best_accuracy_threshold`). ``gallery``: the student's, as
    chosen (with its distant views); no fusion where the student's space is not the teacher's."""
    sizes = sorted({float(p) for p in face_px})
    alone = rank1_hits(student, gallery, people, truths)
    by_teacher = rank1_hits(teacher, teacher_gallery, people, truths)
    fused: dict[float, np.ndarray] = {}  # by the student's weight (1, the student alone, is no fusion)
    if space is not None:
        fused = {w: rank1_hits(fused_vectors(student, teacher, w, space), gallery, people, truths)
                 for w in FUSION_WEIGHTS if w < 1.0}  # fmt: skip
    weights = list(fused)
    # (rank-1, switch, from, weight); from == switch: nothing fused
    tried = [(float(np.where(face_px >= switch, by_teacher, alone).mean()), switch, switch, 1.0) for switch in sizes]
    for weight, hits in fused.items():
        for switch in sizes:
            for start in (s for s in sizes if s < switch):
                served = np.where(face_px >= switch, by_teacher, np.where(face_px >= start, hits, alone))
                tried.append((float(served.mean()), switch, start, weight))
    best = max(r for r, *_ in tried)
    rank1, switch, start, weight = min(
        (t for t in tried if t[0] >= best - PLATEAU), key=lambda t: (t[1] - t[2], -t[0], -t[1])
    )
    by_size = {}
    for size in sizes:
        of = face_px == size
        by_size[f"{size:g}"] = {
            "faces": int(of.sum()),
            "rank1_student": round(100 * float(alone[of].mean()), 1),
            "rank1_teacher": round(100 * float(by_teacher[of].mean()), 1),
            **({} if weight == 1.0 else {"rank1_fused": round(100 * float(fused[weight][of].mean()), 1)}),
        }
    fusion = None
    band = (face_px >= start) & (face_px < switch)
    if weight < 1.0 and space is not None:
        probes = fused_vectors(student[band], teacher[band], weight, space)
        threshold, validation = best_accuracy_threshold(probes, gallery, people, truths[band], seed)
        fusion = {"from_face_px": start, "student_weight": weight, "threshold": threshold, "validation": validation}
    return {
        "probes": "validation people's aligned chips (their photos after the first), clean, sent as PNG chips",
        "by_size": by_size,
        "rank1_by_weight": {
            f"{w:g}": round(100 * max(r for r, _, _, x in tried if x == w), 2) for w in [*weights, 1.0]
        },
        "rank1": round(100 * rank1, 2),
        "teacher_from_face_px": switch,
        "fusion": fusion,
    }


def _choose_probe_views(
    student: tuple[np.ndarray, np.ndarray], teacher: tuple[np.ndarray, np.ndarray], face_px: np.ndarray,
    truths: np.ndarray, teacher_hits: np.ndarray, gallery: np.ndarray, views: dict[bool, np.ndarray] | None,
    people: np.ndarray, space: GalleryFromTeacher | None, seed: int, chips: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """:func:`_choose_views` for each way a fused face may be seen (:data:`PROBE_VIEWS`,
    :class:`lrface.model_card.DetectedFusion`): ``student``, the student's embeddings of each face's own
    input and of the teacher's; ``teacher``, the teacher's of its input and of its mirror image. The
    student alone is always its own input's, as the service serves it alone. The cheapest way whose
    rank-1 over all faces as served (at the switch chosen with it) is within :data:`PLATEAU` of the best
    way's, its choice written into the fusion; where nothing is fused the ways are all one."""
    tried: dict[tuple[bool, bool], dict[str, Any]] = {}
    served: dict[tuple[bool, bool], float] = {}
    for both, mirror in PROBE_VIEWS if space is not None else PROBE_VIEWS[:1]:
        way = DetectedFusion(student_weight=1.0, threshold=0.0, student_on_both_chips=both, teacher_mirrored=mirror)
        seen, taught = way.student_view(*student), way.teacher_view(*teacher)
        result = _choose_views(seen, taught, face_px, truths, teacher_hits, gallery, views, people, space, seed, chips,
                               alone=student[0])  # fmt: skip
        tried[(both, mirror)] = result
        served[(both, mirror)] = result["rank1_by_threshold"][f"{result['teacher_from_face_px']:g}"]
    chosen = next(way for way in tried if served[way] >= max(served.values()) - 100 * PLATEAU)
    result = tried[chosen]
    if result["fusion"] is not None:
        result["fusion"] = {**result["fusion"], "student_on_both_chips": chosen[0], "teacher_mirrored": chosen[1]}
    names = {way: f"student on {'both chips' if way[0] else 'its chip'}, teacher {'and mirror' if way[1] else 'alone'}"
             for way in PROBE_VIEWS}  # fmt: skip
    return {**result, "rank1_as_served_by_probe_views": {names[way]: rank1 for way, rank1 in served.items()}}


def _choose_views(
    student: np.ndarray, teacher: np.ndarray, face_px: np.ndarray, truths: np.ndarray, teacher_hits: np.ndarray,
    gallery: np.ndarray, views: dict[bool, np.ndarray] | None, people: np.ndarray, space: GalleryFromTeacher | None,
    seed: int, chips: tuple[np.ndarray, np.ndarray] | None = None, alone: np.ndarray | None = None,
) -> dict[str, Any]:  # fmt: skip
    """:func:`_choose_fusion` (``alone``: see there) with the student's gallery joined by the enrolled
    faces' distant ``views`` at each of :data:`VIEW_WEIGHTS` (:func:`lrface.model_card.with_distant_views`):
    ``views[False]``, the student's, and, where given, ``views[True]``, fused as detected probes are
    (:attr:`DistantViews.fused`), each at its kind's sides (:data:`lrface.model_card.VIEW_SIDES`). The cheapest
    whose best rank-1 over all faces is within :data:`PLATEAU` of the best's (no views; then the
    student's, the smaller weight first; then fused views, which cost enrolment the teacher's passes and
    more detector searches), as ``distant_views`` (None: without them), with its own same-person
    threshold for unfused student probes on ``chips`` (student embeddings of aligned validation chips
    and their people), and the student's ``gallery`` so chosen."""
    if views is None or space is None:
        return {**_choose_fusion(student, teacher, face_px, truths, teacher_hits, gallery, people, space, seed, alone),
                "rank1_by_view_weight": None, "rank1_by_fused_view_weight": None, "distant_views": None,
                "gallery": gallery}  # fmt: skip
    # cheapest first: no views (filed with the student's), the student's, fused ones
    ways = [(False, 0.0)] + [(fused, w) for fused in sorted(views) for w in VIEW_WEIGHTS if w > 0.0]
    tried: dict[tuple[bool, float], tuple[np.ndarray, dict[str, Any]]] = {}
    for fused, weight in ways:
        joined = gallery if weight == 0.0 else with_distant_views(gallery, views[fused], weight)
        tried[(fused, weight)] = (
            joined,
            _choose_fusion(student, teacher, face_px, truths, teacher_hits, joined, people, space, seed, alone),
        )
    best = {way: max(result["rank1_by_threshold"].values()) for way, (_, result) in tried.items()}
    fused, weight = next(way for way in tried if best[way] >= max(best.values()) - 100 * PLATEAU)
    joined, result = tried[(fused, weight)]
    distant = None
    if weight > 0.0:
        probes, of = chips if chips is not None else (student if alone is None else alone, truths)
        threshold, validation = best_accuracy_threshold(probes, joined, people, of, seed)
        what = f"{CHIP_PX}-px aligned chips of validation people" if chips is not None else "the detected faces"
        distant = DistantViews(
            fused=fused, weight=weight, threshold=threshold, validation={**validation, "probes": what}
        ).model_dump()  # sides: the kind's (VIEW_SIDES)
    by_weight = {kind: {f"{w:g}": r for (f, w), r in best.items() if f == kind} for kind in (False, True)}
    return {
        **result,
        "rank1_by_view_weight": by_weight[False],
        "rank1_by_fused_view_weight": by_weight[True] or None,
        "distant_views": distant,
        "gallery": joined,
    }


def best_accuracy_threshold(
    probes: np.ndarray, gallery: np.ndarray, people: np.ndarray, truths: np.ndarray, seed: int
) -> tuple[float, dict[str, Any]]:
    """The same-person threshold at the best accuracy on one genuine and one impostor score per probe
    (its own person's enrolled vector, another enrolled person's, seeded), and what it was chosen on
    (with :func:`open_set`: what it means when the whole gallery is searched)."""
    from sklearn.metrics import roc_curve  # the train extra's (a calibration, never a served request)

    rng = np.random.default_rng(seed)
    enrolled = np.flatnonzero(people >= 0)
    own = np.array([np.flatnonzero(people == t)[0] for t in truths], dtype=int)
    other = np.array([rng.choice(enrolled[people[enrolled] != t]) for t in truths], dtype=int)
    scores = np.r_[(probes * gallery[own]).sum(axis=1), (probes * gallery[other]).sum(axis=1)]
    same = np.r_[np.ones(len(own)), np.zeros(len(other))]
    false_rate, true_rate, thresholds = roc_curve(same, scores)
    best = int(np.argmax(true_rate - false_rate))
    threshold = float(thresholds[best])
    return round(threshold, 4), {
        "faces": len(probes),
        "accuracy": round(float((true_rate[best] + 1 - false_rate[best]) / 2), 4),
        "pairs": "each face with its own person's enrolled face and another validation person's",
        "open_set": open_set(probes, gallery, people, truths, threshold),
    }


def _choose_fusion(
    student: np.ndarray, teacher: np.ndarray, face_px: np.ndarray, truths: np.ndarray, teacher_hits: np.ndarray,
    gallery: np.ndarray, people: np.ndarray, space: GalleryFromTeacher | None, seed: int,
    alone: np.ndarray | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The switch to the teacher and, where the student's space is the teacher's centred one, the
    student's weight in the fusion of both below it (:class:`lrface.model_card.DetectedFusion`): the pair
    maximising rank-1 over all faces (a weight of 1 is the student alone, no fusion: ``alone``, its
    embeddings as it serves alone, where they are not ``student``, the student's half of the fusion), the
    switch on the plateau of the chosen weight's curve (:func:`choose_threshold`: its cheaper side, the
    largest for the student alone, the smallest for the fusion, which runs both models); and the fusion's
    same-person threshold (:func:`best_accuracy_threshold` on the fused faces below the switch)."""
    candidates = [float(t) for t in np.round(np.arange(12.0, 34.01, 0.5), 1)]
    weights = FUSION_WEIGHTS if space is not None else (1.0,)
    curves: dict[float, list[float]] = {}
    hits: dict[float, np.ndarray] = {}
    for weight in weights:
        if space is None or weight == 1.0:
            probes = student if alone is None else alone
        else:
            probes = fused_vectors(student, teacher, weight, space)
        hits[weight] = rank1_hits(probes, gallery, people, truths)
        curves[weight] = [float(served_hits(face_px, t, teacher_hits, hits[weight]).mean()) for t in candidates]
    weight = max(weights, key=lambda w: (max(curves[w]), w))  # a tie: the student's larger share
    switch = choose_threshold(candidates, curves[weight], largest=weight == 1.0)
    chosen: dict[str, Any] = {
        "rank1_by_threshold": {f"{t:g}": round(100 * r, 2) for t, r in zip(candidates, curves[weight], strict=True)},
        "teacher_from_face_px": switch,
        "rank1_by_weight": {f"{w:g}": round(100 * max(curves[w]), 2) for w in weights},
        "rank1_by_threshold_student_alone": {
            f"{t:g}": round(100 * float(served_hits(face_px, t, teacher_hits, hits[1.0]).mean()), 2) for t in candidates
        },
    }
    below = face_px < switch
    if space is None or weight == 1.0 or not below.any():  # nothing to fuse
        return {**chosen, "fusion": None, "hits": None}
    probes = fused_vectors(student[below], teacher[below], weight, space)
    threshold, validation = best_accuracy_threshold(probes, gallery, people, truths[below], seed)
    fusion = {"student_weight": weight, "threshold": threshold, "validation": validation}
    return {**chosen, "fusion": fusion, "hits": hits[weight]}


def open_set(
    probes: np.ndarray, gallery: np.ndarray, people: np.ndarray, truths: np.ndarray, threshold: float
) -> dict[str, Any]:
    """What a same-person threshold means when the gallery is searched (1:N) rather than compared with
    one face: the false-positive identification rate (FPIR: each probe searched with its own person's
    entries left out, as an unknown face, and its best score reaching the threshold) and the detection
    and identification rate (DIR: its own person first and reaching it), at ``threshold`` and at the
    thresholds that give an FPIR of 10% and 1% in a gallery of this size; and, per comparison, the
    thresholds that shares of 10% down to 1e-10 of the impostor scores (each probe against each entry of
    another person) reach, where at least :data:`PER_COMPARISON_MIN` do: the service scales an FPIR to
    the size of the gallery searched from them (:func:`lrface.model_card.open_set_threshold`)."""
    scores = probes @ gallery.T
    unknown = np.where(people[None, :] == truths[:, None], -np.inf, scores).max(axis=1)
    first = (people[np.argmax(scores, axis=1)] == truths) & np.isfinite(unknown)
    top = scores.max(axis=1)

    def at(t: float) -> dict[str, float]:
        return {
            "threshold": round(t, 4),
            "fpir": round(100 * float((unknown >= t).mean()), 1),
            "dir": round(100 * float((first & (top >= t)).mean()), 1),
        }

    impostors = scores[people[None, :] != truths[:, None]]
    # per comparison: the threshold a share ``rate`` of impostor scores reaches, where at least
    # PER_COMPARISON_MIN of them do (lrface.model_card.open_set_threshold scales an FPIR to a gallery's size)
    rates = [10 ** (-k / 4) for k in range(4, 41) if 10 ** (-k / 4) * impostors.size >= PER_COMPARISON_MIN]
    return {
        "gallery": len(gallery),
        "at_threshold": at(threshold),
        "fpir_10": at(float(np.quantile(unknown, 0.9))),
        "fpir_1": at(float(np.quantile(unknown, 0.99))),
        "per_comparison": {
            "comparisons": int(impostors.size),
            "thresholds": [[float(f"{r:.3g}"), round(float(np.quantile(impostors, 1 - r)), 4)] for r in rates],
        },
    }
