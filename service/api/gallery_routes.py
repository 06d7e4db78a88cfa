"""Subject routes: enroll faces of a subject, list and show subjects, delete a subject or a face.

Declared once (``service.api.routeset.subject_routes``) and mounted twice (see :func:`mount`): under
``/gallery/subjects`` on the default gallery (the routes from before galleries existed) and under
``/galleries/{gallery}/subjects`` on a named one. Each route takes its gallery from
:func:`service.api.inputs.subject_gallery`."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, status

from service.api import schemas as s
from service.api.auth import require
from service.api.inputs import RequestContext, gallery_of, no_query, subject_gallery, subject_id_of
from service.api.openapi import BOX, FILES, both_bodies
from service.api.routeset import subject_routes as router
from service.enrollment import enroll_images

ENROLL_FIELDS = ("images", "box", "detect")


@router.post(
    "/{subject_id}/faces",
    response_model=s.EnrollResponse,
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(require("admin")), Depends(no_query())],
    summary="Enroll one or more faces of a subject (created when new)",
    description="One face per image: a face chip or a `box` as it is; a photo (under `detect` auto or true) is "
    "searched and its face enrolled, refused (422, naming the image) when no face is found or when a second "
    "face is at least 0.8x the largest one's side (who is the subject?): crop the photo or give the box. "
    "Acknowledged only after the store has committed. Re-sending an image already enrolled for the subject "
    "(taken the same way) adds nothing and reports `created: false`.",
    openapi_extra=both_bodies(
        s.EnrollRequest,
        {
            "images": FILES,
            "box": {"type": "array", "items": BOX},
            "detect": {"type": "string", "enum": ["auto", "true", "false"], "default": "auto"},
        },
    ),
)
async def enroll(subject_id: str, request: Request, target: str = Depends(subject_gallery)) -> s.EnrollResponse:
    ctx = RequestContext(request)
    subject_id_of(subject_id)
    items, detect, _ = await ctx.image_list(s.EnrollRequest, ENROLL_FIELDS)
    enrolled = await ctx.run(
        enroll_images, ctx.gallery, ctx.embedders, ctx.decoder, subject_id, items, detect,
        ctx.settings.max_request_pixels, target,
    )  # fmt: skip
    return s.EnrollResponse(
        subject_id=subject_id,
        faces=[
            s.EnrolledFace(
                face_id=r.face_id,
                content_hash=r.content_hash,
                created=r.created,
                input=f.input,
                box=f.box,
                face_px=f.face_px,
                detection_score=f.detection_score,
            )  # fmt: skip
            for r, f in enrolled
        ],
    )


@router.get(
    "",
    response_model=s.SubjectPage,
    dependencies=[Depends(require("read")), Depends(no_query("offset", "limit"))],
    summary="List enrolled subjects, paged",
)
def list_subjects(
    request: Request,
    offset: int = Query(0, ge=0, le=1_000_000_000),
    limit: int = Query(50, ge=1, le=1000),
    target: str = Depends(subject_gallery),
) -> s.SubjectPage:
    rows, total = gallery_of(request).store.list_subjects(offset, limit, target)
    items = [s.SubjectSummary(subject_id=r[0], face_count=r[1], created_at=r[2]) for r in rows]
    return s.SubjectPage(items=items, total=total, offset=offset, limit=limit)


@router.get(
    "/{subject_id}",
    response_model=s.SubjectOut,
    dependencies=[Depends(require("read")), Depends(no_query())],
    responses={404: {"model": s.Problem}},
)
def get_subject(subject_id: str, request: Request, target: str = Depends(subject_gallery)) -> s.SubjectOut:
    record = gallery_of(request).get_subject(subject_id_of(subject_id), target)
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"subject {subject_id!r} is not enrolled")
    faces = [
        s.FaceOut(
            face_id=f.face_id, content_hash=f.content_hash, model_version=f.model_version, created_at=f.created_at
        )
        for f in record.faces
    ]
    return s.SubjectOut(subject_id=record.subject_id, created_at=record.created_at, faces=faces)


@router.delete(
    "/{subject_id}",
    dependencies=[Depends(require("admin")), Depends(no_query())],
    responses={404: {"model": s.Problem}},
)
def delete_subject(subject_id: str, request: Request, target: str = Depends(subject_gallery)) -> dict[str, Any]:
    removed = gallery_of(request).delete_subject(subject_id_of(subject_id), target)
    if removed is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"subject {subject_id!r} is not enrolled")
    return {"subject_id": subject_id, "deleted_faces": len(removed)}


@router.delete(
    "/{subject_id}/faces/{face_id}",
    dependencies=[Depends(require("admin")), Depends(no_query())],
    responses={404: {"model": s.Problem}},
)
def delete_face(
    subject_id: str,
    request: Request,
    face_id: int = Path(ge=1, le=2**63 - 1),
    target: str = Depends(subject_gallery),
) -> dict[str, Any]:
    if not gallery_of(request).delete_face(subject_id_of(subject_id), face_id, target):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"face {face_id} of subject {subject_id!r} does not exist")
    return {"subject_id": subject_id, "deleted_face": face_id}


def _named_gallery(
    gallery: str = Path(
        description="The gallery's name (see GET /galleries); `/gallery/subjects/...` is the gallery 'default'.",
        examples=["lobby"],
    ),
) -> None:
    """Declares ``{gallery}`` for /docs; :func:`service.api.inputs.subject_gallery` checks it after the key."""


def mount(app: FastAPI) -> None:
    """The subject routes (these and ``service.api.chips``'s) on the default gallery
    (``/gallery/subjects``) and on named ones (``/galleries/{gallery}/subjects``): the same bodies."""
    from service.api import chips  # noqa: F401 - records its route in subject_routes

    app.include_router(router.router("/gallery/subjects", tags=["gallery"]))
    app.include_router(
        router.router("/galleries/{gallery}/subjects", tags=["gallery"], dependencies=[Depends(_named_gallery)])
    )
