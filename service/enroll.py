"""Batch enrollment of ``DIR/<subject_id>/*`` (``lrface enroll``) into a gallery (the default one, or
the one ``--gallery`` names, created when missing) of the local store or through the HTTP API. Both
modes walk the folder the same way (:func:`enroll_directory`) and enroll through
:func:`service.enrollment.enroll_images`, locally or behind the service's enroll route.

Idempotent and resumable: a file whose content hash is already enrolled for its subject is skipped
before any work is spent on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx
from tqdm import tqdm

from lrface.data.lfw import IMAGE_SUFFIXES
from service.api.schemas import SUBJECT_ID_RE
from service.embedders import Embedders
from service.enrollment import enroll_images
from service.faces import DetectMode, FaceDecoder, FaceInputError, ImageItem, content_hash
from service.gallery.gallery import Gallery
from service.gallery.tables import DEFAULT_GALLERY, is_gallery_name


def _gallery_name(target: str) -> str:
    """``target`` when it is a gallery name (it goes into a route's path), else ValueError."""
    if not is_gallery_name(target):
        raise ValueError(f"--gallery {target!r}: 1-128 of A-Z a-z 0-9 . _ - from a letter or digit")
    return target


class SubjectRejected(Exception):
    """Every file of this subject's folder is rejected, for the reason given."""


@dataclass
class EnrollSummary:
    enrolled: int = 0
    skipped: int = 0
    rejected: list[tuple[Path, str]] = field(default_factory=list)
    created_gallery: bool = False  # the target gallery did not exist and was created


class EnrollTarget(Protocol):
    def known_hashes(self, subject_id: str) -> set[str]:
        """Content hashes already enrolled for the subject; raises SubjectRejected."""
        ...

    def enroll(self, subject_id: str, path: Path, data: bytes) -> str | None:
        """Enroll one file; returns why it was rejected, or None."""
        ...


class LocalGallery:
    """Enroll into the gallery this process opened."""

    def __init__(
        self,
        gallery: Gallery,
        embedders: Embedders,
        decoder: FaceDecoder,
        detect: DetectMode = "auto",
        target: str = DEFAULT_GALLERY,
    ) -> None:
        self.gallery, self.embedders, self.decoder, self.detect = gallery, embedders, decoder, detect
        self.target = _gallery_name(target)

    def ensure_gallery(self) -> bool:
        """Create the target gallery when missing; True when it was created."""
        return not self.gallery.has_gallery(self.target) and self.gallery.create_gallery(self.target)

    def known_hashes(self, subject_id: str) -> set[str]:
        if not SUBJECT_ID_RE.fullmatch(subject_id):
            raise SubjectRejected(f"folder name {subject_id!r} is not a valid subject id")
        record = self.gallery.get_subject(subject_id, self.target)
        return {f.content_hash for f in record.faces} if record else set()

    def enroll(self, subject_id: str, path: Path, data: bytes) -> str | None:
        try:
            items = [ImageItem(data, path.name)]
            enroll_images(self.gallery, self.embedders, self.decoder, subject_id, items, self.detect, None, self.target)
        except FaceInputError as exc:
            return exc.detail
        return None


class RemoteService:
    """Enroll through a running service's enroll route."""

    def __init__(
        self, client: httpx.Client, server: str, detect: DetectMode = "auto", target: str = DEFAULT_GALLERY
    ) -> None:
        self.client, self.server, self.detect, self.target = client, server, detect, _gallery_name(target)
        # The default gallery through the routes that predate galleries: older services still take it.
        self.subjects = "/gallery/subjects" if target == DEFAULT_GALLERY else f"/galleries/{target}/subjects"

    def ensure_gallery(self) -> bool:
        """Create the target gallery when missing (an admin key limited to no gallery); True when created."""
        if self.target == DEFAULT_GALLERY:
            return False
        found = self._authorised(self.client.get(f"/galleries/{self.target}"))
        if found.status_code == 200:
            return False
        if found.status_code != 404:
            raise RuntimeError(f"{self.server}: GET gallery {self.target}: {found.status_code} {found.text[:200]}")
        made = self._authorised(self.client.put(f"/galleries/{self.target}"))
        if made.status_code not in (200, 201):
            raise RuntimeError(f"{self.server}: creating gallery {self.target}: {made.status_code} {made.text[:200]}")
        return made.status_code == 201

    def known_hashes(self, subject_id: str) -> set[str]:
        response = self._authorised(self.client.get(f"{self.subjects}/{subject_id}"))
        if response.status_code == 422:
            raise SubjectRejected(str(response.json()["detail"]))
        if response.status_code == 404:
            return set()
        if response.status_code != 200:
            raise RuntimeError(f"{self.server}: GET subject {subject_id}: {response.status_code} {response.text[:200]}")
        return {f["content_hash"] for f in response.json()["faces"]}

    def enroll(self, subject_id: str, path: Path, data: bytes) -> str | None:
        reply = self._authorised(
            self.client.post(
                f"{self.subjects}/{subject_id}/faces",
                files={"images": (path.name, data)},
                data={"detect": self.detect},
            )
        )
        if reply.status_code >= 400:
            return str(reply.json().get("detail", reply.text[:200]))
        return None

    def _authorised(self, response: httpx.Response) -> httpx.Response:
        if response.status_code in (401, 403):
            raise RuntimeError(f"{self.server} refused the API key: {response.json().get('detail')}")
        return response


def subject_files(root: Path) -> Iterator[tuple[str, list[Path]]]:
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        yield folder.name, files


def enrolled_as(data: bytes, detect: DetectMode) -> set[str]:
    """The content hashes a file may have been enrolled under with ``detect``: whole (a chip), or its
    detected face (see :func:`service.faces.content_hash`)."""
    whole, detected = content_hash(data), content_hash(data, None, True)
    return {"false": {whole}, "true": {detected}, "auto": {whole, detected}}[detect]


def enroll_directory(
    root: Path,
    target: EnrollTarget,
    progress: bool = True,
    detect: DetectMode = "auto",
    summary: EnrollSummary | None = None,
) -> EnrollSummary:
    """Enroll every ``root/<subject_id>/<image>`` not enrolled yet; a summary of what happened."""
    summary = summary or EnrollSummary()
    total = sum(len(files) for _, files in subject_files(root))
    with tqdm(total=total, unit="face", disable=not progress) as bar:
        for subject_id, files in subject_files(root):
            try:
                known = target.known_hashes(subject_id)
            except SubjectRejected as exc:
                summary.rejected += [(f, str(exc)) for f in files]
                bar.update(len(files))
                continue
            for path in files:
                bar.update(1)
                data = path.read_bytes()
                digests = enrolled_as(data, detect)
                if digests & known:
                    summary.skipped += 1
                    continue
                reason = target.enroll(subject_id, path, data)
                if reason is not None:
                    summary.rejected.append((path, reason))
                    continue
                known |= digests
                summary.enrolled += 1
    return summary


def enroll_remote(
    root: Path,
    server: str,
    api_key: str | None,
    progress: bool = True,
    detect: DetectMode = "auto",
    target: str = DEFAULT_GALLERY,
) -> EnrollSummary:
    headers = {"X-API-Key": api_key} if api_key else {}
    with httpx.Client(base_url=server, headers=headers, timeout=60) as client:
        service = RemoteService(client, server, detect, target)
        summary = EnrollSummary(created_gallery=service.ensure_gallery())
        return enroll_directory(root, service, progress, detect, summary)
