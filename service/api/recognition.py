"""Recognition routes: embed faces, identify a face in the gallery, verify two faces (or a face
against a subject). They parse the request and shape the answer; the work is in the embedder and
the gallery, run in the thread pool."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, status

from service.api import schemas as s
from service.api.auth import require
from service.api.inputs import RequestContext
from service.api.openapi import BOX, FILE, FILES, both_bodies

router = APIRouter(tags=["recognition"], dependencies=[Depends(require("read"))])


@router.post(
    "/embed",
    response_model=s.EmbedResponse,
    summary="Embed one or more faces",
    description="Each face (a pre-cropped chip of any size, or a photo with `detect=true`) is brought to the "
    "model's low-resolution input by the shared preprocessing and embedded (unit length).",
    openapi_extra=both_bodies(
        s.EmbedRequest, {"images": FILES, "box": {"type": "array", "items": BOX}, "detect": {"type": "boolean"}}
    ),
)
async def embed(request: Request) -> s.EmbedResponse:
    ctx = RequestContext(request)
    items, detect = await ctx.image_list(s.EmbedRequest)
    faces, vectors = await ctx.embed_students(items, detect)
    return s.EmbedResponse(
        model=ctx.embedder.card.name,
        model_version=ctx.embedder.model_version,
        embedder="student",
        embeddings=[
            s.FaceEmbedding(embedding=v.tolist(), box=f.box, box_clipped=f.box_clipped, face_px=f.face_px)
            for v, f in zip(vectors, faces, strict=True)
        ],
    )


@router.post(
    "/identify",
    response_model=s.IdentifyResponse,
    summary="Find who a face belongs to",
    description="Ranked subjects (each scored by its best enrolled face) and a decision at the calibrated "
    "threshold (or `threshold`). Send an image, or an `embedding` computed at the edge. A face of at least the "
    "model card's `routing.min_face_px` (in the image as sent) is matched by the teacher against the gallery's "
    "teacher embeddings, a smaller one by the student: `embedder` says which.",
    openapi_extra=both_bodies(
        s.IdentifyRequest,
        {
            "image": FILE,
            "top_k": {"type": "integer", "default": 5},
            "threshold": {"type": "number"},
            "box": BOX,
            "detect": {"type": "boolean"},
        },
    ),
)
async def identify(request: Request) -> s.IdentifyResponse:
    ctx = RequestContext(request)
    body, form = await ctx.read(s.IdentifyRequest, ("top_k", "threshold", "detect"), 2)
    box = str(form.get("box")) if form is not None and form.get("box") else None
    probe = await ctx.optional_probe(form, "image", body.image, body.embedding, body.detect, box)
    if probe is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "give a query image or embedding")
    gallery = ctx.gallery
    (query,), space = await ctx.embed_probes([probe], gallery)
    matches = await ctx.run(gallery.in_space(space).search, query, body.top_k)
    threshold = body.threshold if body.threshold is not None else ctx.embedders.threshold(space)
    decision = matches[0].subject_id if matches and matches[0].score >= threshold else None
    return s.IdentifyResponse(
        matches=[s.MatchOut(subject_id=m.subject_id, score=m.score) for m in matches],
        decision=decision,
        threshold=threshold,
        model_version=ctx.embedder.model_version,
        embedder=space,
        face_px=probe.face.face_px if probe.face is not None else None,
    )


@router.post(
    "/verify",
    response_model=s.VerifyResponse,
    summary="Are two faces the same person? Or: is this face an enrolled subject?",
    openapi_extra=both_bodies(
        s.VerifyRequest,
        {
            "image_a": FILE,
            "image_b": FILE,
            "subject_id": {"type": "string"},
            "threshold": {"type": "number"},
            "detect": {"type": "boolean"},
        },
    ),
)
async def verify(request: Request) -> s.VerifyResponse:
    ctx = RequestContext(request)
    body, form = await ctx.read(s.VerifyRequest, ("subject_id", "threshold", "detect"), 3)
    probe_a = await ctx.optional_probe(form, "image_a", body.image_a, body.embedding_a, body.detect)
    probe_b = await ctx.optional_probe(form, "image_b", body.image_b, body.embedding_b, body.detect)
    if probe_a is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "give a first face: image_a or embedding_a")
    version = ctx.embedder.model_version
    if (probe_b is None) == (body.subject_id is None):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY, "give a second face (image_b/embedding_b) or a subject_id"
        )
    gallery = ctx.gallery if probe_b is None else None
    vectors, space = await ctx.embed_probes([probe_a] if probe_b is None else [probe_a, probe_b], gallery)
    threshold = body.threshold if body.threshold is not None else ctx.embedders.threshold(space)
    if probe_b is not None:
        best, mean, count = float(vectors[0] @ vectors[1]), None, 1
    else:
        assert body.subject_id is not None and gallery is not None
        result = await ctx.run(gallery.in_space(space).subject_scores, body.subject_id, vectors[0])
        if result is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"subject {body.subject_id!r} is not enrolled")
        best, mean, count = result
    return s.VerifyResponse(
        score=best,
        same_person=best >= threshold,
        threshold=threshold,
        mean_score=mean,
        faces_compared=count,
        model_version=version,
        embedder=space,
    )
