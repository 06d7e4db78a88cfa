"""Recognition routes: embed faces, identify a face in the gallery, verify two faces (or a face
against a subject). They parse the request and shape the answer; the work is in the embedder and
the gallery, run in the thread pool."""

from __future__ import annotations

from typing import Any, get_args

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request, status

from lrface.settings import OperatingPoint
from service.api import schemas as s
from service.api.auth import require
from service.api.inputs import Probe, RequestContext, no_query
from service.api.openapi import BOX, FILE, FILES, both_bodies
from service.embedders import Space
from service.faces import DecodedFace, ImageItem
from service.gallery.gallery import Gallery

router = APIRouter(tags=["recognition"], dependencies=[Depends(require("read")), Depends(no_query())])

EMBED_FIELDS = ("images", "box", "detect", "include_input")
IDENTIFY_FORM = ("top_k", "threshold", "operating_point", "detect", "fuse", "include_input", "gallery")
VERIFY_FORM = ("subject_id", "threshold", "detect", "gallery")
DETECT_FORM = {"type": "string", "enum": ["auto", "true", "false"], "default": "auto"}
GALLERY_FORM = {"type": "string", "default": "default", "description": "The gallery searched (see GET /galleries)."}
FACES_DOC = (
    " Each image is taken as `detect` says (default `auto`: a face chip is the face, a photo or frame is "
    "searched with the MTCNN detector and gives every face found, the largest first); a `box` is the face. "
    "Each face says how it was taken (`input`), where it is (`box`, `face_px`, `detection_score`) and which "
    "model served it (`embedder`); `include_input=true` adds the model's input as it saw it (`input_png`)."
)


def _found(ctx: RequestContext, face: DecodedFace, space: Space, png: str | None) -> dict[str, Any]:
    return {
        "image": face.image,
        "input": face.input,
        "box": face.box,
        "box_clipped": face.box_clipped,
        "detection_score": face.detection_score,
        "face_px": face.face_px,
        "embedder": ctx.embedders.label(space, [face]),
        "input_png": png,
    }


@router.post(
    "/embed",
    response_model=s.EmbedResponse,
    summary="Embed the faces of one or more images",
    description="Every face is brought to the student's low-resolution input by the shared preprocessing and "
    "embedded (unit length, in the student's space, which edge clients compute; a face below the teacher's "
    "switch is embedded by both models fused in that space where the card says so: `embedder` per face)."
    + FACES_DOC
    + " Images searched without a face found are listed in `images_without_face`.",
    openapi_extra=both_bodies(
        s.EmbedRequest,
        {
            "images": FILES,
            "box": {"type": "array", "items": BOX},
            "detect": DETECT_FORM,
            "include_input": {"type": "boolean"},
        },
    ),  # fmt: skip
)
async def embed(request: Request) -> s.EmbedResponse:
    ctx = RequestContext(request)
    items, detect, include = await ctx.image_list(s.EmbedRequest, EMBED_FIELDS)

    def work() -> list[s.FaceEmbedding]:
        faces = ctx.decode(items, detect)
        vectors = ctx.embedders.embed(faces, "student")
        pngs = [ctx.input_png(f, "student") if include else None for f in faces]
        return [
            s.FaceEmbedding(embedding=v.tolist(), **_found(ctx, f, "student", png))
            for v, f, png in zip(vectors, faces, pngs, strict=True)
        ]

    out = await ctx.run(work)
    with_face = {f.image for f in out}
    return s.EmbedResponse(
        model=ctx.embedder.card.name,
        model_version=ctx.embedder.model_version,
        embedder="student",
        faces=out,
        embeddings=out,
        images_without_face=[i for i in range(len(items)) if i not in with_face],
    )


