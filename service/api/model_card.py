"""The served model's card: name, version, thresholds, measured accuracy, routing to the teacher and
provenance (what ``card.json`` beside the ONNX file says). The console's model page shows it."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request, status

from lrface.model_card import ModelCard
from service.api import schemas as s
from service.api.auth import require
from service.api.inputs import no_query

router = APIRouter(tags=["model"], dependencies=[Depends(require("read")), Depends(no_query())])


@router.get(
    "/model/card",
    response_model=ModelCard,
    summary="The served model's card",
    description="The student's model card as released (`lrface release`, `lrface evaluate --update-card`): "
    "thresholds by operating point, accuracy with the command that measured it, and `routing` (the face size "
    "from which the teacher serves and its threshold). `/readyz` says whether the teacher is serving.",
    responses={503: {"model": s.Problem}},
)
def model_card(request: Request) -> ModelCard:
    embedder = getattr(request.app.state, "embedder", None)
    if embedder is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "not ready: model not loaded")
    card: ModelCard = embedder.card
    return card
