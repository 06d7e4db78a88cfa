"""The embedders the service runs and which face goes to which: the student for small faces, the
teacher (an HR embedder, :class:`lrface.teacher.DlibEmbedder`) for faces of at least the card's
``routing.min_face_px``, measured in the image as received. Without a routing in the card, or
without dlib installed, the student serves every face."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np

from lrface.alignment import AlignerUnavailable
from lrface.embedder import OnnxEmbedder
from lrface.model_card import Routing
from lrface.teacher import DlibEmbedder
from service.faces import DecodedFace

log = logging.getLogger("lrface.embedders")
Space = Literal["student", "teacher"]
# On small faces MTCNN's box is tighter than on the same face at full size, while the card's routing
# size was chosen on aligned faces of known size: a detected face's size is corrected by this before
# it is compared with it. Frames of validation people pasted at known sizes (`lrface bench frames
# --calibrate`, box_side_ratio_median at the chosen threshold): 0.922 / 0.941 / 0.960 / 0.964 at
# 16 / 20 / 24 / 32 px, 0.99 from 48 px; 0.956 is the median at 20 and 24 px of a first measurement.
DETECTED_SIZE_RATIO = 0.956


def routing_size(face: DecodedFace) -> float:
    """The face's size as the routing compares it: ``face_px``, corrected for a detector's box."""
    return face.face_px / DETECTED_SIZE_RATIO if face.input == "detected" else face.face_px


@dataclass
class Embedders:
    student: OnnxEmbedder
    teacher: DlibEmbedder | None = None
    routing: Routing | None = None

    @classmethod
    def for_model(cls, student: OnnxEmbedder, use_teacher: bool = True) -> Embedders:
        """The student, plus the teacher where the card routes faces to it and dlib is installed."""
        routing = student.card.routing
        if routing is None or not use_teacher:
            return cls(student)
        try:
            teacher = DlibEmbedder()
        except AlignerUnavailable as exc:
            log.warning("the model card routes faces from %d px to the teacher, but %s; the student serves all",
                        routing.min_face_px, exc)  # fmt: skip
            return cls(student)
        if teacher.version != routing.teacher_version:
            log.warning("the card's teacher is %s, this dlib has %s: the student serves all faces",
                        routing.teacher_version, teacher.version)  # fmt: skip
            return cls(student)
        return cls(student, teacher, routing)

    def space_for(self, face: DecodedFace) -> Space:
        if self.teacher is not None and self.routing is not None and routing_size(face) >= self.routing.min_face_px:
            return "teacher"
        return "student"

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
        return (
            f"student {self.student.model_version} below {self.routing.min_face_px} px, "
            f"teacher {self.teacher.model_id} from there"
        )
