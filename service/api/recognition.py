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
    faces, vectors = await ctx.embed(items, detect)
    return s.EmbedResponse(
        model=ctx.embedder.card.name,
        model_version=ctx.embedder.model_version,
        embeddings=[
            s.FaceEmbedding(embedding=v.tolist(), box=f.box, box_clipped=f.box_clipped)
            for v, f in zip(vectors, faces, strict=True)
        ],
    )


@router.post(
    "/identify",
    response_model=s.IdentifyResponse,
    summary="Find who a face belongs to",
    description="Ranked subjects (each scored by its best enrolled face) and a decision at the model card's "
    "calibrated threshold (or `threshold`). Send an image, or an `embedding` computed at the edge.",
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
    query = await ctx.optional_vector(form, "image", body.image, body.embedding, body.detect, box)
    if query is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "give a query image or embedding")
    matches = await ctx.run(ctx.gallery.search, query, body.top_k)
    threshold = body.threshold if body.threshold is not None else ctx.threshold
    decision = matches[0].subject_id if matches and matches[0].score >= threshold else None
    return s.IdentifyResponse(
        matches=[s.MatchOut(subject_id=m.subject_id, score=m.score) for m in matches],
        decision=decision,
        threshold=threshold,
        model_version=ctx.embedder.model_version,
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
    vec_a = await ctx.optional_vector(form, "image_a", body.image_a, body.embedding_a, body.detect)
    vec_b = await ctx.optional_vector(form, "image_b", body.image_b, body.embedding_b, body.detect)
    if vec_a is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "give a first face: image_a or embedding_a")
    threshold = body.threshold if body.threshold is not None else ctx.threshold
    version = ctx.embedder.model_version
    if (vec_b is None) == (body.subject_id is None):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY, "give a second face (image_b/embedding_b) or a subject_id"
        )
    if vec_b is not None:
        score = float(vec_a @ vec_b)
        return s.VerifyResponse(
            score=score, same_person=score >= threshold, threshold=threshold, mean_score=None, model_version=version
        )
    assert body.subject_id is not None
    result = await ctx.run(ctx.gallery.subject_scores, body.subject_id, vec_a)
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
    )
