"""Gallery routes: list the galleries (with subject and face counts), show one, create and delete
them. Their subjects are under ``/galleries/{gallery}/subjects`` (``service.api.gallery_routes``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status

from service.api import schemas as s
from service.api.auth import grant_of, require
from service.api.inputs import gallery_name_of, gallery_of, no_query, target_gallery
from service.gallery.store import GalleryRecord
from service.gallery.tables import DEFAULT_GALLERY

router = APIRouter(prefix="/galleries", tags=["galleries"])


def _out(record: GalleryRecord) -> s.GalleryOut:
    return s.GalleryOut(
        name=record.name,
        created_at=record.created_at,
        subject_count=record.subject_count,
        face_count=record.face_count,
    )


@router.get(
    "",
    response_model=s.GalleryList,
    dependencies=[Depends(require("read")), Depends(no_query())],
    summary="List the galleries this API key may use, with their subject and face counts",
)
def list_galleries(request: Request) -> s.GalleryList:
    grant = grant_of(request)
    names = None if grant is None or grant.galleries is None else sorted(grant.galleries)
    return s.GalleryList(items=[_out(r) for r in gallery_of(request).list_galleries(names)])


@router.get(
    "/{gallery}",
    response_model=s.GalleryOut,
    dependencies=[Depends(require("read")), Depends(no_query())],
    summary="One gallery, with its subject and face counts",
    responses={403: {"model": s.Problem}, 404: {"model": s.Problem}},
)
def get_gallery(gallery: str, request: Request) -> s.GalleryOut:
    found = gallery_of(request).list_galleries([target_gallery(request, gallery)])
    if not found:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"gallery {gallery!r} does not exist")
    return _out(found[0])


@router.put(
    "/{gallery}",
    response_model=s.GalleryOut,
    status_code=status.HTTP_201_CREATED,
    dependencies=[Depends(require("admin", every_gallery=True)), Depends(no_query())],
    summary="Create an empty gallery (201; 200 when it exists already)",
    description="Needs an admin key limited to no gallery. Enrol its subjects with "
    "`POST /galleries/{gallery}/subjects/{subject_id}/faces`; search it with `gallery` on /identify and /verify.",
    responses={200: {"model": s.GalleryOut}, 422: {"model": s.Problem}},
)
def create_gallery(gallery: str, request: Request, response: Response) -> s.GalleryOut:
    name = gallery_name_of(gallery)
    if not gallery_of(request).create_gallery(name):
        response.status_code = status.HTTP_200_OK
    return _out(gallery_of(request).list_galleries([name])[0])


@router.delete(
    "/{gallery}",
    response_model=s.GalleryDeleted,
    dependencies=[Depends(require("admin", every_gallery=True)), Depends(no_query())],
    summary="Delete a gallery with all its subjects and faces",
    description="Needs an admin key limited to no gallery. The gallery 'default' cannot be deleted (409).",
    responses={404: {"model": s.Problem}, 409: {"model": s.Problem}},
)
def delete_gallery(gallery: str, request: Request) -> s.GalleryDeleted:
    name = gallery_name_of(gallery)
    if name == DEFAULT_GALLERY:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            "the gallery 'default' cannot be deleted (the /gallery/... routes use it); delete its subjects instead",
        )
    deleted = gallery_of(request).delete_gallery(name)
    if deleted is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"gallery {name!r} does not exist")
    return s.GalleryDeleted(gallery=name, deleted_subjects=deleted[0], deleted_faces=deleted[1])