@router.post(
    "/identify",
    response_model=s.IdentifyResponse,
    summary="Find who the faces of an image belong to",
    description="Each face found is identified on its own (`faces`): ranked subjects (each scored by its best "
    "enrolled face), a `decision` at the calibrated threshold of the face's kind at the operating point "
    "(`operating_point`, default LRFACE_OPERATING_POINT; or the request's `threshold`) and an `outcome` ('match', or "
    "'unknown' when no enrolled subject reaches it). The top-level `matches`, `decision`, `threshold`, "
    "`embedder`, `face_px` and `input` are the largest face's; the top-level `outcome` is 'no_face' when none "
    "was found. A face of at least the model card's switch (in the image as sent; a chip or box: "
    "`routing.chip_min_face_px`, a face the detector found: `routing.detected_min_face_px`) is matched by the "
    "teacher against the gallery's teacher embeddings, a smaller one by the student, or by both models fused where "
    "the card says so (`routing.detected_fusion` for a detected face, `routing.chip_fusion` for a chip or box from "
    "its `from_face_px`), at the fusion's own threshold." + FACES_DOC + " Send "
    "one image, an `embedding` computed at the edge, or several images of one person with `fuse=true` "
    "(multipart: several `image` files; JSON: `images`): each image's largest face is embedded, the embeddings "
    "averaged and searched once (the teacher only when every face is large enough); `fused` says how many. "
    "`gallery` names the gallery searched (default: 'default'; 404 when it does not exist, 403 when the API key "
    "may not use it).",
    openapi_extra=both_bodies(
        s.IdentifyRequest,
        {
            "image": {"oneOf": [FILE, FILES]},
            "top_k": {"type": "integer", "default": 5},
            "threshold": {"type": "number"},
            "operating_point": {"type": "string", "enum": list(get_args(OperatingPoint))},
            "box": {"oneOf": [BOX, {"type": "array", "items": BOX}]},
            "detect": DETECT_FORM,
            "fuse": {"type": "boolean", "default": False},
            "include_input": {"type": "boolean", "default": False},
            "gallery": GALLERY_FORM,
        },
    ),
)
async def identify(request: Request) -> s.IdentifyResponse:
    ctx = RequestContext(request)
    max_files = ctx.settings.max_faces_per_request + 2
    body, form = await ctx.read(s.IdentifyRequest, IDENTIFY_FORM, ("image", "box"), max_files)
    target = await ctx.gallery_named(body.gallery)
    threshold = body.threshold
    point = body.operating_point or ctx.settings.operating_point
    items: list[ImageItem] = []
    if form is not None:
        if form.get("image") is not None:
            items = await ctx.items_from_form(form, "image", [str(b) for b in form.getlist("box")])
    elif body.embedding is not None:
        if body.image is not None or body.images is not None or body.fuse:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_ENTITY, "give an image (or images) or an embedding, not both"
            )
        probe = Probe(None, ctx.check_embedding(body.embedding, "embedding"))
        gallery = ctx.gallery
        (query,), space = await ctx.embed_probes([probe], gallery)
        searched = gallery.in_space(space)
        found, entries = await ctx.run(
            lambda: (searched.search(query, body.top_k, gallery=target), searched.count(target))
        )
        matches = [s.MatchOut(subject_id=m.subject_id, score=m.score) for m in found]
        chosen, at = _threshold(ctx, threshold, space, [], point, entries)
        decision = _decide(matches, chosen)
        return s.IdentifyResponse(
            matches=matches, decision=decision, outcome="match" if decision else "unknown", threshold=chosen,
            model_version=ctx.embedder.model_version, embedder=space, face_px=None, input="embedding",
            operating_point=at,
        )  # fmt: skip
    elif body.image is not None and body.images is not None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "give image or images, not both")
    else:
        images = [body.image] if body.image is not None else body.images or []
        items = await ctx.run(ctx.items_from_json, images, "image" if body.image is not None else "images")
    if not items:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "give a query image or embedding")
    if len(items) > 1 and not body.fuse:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY,
            f"{len(items)} images: several images are taken as one track of one person only with fuse=true; "
            "otherwise send one image per request",
        )
    gallery = ctx.gallery
    faces = await ctx.run(ctx.decode, items, body.detect)
    if body.fuse:
        track = [next(f for f in faces if f.image == i) for i in range(len(items)) if any(f.image == i for f in faces)]
        return await ctx.run(
            _identify_track, ctx, track, gallery, target, body.top_k, threshold, body.include_input, point
        )
    return await ctx.run(_identify_faces, ctx, faces, gallery, target, body.top_k, threshold, body.include_input, point)


def _decide(matches: list[s.MatchOut], threshold: float) -> str | None:
    return matches[0].subject_id if matches and matches[0].score >= threshold else None


def _threshold(
    ctx: RequestContext, threshold: float | None, space: Space, faces: list[DecodedFace], point: OperatingPoint,
    entries: int | None = None,
) -> tuple[float, s.DecidedAt]:  # fmt: skip
    """The client's ``threshold`` (decided at 'threshold'), else the threshold of these faces' kind at the
    operating ``point`` for a search of ``entries`` faces (the gallery searched) and the point it is at
    ('best_accuracy' where the card has no open-set figure for the kind: :meth:`Embedders.threshold_at`)."""
    if threshold is not None:
        return threshold, "threshold"
    return ctx.embedders.threshold_at(space, faces=faces, point=point, gallery_size=entries)


def _no_face(ctx: RequestContext, threshold: float | None, point: OperatingPoint) -> s.IdentifyResponse:
    chosen, at = _threshold(ctx, threshold, "student", [], point)
    return s.IdentifyResponse(
        matches=[], decision=None, outcome="no_face", threshold=chosen,
        model_version=ctx.embedder.model_version, embedder="student", face_px=None, input=None, faces=[],
        operating_point=at,
    )  # fmt: skip


