"""The frame benchmark's synthetic frames: pasted faces land where their ground-truth boxes say (the
service's detector finds them there), sizes are those asked for, and empty frames hold no face."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lrface.detection import MtcnnDetector
from lrface.preprocessing import load_image_file
from service.frame_synthesis import PastedFace, SourceFace, false_detections, iou, match_detections, synthetic_frames

PEOPLE = ("Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder")


def _sources(lfw_root: Path, detector: MtcnnDetector) -> list[SourceFace]:
    out = []
    for person, name in enumerate(PEOPLE):
        image = load_image_file(lfw_root / "images" / name / f"{name}_0001.jpg")
        out.append(SourceFace(image, detector.detect(image)[0].box, person))
    return out


def test_pasted_faces_are_found_at_their_ground_truth_boxes(lfw_root: Path) -> None:
    detector = MtcnnDetector(min_face_px=12)
    frames = synthetic_frames(
        _sources(lfw_root, detector), 2, sizes=(28, 40), width=480, height=320, faces_per_frame=(2, 2),
        empty_fraction=0.0,
    )  # fmt: skip
    truth = [f for frame in frames for f in frame.faces]
    assert len(truth) == 4 and sorted({round(f.face_px) for f in truth}) == [28, 40]
    for frame in frames:
        for face in frame.faces:
            side = max(face.box[2] - face.box[0], face.box[3] - face.box[1])
            assert abs(side - face.face_px) < 1.0
        found = [d.box for d in detector.detect(frame.pixels)]
        assert len(match_detections([f.box for f in frame.faces], found)) == len(frame.faces)


def test_empty_frames_and_matching() -> None:
    frames = synthetic_frames([], 3, empty_fraction=1.0, width=320, height=240)
    assert all(not f.faces and f.pixels.shape == (240, 320, 3) for f in frames)
    assert frames[0].pixels.std() > 10  # textured, not a blank a detector could never misread
    a, b = (0.0, 0.0, 10.0, 10.0), (5.0, 0.0, 15.0, 10.0)
    assert iou(a, a) == 1.0 and abs(iou(a, b) - 1 / 3) < 1e-9
    assert match_detections([a, b], [b]) == {1: 0}
    assert match_detections([a], [(50.0, 50.0, 60.0, 60.0)]) == {}
    pasted = [PastedFace(a, 0, 0, 10.0, (0.0, 0.0, 30.0, 30.0))]
    # Unmatched: one inside the pasted photo (maybe a real bystander's face), one on the scene (false).
    assert false_detections(pasted, [a, (20.0, 20.0, 28.0, 28.0), (50.0, 50.0, 60.0, 60.0)], {0: 0}) == (1, 1)
    assert np.array_equal(synthetic_frames([], 1, seed=5)[0].pixels, synthetic_frames([], 1, seed=5)[0].pixels)


def test_the_smallest_face_setting_is_the_largest_that_finds_the_faces_from_16_px() -> None:
    from service.frames_bench import choose_min_face

    found = {  # lrface bench frames --calibrate, 150 frames of validation people
        12.0: {"12": 55, "16": 61, "20": 64},
        14.0: {"12": 51, "16": 62, "20": 64},
        16.0: {"12": 51, "16": 64, "20": 64},  # 12-px faces are not counted
        18.0: {"12": 45, "16": 59, "20": 64},  # five 16-px faces fewer than 16 finds
        20.0: {"12": 38, "16": 60, "20": 64},
    }
    assert choose_min_face(found) == 16.0
    assert choose_min_face(found, faces=4) == 20.0
    assert choose_min_face(found, from_size=12, faces=3) == 12.0
    assert choose_min_face(found, from_size=12) == 12.0  # none finds enough everywhere: the smallest
