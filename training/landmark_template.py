"""Measure :data:`lrface.landmarks.TEMPLATE`: where MTCNN's 5 landmarks fall in dlib's 150-px aligned
chips (``python -m training.landmark_template``; prints JSON).

For each photo (every 7th LFW training photo, 400 by default): MTCNN's subject face and landmarks,
dlib's 5-point shape in the same box and its chip. The chip's sampling grid is read back from dlib
itself (``extract_image_chip`` of the pixel-coordinate images: bilinear sampling of a linear
function is exact), an affine map chip -> image is fitted to it, and the landmarks are carried
through its inverse into chip coordinates. The template is the median of each coordinate.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lrface.alignment import CHIP_PADDING, CHIP_SIZE, DlibAligner
from lrface.data.lfw import identity_split
from lrface.detection import MtcnnDetector, subject_box
from lrface.preprocessing import load_image_file
from lrface.settings import Settings


def landmarks_in_chip(
    aligner: DlibAligner, image: np.ndarray, box: tuple[float, ...], landmarks: np.ndarray
) -> np.ndarray:
    """``landmarks`` (image pixels) in the coordinates of dlib's chip of the face in ``box``."""
    dlib = aligner._dlib
    left, top, right, bottom = (int(round(v)) for v in box)
    pixels = np.ascontiguousarray(image)
    shape = aligner._predictor(pixels, dlib.rectangle(left, top, right, bottom))
    details = dlib.get_face_chip_details(shape, size=CHIP_SIZE, padding=CHIP_PADDING)
    height, width = image.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    sampled_x = np.asarray(dlib.extract_image_chip(np.ascontiguousarray(xs), details)).ravel()
    sampled_y = np.asarray(dlib.extract_image_chip(np.ascontiguousarray(ys), details)).ravel()
    v, u = np.mgrid[0:CHIP_SIZE, 0:CHIP_SIZE]
    design = np.column_stack([u.ravel(), v.ravel(), np.ones(u.size)])
    inside = (sampled_x > 0.5) & (sampled_x < width - 1.5) & (sampled_y > 0.5) & (sampled_y < height - 1.5)
    to_x = np.linalg.lstsq(design[inside], sampled_x[inside], rcond=None)[0]
    to_y = np.linalg.lstsq(design[inside], sampled_y[inside], rcond=None)[0]
    chip_to_image = np.vstack([to_x, to_y, [0.0, 0.0, 1.0]])
    points = np.column_stack([landmarks, np.ones(len(landmarks))]) @ np.linalg.inv(chip_to_image).T
    return points[:, :2]


def measure(lfw_root: Path, photos: int = 400, step: int = 7, progress: bool = True) -> dict[str, object]:
    split = identity_split(lfw_root)
    paths = [p for name in sorted(split.train) for p in split.train[name]][::step][:photos]
    aligner, detector = DlibAligner(), MtcnnDetector(min_face_px=20)
    found = []
    for path in tqdm(paths, desc="photos", disable=not progress):
        image = load_image_file(path)
        faces = detector.detect(image)
        box = subject_box(faces, image.shape[1], image.shape[0])
        if box is None:
            continue
        face = next(f for f in faces if f.box == box)
        found.append(landmarks_in_chip(aligner, image, box, np.asarray(face.landmarks)))
    points = np.stack(found)
    quartiles = np.percentile(points, [25, 75], axis=0)
    return {
        "photos": len(found),
        "template": np.round(np.median(points, axis=0), 2).tolist(),
        "iqr": np.round(quartiles[1] - quartiles[0], 2).tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=400, help="LFW training photos to measure on")
    args = parser.parse_args()
    print(json.dumps(measure(Settings().lfw_root(), args.photos), indent=1))


if __name__ == "__main__":
    main()
