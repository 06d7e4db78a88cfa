"""Operations routes: liveness, readiness and Prometheus metrics (no auth: orchestrators call them)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api import schemas as s
from service.api.inputs import gallery_of

router = APIRouter(tags=["ops"])


@router.get(
    "/healthz",
    summary="The process is alive (liveness)",
    description="200 while the process works; 503 once loading the gallery has failed every retry, so an "
    "orchestrator restarts it. Route traffic on /readyz.",
    responses={503: {"model": s.Problem}},
)
def healthz(request: Request) -> dict[str, str]:
    loader = getattr(request.app.state, "gallery_loader", None)
    if loader is not None and loader.gave_up:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, loader.status())
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=s.Ready,
    summary="Model and gallery are loaded",
    responses={503: {"model": s.Problem}},
)
def readyz(request: Request) -> s.Ready:
    state = request.app.state
    if getattr(state, "embedder", None) is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "not ready: model not loaded")
    gallery = gallery_of(request)
    card = state.embedder.card
    return s.Ready(
        ready=True,
        model=card.name,
        model_version=state.embedder.model_version,
        model_sha256=card.onnx_sha256,
        input_size=card.input_size,
        embedding_size=card.embedding_size,
        threshold=card.threshold,
        providers=state.embedder.providers,
        gallery_store=gallery.store.describe(),
        gallery_faces=len(gallery),
        gallery_seq=gallery.seq,
        index_kind=gallery.index.active_kind,
        embedders=state.embedders.describe(),
        teacher_from_px=state.embedders.routing.chip_switch if state.embedders.teacher is not None else None,
        chip_fused_from_px=(
            state.embedders.routing.chip_fusion.from_face_px
            if state.embedders.teacher is not None
            and state.embedders.from_teacher is not None
            and state.embedders.routing.chip_fusion is not None
            else None
        ),
        detected_teacher_from_px=(
            state.embedders.routing.detected_min_face_px if state.embedders.teacher is not None else None
        ),
        teacher_faces=len(gallery.teacher) if gallery.teacher is not None else None,
        operating_point=state.settings.operating_point,
        student_gallery="teacher" if state.embedders.from_teacher is not None else "student",
        index_device=gallery.index.device,
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    m = request.app.state.metrics
    if getattr(request.app.state, "gallery", None) is not None:
        m.gallery_faces.set(len(request.app.state.gallery))
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
