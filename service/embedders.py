"""The embedders the service runs and which face goes to which: the student for small faces, the
teacher (an HR embedder, :class:`lrface.teacher.DlibEmbedder`, dlib's network in ONNX Runtime) for
faces of at least the card's switch, measured in the image as received: ``routing.detected_min_face_px``
for a face the detector found, ``routing.chip_min_face_px`` for a chip or a client's box (either absent:
``routing.min_face_px``); see ``service.detected_routing``. Below the switch a face is embedded by both,
fused, where the card says so: every detected face (``routing.detected_fusion``), chips and boxes from
``routing.chip_fusion.from_face_px``. Without a routing in the card, without the teacher's network, or
without dlib installed (its aligner makes the teacher's chips of detected faces), the student serves
every face."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from lrface.alignment import aligner_available
from lrface.degradation import distant_view
from lrface.embedder import FaceInput, OnnxEmbedder
from lrface.model_card import (
    DetectedFusion,
    Fusion,
    GalleryFromTeacher,
    Routing,
    open_set_threshold,
    views_tag,
    with_distant_views,
)
from lrface.preprocessing import hr_chip
from lrface.settings import OperatingPoint, Settings, get_settings
from lrface.teacher import DlibEmbedder, TeacherUnavailable
from service.faces import DecodedFace, DetectionConfig, FaceDecoder, ImageItem

if TYPE_CHECKING:
    from service.gallery.gallery import Gallery

log = logging.getLogger("lrface.embedders")
Space = Literal["student", "teacher"]
# Which model embedded a face, as responses say: a space's model, or both fused (in the student's space).
EmbedderLabel = Literal["student", "teacher", "student+teacher"]
VIEW_MAX_PIXELS = 100_000  # a distant view is at most a few thousand pixels


@dataclass
class Embedders:
    student: OnnxEmbedder
    teacher: DlibEmbedder | None = None
    routing: Routing | None = None
    # finds the face in distant views: the bundled detector at its default settings, as the views were
    # calibrated, whatever LRFACE_DETECTOR and LRFACE_DETECT_* set for uploads (made on first use)
    _views_decoder: FaceDecoder | None = field(default=None, init=False, repr=False)

    @classmethod
    def for_model(
        cls, student: OnnxEmbedder, use_teacher: bool = True, teacher_dir: Path | None = None,
        providers: str | None = None, threads: int | None = None,
    ) -> Embedders:  # fmt: skip
        """The student, plus the teacher where the card routes faces to it, its ONNX network is there
        and dlib is installed (its aligner makes the teacher's chips of detected faces). The network is
        read from ``teacher_dir`` and run on ``providers`` with ``threads`` (each defaults to its setting:
        LRFACE_TEACHER_MODEL, LRFACE_PROVIDERS, LRFACE_THREADS)."""
        routing = student.card.routing
        if routing is None or not use_teacher:
            return cls(student)
        settings = get_settings()
        try:
            if not aligner_available():
                raise TeacherUnavailable("dlib (the align extra, which makes the teacher's chips) is not installed")
            teacher = DlibEmbedder(
                teacher_dir or settings.teacher_model,
                settings.providers if providers is None else providers,
                settings.threads if threads is None else threads,
            )
        except TeacherUnavailable as exc:
            log.warning("the model card routes faces from %g px to the teacher, but %s; the student serves all",
                        routing.chip_switch, exc)  # fmt: skip
            return cls(student)
        if teacher.version != routing.teacher_version:
            log.warning("the card's teacher is %s, the teacher's network is %s: the student serves all faces",
                        routing.teacher_version, teacher.version)  # fmt: skip
            return cls(student)
        return cls(student, teacher, routing)

    def space_for(self, face: DecodedFace, fuse: bool = True) -> Space:
        return "teacher" if face.face_px >= self.teacher_from(face, fuse) else "student"

    def teacher_from(self, face: DecodedFace, fuse: bool = True) -> float:
        """The smallest ``face_px`` the teacher serves for a face like this one: the card's switch for
        detected faces (chosen on frames of validation people), else its switch for chips and boxes
        (:attr:`lrface.model_card.Routing.chip_switch`); both were chosen with both models fused below
        them, so a face that is not to be fused (``fuse`` False: two faces compared with each other) has
        the card's ``min_face_px``, chosen against the student alone; infinite when no teacher serves."""
        if self.teacher is None or self.routing is None:
            return math.inf
        if not fuse:
            return float(self.routing.min_face_px)
        return self.routing.detected_switch if face.input == "detected" else self.routing.chip_switch

    def threshold(self, space: Space, against_gallery: bool = True, faces: Sequence[DecodedFace] = ()) -> float:
        """The calibrated same-person threshold for a probe in ``space`` (:meth:`threshold_at` at
        'best_accuracy')."""
        return self.threshold_at(space, against_gallery, faces)[0]

    def threshold_at(
        self, space: Space, against_gallery: bool = True, faces: Sequence[DecodedFace] = (),
        point: OperatingPoint = "best_accuracy", gallery_size: int | None = None,
    ) -> tuple[float, OperatingPoint]:  # fmt: skip
        """The calibrated same-person threshold for a probe in ``space``, against the gallery (or, with
        ``against_gallery`` False, against another probe: ``/verify`` of two faces); for a probe of
        ``faces`` that were all fused (:meth:`fuses`), the fusion's own threshold against the gallery; for
        another student probe against a gallery with distant views, the views' own. Against the gallery
        at the operating ``point`` (:func:`lrface.model_card.open_set_threshold`: where the card
        measured that FPIR for the kind of face, scaled to a gallery of ``gallery_size`` entries where
        given; its best-accuracy threshold where it did not), with the point it is at ('best_accuracy'
        where the card has no figure for the kind, or for a pair)."""
        at = point if against_gallery else "best_accuracy"
        found: tuple[float, str]
        fusions = [self.fusion_for(f) for f in faces]
        if space == "teacher" and self.routing is not None:
            teacher = {"open_set": self.routing.teacher_open_set}
            found = open_set_threshold(self.routing.threshold, teacher, at, gallery_size)
        elif against_gallery and faces and all(f is not None for f in fusions):
            # a track of faces fused by different fusions: the stricter
            found = max(open_set_threshold(f.threshold, f.validation, at, gallery_size) for f in fusions if f)
        elif against_gallery and self.from_teacher is not None:
            views = self.from_teacher.distant_views
            rule = self.from_teacher if views is None else views
            found = open_set_threshold(rule.threshold, rule.validation, at, gallery_size)
        else:
            found = (self.student.card.threshold, "best_accuracy")
        return found[0], "best_accuracy" if found[1] == "best_accuracy" else point

    def fusion_for(self, face: DecodedFace) -> Fusion | None:
        """The card's fusion of both models that embeds ``face`` in the student's space, when the teacher
        serves, the student's space is the teacher's centred one (:attr:`from_teacher`) and the face is
        below the teacher's switch for its kind: a detected face where the card fuses them
        (``routing.detected_fusion``), a chip or box of at least ``routing.chip_fusion.from_face_px``."""
        if self.routing is None or self.from_teacher is None or face.face_px >= self.teacher_from(face):
            return None
        if face.input == "detected":
            return self.routing.detected_fusion
        chip = self.routing.chip_fusion
        return chip if chip is not None and face.face_px >= chip.from_face_px else None

    def fuses(self, face: DecodedFace) -> bool:
        """Whether the student's embedding of ``face`` is the fusion of both models (:meth:`fusion_for`)."""
        return self.fusion_for(face) is not None

    def label(self, space: Space, faces: Sequence[DecodedFace]) -> EmbedderLabel:
        """What a probe of ``faces`` embedded in ``space`` says embedded it."""
        if space == "student" and faces and all(self.fuses(f) for f in faces):
            return "student+teacher"
        return space

    @property
    def from_teacher(self) -> GalleryFromTeacher | None:
        """The card's rule for student gallery vectors made from the teacher's HR embeddings, when the
        teacher serves here (without it the student's own embeddings fill its index)."""
        return self.student.card.gallery_from_teacher if self.teacher is not None else None

    @property
    def gallery_model_id(self) -> str:
        """What the student's gallery index records with each vector: the student's model id, joined by
        the teacher's where its vectors are centred teacher embeddings, and by the card's distant views
        where they join them (fused views also by what made them, :func:`lrface.model_card.fused_view_key`;
        a gallery filled one way is refused by a service that would fill it another: ``lrface gallery
        reembed``)."""
        rule = self.from_teacher
        if rule is None or self.teacher is None:
            return self.student.model_id
        tag = views_tag(rule.distant_views, self.routing)
        return f"{self.student.model_id}+{self.teacher.model_id}{tag}"

    def open_gallery(self, settings: Settings, load: bool = True) -> Gallery:
        """The gallery as these embedders read and fill it (:func:`service.gallery.gallery.open_gallery`
        with the student's dimension, :attr:`gallery_model_id` and the teacher's space): refused when it
        was filled another way."""
        from service.gallery.gallery import open_gallery

        dim = self.student.card.embedding_size
        return open_gallery(settings, dim, self.gallery_model_id, load, self.teacher_space)

    def gallery_vectors(
        self, faces: list[DecodedFace], teacher: np.ndarray | None = None, views: bool = True
    ) -> np.ndarray:
        """The student-index vectors of faces being enrolled: the student's embeddings, or, where the
        card says so (:attr:`from_teacher`), the teacher's (``teacher``, when already computed) centred
        for every face the teacher would serve, joined by its distant views (the student's, or fused) where the
        card says so (:meth:`with_distant_views`; ``views`` False: without them); a face smaller
        than that (a small chip, a distant face in a frame) keeps the student's own embedding (fused with
        the teacher's where :meth:`fuses`, as the same face is as a probe), in the same centred space,
        since the teacher's view of it is poor."""
        rule = self.from_teacher
        if rule is None:
            return self.embed(faces, "student")
        hr = self.embed(faces, "teacher") if teacher is None else teacher
        vectors = rule.vectors(hr)
        small = [i for i, face in enumerate(faces) if face.face_px < self.teacher_from(face)]
        if small:
            vectors[small] = self.embed([faces[i] for i in small], "student", teacher=hr[small])
        large = [i for i in range(len(faces)) if i not in small]
        if large and views:
            vectors[large] = self.with_distant_views(vectors[large], [faces[i].teacher_face() for i in large])
        return vectors

    def with_distant_views(self, vectors: np.ndarray, faces: Sequence[FaceInput]) -> np.ndarray:
        """Student-index vectors ``(N, D)`` of HR faces (the teacher's views of them: their HR chips) with
        the card's distant views of each added (:func:`lrface.model_card.with_distant_views`); as they
        are where the card has none."""
        rule = self.from_teacher
        if rule is None or rule.distant_views is None:
            return vectors
        views = rule.distant_views
        seen = self.distant_views(faces, views.sides, views.quality, fused=views.fused)
        return with_distant_views(vectors, seen, views.weight)

    def distant_views(
        self, faces: Sequence[FaceInput], sides: Sequence[float], quality: int, *, fused: bool
    ) -> np.ndarray:
        """Each HR face's unit mean student-space embedding of its distant views
        (:meth:`distant_view_faces` at each of ``sides`` px, JPEG ``quality``), embedded by the student
        alone or, ``fused``, as a detected probe of its size is (:meth:`views_mean`); a zero row where no
        face was found."""
        out = np.zeros((len(faces), self.student.card.embedding_size), np.float32)
        for i, face in enumerate(faces):
            out[i] = self.views_mean(list(self.distant_view_faces(face, sides, quality).values()), fused=fused)
        return out

    def distant_view_faces(self, face: FaceInput, sides: Sequence[float], quality: int) -> dict[float, DecodedFace]:
        """The face found in each of an HR face's distant views, by side (:func:`lrface.degradation.distant_view`
        of its HR chip, JPEG ``quality``, searched as any frame is, by the bundled detector at its default
        settings, the largest face; a side where none was found is left out)."""
        chip = hr_chip(face.image, face.box)
        found: dict[float, DecodedFace] = {}
        for side in sides:
            view = ImageItem(distant_view(chip, side, quality), f"distant view {side:g} px")
            faces = self.views_decoder.decode(view, "true")
            if faces:
                found[side] = faces[0]
        return found

    def views_mean(self, found: Sequence[DecodedFace], *, fused: bool) -> np.ndarray:
        """The unit mean student-space embedding of faces found in distant views (:meth:`embed`: fused
        where the card fuses such a face and ``fused``, else the student's alone); zeros for none."""
        out = np.zeros(self.student.card.embedding_size, np.float32)
        if found:
            mean = self.embed(list(found), "student", fuse=fused).mean(axis=0)
            out[:] = mean / max(float(np.linalg.norm(mean)), 1e-12)
        return out

    @property
    def views_decoder(self) -> FaceDecoder:
        """The detector that finds the face in distant views (see the field's comment)."""
        if self._views_decoder is None:
            self._views_decoder = FaceDecoder(VIEW_MAX_PIXELS, DetectionConfig())
        return self._views_decoder

    def embed(
        self, faces: list[DecodedFace], space: Space, fuse: bool = True, teacher: np.ndarray | None = None
    ) -> np.ndarray:
        """Unit embeddings of ``faces`` in ``space``: the student's input (the framed square, or a
        detected face's landmark chip; fused with the teacher's view where :meth:`fuses`, unless ``fuse``
        is False; a detected face's halves made as :class:`lrface.model_card.DetectedFusion` says), or the
        teacher's view (dlib's aligned chip for a detected face, see :meth:`DecodedFace.teacher_face`).
        ``teacher``: the faces' plain teacher embeddings, where already made."""
        if space == "teacher":
            assert self.teacher is not None
            return self.teacher.embed([f.teacher_face() for f in faces])
        vectors = self.student.embed([f.face for f in faces])
        fused = [(i, fusion) for i, face in enumerate(faces) if fuse and (fusion := self.fusion_for(face)) is not None]
        if not fused:
            return vectors
        assert self.from_teacher is not None and self.teacher is not None
        at = [i for i, _ in fused]
        views = self.embed([faces[i] for i in at], "teacher") if teacher is None else teacher[at]
        twice = [(row, i, f) for row, (i, f) in enumerate(fused) if isinstance(f, DetectedFusion)]
        both = [(row, i, f) for row, i, f in twice if f.student_on_both_chips]
        if both:  # the student's embedding of the teacher's chip joins that of its own input
            second = self.student.embed([faces[i].teacher_face() for _, i, _ in both])
            for k, (_, i, f) in enumerate(both):
                vectors[i] = f.student_view(vectors[i : i + 1], second[k : k + 1])[0]
        mirrored = [(row, i, f) for row, i, f in twice if f.teacher_mirrored]
        if mirrored:  # the teacher's embedding of the mirror image joins its own
            mirrors = self.teacher.embed([faces[i].teacher_face().mirrored() for _, i, _ in mirrored])
            for k, (row, _, f) in enumerate(mirrored):
                views[row] = f.teacher_view(views[row : row + 1], mirrors[k : k + 1])[0]
        for row, (i, fusion) in enumerate(fused):
            vectors[i] = fusion.vectors(vectors[i : i + 1], views[row : row + 1], self.from_teacher)[0]
        return vectors

    @property
    def teacher_space(self) -> tuple[int, str] | None:
        """``(dim, model id)`` of the teacher's gallery space, when the teacher serves."""
        return (self.teacher.embedding_size, self.teacher.model_id) if self.teacher is not None else None

    def describe(self) -> str:
        if self.routing is None or self.teacher is None:
            return f"student {self.student.model_version} for every face"
        routing = self.routing
        detected, chip = routing.detected_min_face_px, routing.chip_fusion if self.from_teacher else None
        fused = routing.detected_fusion if self.from_teacher else None
        return (
            f"student {self.student.model_version} below {routing.chip_switch:g} px"
            + (
                ""
                if chip is None
                else f" (both fused from {chip.from_face_px:g} px, student weight {chip.student_weight:g})"
            )
            + ("" if detected is None else f"; {detected:g} px for detected faces")
            + ("" if fused is None else f" (both fused below that, {_how_fused(fused)})")
            + f"; teacher {self.teacher.model_id} from there"
            + ("; the student's gallery from the teacher's centred HR embeddings" if self.from_teacher else "")
            + self._describe_views()
        )

    def _describe_views(self) -> str:
        views = self.from_teacher.distant_views if self.from_teacher is not None else None
        if views is None:
            return ""
        whose = "fused distant views (as detected probes)" if views.fused else "the student's distant views"
        sides = "/".join(f"{side:g}" for side in views.sides)
        return f" with {whose} of them at {sides} px ({views.weight:g})"


def _how_fused(fusion: DetectedFusion) -> str:
    """The fusion's weight and how it sees a face, for :meth:`Embedders.describe`."""
    seen = [f"student weight {fusion.student_weight:g}"]
    if fusion.student_on_both_chips:
        seen.append("the student on both chips")
    if fusion.teacher_mirrored:
        seen.append("the teacher with the mirror image")
    return "; ".join(seen)
