"""Batch enrollment of ``DIR/<subject_id>/*`` into the local gallery or through the HTTP API.

Idempotent and resumable: a file whose content hash is already enrolled for its subject is skipped
before any work is spent on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from tqdm import tqdm

from lrface.data.lfw import IMAGE_SUFFIXES
from lrface.preprocessing import ImageDecodeError, load_image
from service.api.schemas import SUBJECT_ID_RE
from service.embedder import Embedder, FaceInput
from service.gallery.chips import face_chip_png
from service.gallery.gallery import Gallery
from service.gallery.store import NewFace


@dataclass
class EnrollSummary:
    enrolled: int = 0
    skipped: int = 0
    rejected: list[tuple[Path, str]] = field(default_factory=list)


def subject_files(root: Path) -> Iterator[tuple[str, list[Path]]]:
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        yield folder.name, files


def count_files(root: Path) -> int:
    return sum(len(files) for _, files in subject_files(root))


def enroll_local(
    root: Path, embedder: Embedder, gallery: Gallery, max_pixels: int, progress: bool = True
) -> EnrollSummary:
    summary = EnrollSummary()
    with tqdm(total=count_files(root), unit="face", disable=not progress) as bar:
        for subject_id, files in subject_files(root):
            if not SUBJECT_ID_RE.match(subject_id):
                summary.rejected += [(f, f"folder name {subject_id!r} is not a valid subject id") for f in files]
                bar.update(len(files))
                continue
            record = gallery.get_subject(subject_id)
            known = {f.content_hash for f in record.faces} if record else set()
            for path in files:
                bar.update(1)
                data = path.read_bytes()
                digest = hashlib.sha256(data).hexdigest()
                if digest in known:
                    summary.skipped += 1
                    continue
                try:
                    face = FaceInput(load_image(data, max_pixels))
                except ImageDecodeError as exc:
                    summary.rejected.append((path, str(exc)))
                    continue
                vector = embedder.embed([face])[0]
                gallery.enroll(subject_id, [NewFace(digest, vector, face_chip_png(face))])
                known.add(digest)
                summary.enrolled += 1
    return summary


def enroll_remote(root: Path, server: str, api_key: str | None, progress: bool = True) -> EnrollSummary:
    summary = EnrollSummary()
    headers = {"X-API-Key": api_key} if api_key else {}
    with (
        httpx.Client(base_url=server, headers=headers, timeout=60) as client,
        tqdm(total=count_files(root), unit="face", disable=not progress) as bar,
    ):
        for subject_id, files in subject_files(root):
            response = _authorised(client.get(f"/gallery/subjects/{subject_id}"), server)
            if response.status_code == 422:
                summary.rejected += [(f, response.json()["detail"]) for f in files]
                bar.update(len(files))
                continue
            if response.status_code not in (200, 404):
                raise RuntimeError(f"{server}: GET subject {subject_id}: {response.status_code} {response.text[:200]}")
            known = {f["content_hash"] for f in response.json()["faces"]} if response.status_code == 200 else set()
            for path in files:
                bar.update(1)
                data = path.read_bytes()
                if hashlib.sha256(data).hexdigest() in known:
                    summary.skipped += 1
                    continue
                reply = _authorised(
                    client.post(f"/gallery/subjects/{subject_id}/faces", files={"images": (path.name, data)}), server
                )
                if reply.status_code >= 400:
                    summary.rejected.append((path, str(reply.json().get("detail", reply.text[:200]))))
                    continue
                summary.enrolled += 1
    return summary


def _authorised(response: httpx.Response, server: str) -> httpx.Response:
    if response.status_code in (401, 403):
        raise RuntimeError(f"{server} refused the API key: {response.json().get('detail')}")
    return response
