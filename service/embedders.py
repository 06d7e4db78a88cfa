"""The embedders the service runs and which face goes to which: the student for small faces, the
teacher (an HR embedder, :class:`lrface.teacher.DlibEmbedder`, dlib's network in ONNX Runtime) for
faces of at least the card's ``routing.min_face_px``, measured in the image as received (for a face
the detector found: the card's ``routing.detected_min_face_px``, see ``service.detected_routing``). Without a
routing in the card, without the teacher's network, or without dlib installed (its aligner makes the
teacher's chips of detected faces), the student serves every face."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from lrface.alignment import aligner_available
from lrface.embedder import OnnxEmbedder
from lrface.model_card import Routing
from lrface.settings import get_settings
from lrface.teacher import DlibEmbedder, TeacherUnavailable
from service.faces import DecodedFace

log = logging.getLogger("lrface.embedders")
Space = Literal["student", "teacher"]


@dataclass
class Embedders:
    student: OnnxEmbedder
    teacher: DlibEmbedder | None = None
    routing: Routing | None = None

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
            log.warning("the model card routes faces from %d px to the teacher, but %s; the student serves all",
                        routing.min_face_px, exc)  # fmt: skip
            return cls(student)
        if teacher.version != routing.teacher_version:
            log.warning("the card's teacher is %s, the teacher's network is %s: the student serves all faces",
                        routing.teacher_version, teacher.version)  # fmt: skip
            return cls(student)
        return cls(student, teacher, routing)

    def space_for(self, face: DecodedFace) -> Space:
        return "teacher" if face.face_px >= self.teacher_from(face) else "student"

    def teacher_from(self, face: DecodedFace) -> float:
        """The smallest ``face_px`` the teacher serves for a face like this one: the card's switch for
        detected faces (chosen on frames of validation people), else its ``min_face_px``; infinite
        when no teacher serves."""
        if self.teacher is None or self.routing is None:
            return math.inf
        detected = self.routing.detected_min_face_px
        return detected if face.input == "detected" and detected is not None else float(self.routing.min_face_px)

    def threshold(self, space: Space) -> float:
        if space == "teacher" and self.routing is not None:
            return self.routing.threshold
        return self.student.card.threshold

    def embed(self, faces: list[DecodedFace], space: Space) -> np.ndarray:
        """Unit embeddings of ``faces`` in ``space``: the student's framed square, or the teacher's
        view (dlib's aligned chip for a detected face, see :meth:`DecodedFace.teacher_face`)."""
        if space == "teacher":
            assert self.teacher is not None
            return self.teacher.embed([f.teacher_face() for f in faces])
        return self.student.embed([f.face for f in faces])

    @property
    def teacher_space(self) -> tuple[int, str] | None:
        """``(dim, model id)`` of the teacher's gallery space, when the teacher serves."""
        return (self.teacher.embedding_size, self.teacher.model_id) if self.teacher is not None else None

    def describe(self) -> str:
        if self.routing is None or self.teacher is None:
            return f"student {self.student.model_version} for every face"
        detected = self.routing.detected_min_face_px
        return (
            f"student {self.student.model_version} below {self.routing.min_face_px} px"
            + ("" if detected is None else f" ({detected:g} px for detected faces)")
            + f", teacher {self.teacher.model_id} from there"
        )
