"""The stored face chips of an enrolled face, as PNG: the canonical chip (at most 64 px, what the
student re-embeds) or the 150-px HR chip (the teacher's). The console shows them as thumbnails."""

from __future__ import annotations

from typing import Literal

import sqlalchemy as sa
from fastapi import Depends, HTTPException, Path, Query, Request, Response, status

from service.api import schemas as s
from service.api.auth import require
from service.api.inputs import gallery_of, no_query, subject_gallery, subject_id_of
from service.api.routeset import subject_routes as router
from service.gallery.store import GalleryStore
from service.gallery.tables import DEFAULT_GALLERY, faces

ChipKind = Literal["canonical", "hr"]
_COLUMNS = {"canonical": faces.c.chip, "hr": faces.c.hr_chip}


def stored_chip(
    store: GalleryStore, subject_id: str, face_id: int, kind: ChipKind, gallery: str = DEFAULT_GALLERY
) -> tuple[bool, bytes | None]:
    """``(the face exists, its chip PNG or None when that chip was not kept)``."""
    query = sa.select(_COLUMNS[kind]).where(
        faces.c.gallery == gallery, faces.c.subject_id == subject_id, faces.c.face_id == face_id
    )
    with store.engine.connect() as conn:
        row = conn.execute(query).first()
    return (False, None) if row is None else (True, row[0])


@router.get(
    "/{subject_id}/faces/{face_id}/chip",
    dependencies=[Depends(require("read")), Depends(no_query("kind"))],
    response_class=Response,
    summary="The stored chip of an enrolled face (PNG)",
    description="`kind=canonical`: the face as the student's re-embedding input comes from it (at most 64 px); "
    "`kind=hr`: the 150-px chip the teacher embeds (not kept for faces enrolled before migration 0003).",
    responses={200: {"content": {"image/png": {}}}, 404: {"model": s.Problem}},
)
def face_chip(
    subject_id: str,
    request: Request,
    face_id: int = Path(ge=1, le=2**63 - 1),
    kind: ChipKind = Query("canonical"),
    target: str = Depends(subject_gallery),
) -> Response:
    exists, png = stored_chip(gallery_of(request).store, subject_id_of(subject_id), face_id, kind, target)
    if not exists:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"face {face_id} of subject {subject_id!r} does not exist")
    if png is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"face {face_id} has no stored {kind} chip")
    # A face id never changes its chip (a re-enrolment is a new face), so the browser may keep it.
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})