def _identify_faces(
    ctx: RequestContext, faces: list[DecodedFace], gallery: Gallery, target: str, top_k: int,
    threshold: float | None, include: bool, point: OperatingPoint,
) -> s.IdentifyResponse:  # fmt: skip
    """Every face of the image identified on its own (each in its routed space); the top level is the
    largest face's."""
    if not faces:
        return _no_face(ctx, threshold, point)
    vectors, spaces = ctx.embed_each(faces, gallery)
    entries: dict[Space, int] = {}
    out = []
    for face, vector, space in zip(faces, vectors, spaces, strict=True):
        found = gallery.in_space(space).search(vector, top_k, gallery=target)
        matches = [s.MatchOut(subject_id=m.subject_id, score=m.score) for m in found]
        if space not in entries:  # the faces of the gallery searched, once per space (an operating point's scale)
            entries[space] = gallery.in_space(space).count(target)
        chosen, at = _threshold(ctx, threshold, space, [face], point, entries[space])
        decision = _decide(matches, chosen)
        png = ctx.input_png(face, space) if include else None
        out.append(
            s.IdentifiedFace(
                **_found(ctx, face, space, png),
                matches=matches,
                threshold=chosen,
                operating_point=at,
                decision=decision,
                outcome="match" if decision else "unknown",
            )  # fmt: skip
        )
    top = out[0]
    assert top.matches is not None and top.threshold is not None and top.outcome is not None
    return s.IdentifyResponse(
        matches=top.matches, decision=top.decision, outcome=top.outcome, threshold=top.threshold,
        model_version=ctx.embedder.model_version, embedder=top.embedder, face_px=top.face_px, input=top.input,
        faces=out, operating_point=top.operating_point or "best_accuracy",
    )  # fmt: skip


def _identify_track(
    ctx: RequestContext, track: list[DecodedFace], gallery: Gallery, target: str, top_k: int,
    threshold: float | None, include: bool, point: OperatingPoint,
) -> s.IdentifyResponse:  # fmt: skip
    """One person's faces (one per image) fused: unit embeddings averaged, re-normalised, searched once,
    all in one space (the teacher's only when every face is large enough for it)."""
    if not track:
        return _no_face(ctx, threshold, point)
    vectors, space = ctx._embed_probes([Probe(f) for f in track], gallery)
    mean = np.mean(np.stack(vectors), axis=0)
    query = (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
    found = gallery.in_space(space).search(query, top_k, gallery=target)
    matches = [s.MatchOut(subject_id=m.subject_id, score=m.score) for m in found]
    chosen, at = _threshold(ctx, threshold, space, track, point, gallery.in_space(space).count(target))
    decision = _decide(matches, chosen)
    largest = max(track, key=lambda f: f.face_px)
    return s.IdentifyResponse(
        matches=matches, decision=decision, outcome="match" if decision else "unknown", threshold=chosen,
        model_version=ctx.embedder.model_version, embedder=ctx.embedders.label(space, track),
        face_px=min(f.face_px for f in track), input=largest.input, fused=len(track),
        operating_point=at,
        faces=[s.IdentifiedFace(**_found(ctx, f, space, ctx.input_png(f, space) if include else None)) for f in track],
    )  # fmt: skip


@router.post(
    "/verify",
    response_model=s.VerifyResponse,
    summary="Are two faces the same person? Or: is this face an enrolled subject?",
    description="Each image gives one face: a chip or box as it is, a searched photo its largest face (422 when "
    "none is found); `input_a` / `input_b` say how each was taken. A `subject_id` is looked up in `gallery` "
    "(default: 'default'); two faces need no gallery (one named is still checked: 404, or 403 for the key). A "
    "claimed identity is a 1:1 decision: it is made at the best-accuracy threshold of the face's kind (or "
    "`threshold`), never at LRFACE_OPERATING_POINT, whose thresholds are for searching a whole gallery.",
    openapi_extra=both_bodies(
        s.VerifyRequest,
        {
            "image_a": FILE,
            "image_b": FILE,
            "subject_id": {"type": "string"},
            "threshold": {"type": "number"},
            "detect": DETECT_FORM,
            "gallery": GALLERY_FORM,
        },
    ),
)
async def verify(request: Request) -> s.VerifyResponse:
    ctx = RequestContext(request)
    body, form = await ctx.read(s.VerifyRequest, VERIFY_FORM, ("image_a", "image_b"), 3)
    # Two faces touch no gallery: a key limited to others may compare them unless it names one.
    named = body.subject_id is not None or "gallery" in body.model_fields_set
    target = await ctx.gallery_named(body.gallery) if named else body.gallery
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
    probes = [probe_a] if probe_b is None else [probe_a, probe_b]
    # Two faces are compared with each other unfused (the student below the card's min_face_px, at the card's
    # pair threshold; the teacher from it); a face against an enrolled subject is fused where the card says so,
    # with the fusion's threshold.
    vectors, space = await ctx.embed_probes(probes, gallery, fuse=probe_b is None)
    faces = [p.face for p in probes if p.face is not None] if probe_b is None else []
    threshold = body.threshold if body.threshold is not None else ctx.embedders.threshold(space, probe_b is None, faces)
    if probe_b is not None:
        best, mean, count = float(vectors[0] @ vectors[1]), None, 1
    else:
        assert body.subject_id is not None and gallery is not None
        result = await ctx.run(gallery.in_space(space).subject_scores, body.subject_id, vectors[0], target)
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
        embedder=ctx.embedders.label(space, faces),  # a pair (no faces listed): unfused
        input_a=probe_a.kind,
        input_b=probe_b.kind if probe_b is not None else None,
    )
