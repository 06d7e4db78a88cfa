"""OpenAPI helpers for routes that parse their own bodies (JSON with base64 images, or multipart)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

# Request bodies the routes parse themselves: their schemas are added to the OpenAPI components by
# ``request_body_schemas`` so the `$ref`s of ``both_bodies`` resolve.
BODY_MODELS: list[type[BaseModel]] = []

FILE = {"type": "string", "format": "binary"}
FILES = {"type": "array", "items": FILE}
BOX = {"type": "string", "description": "left,top,right,bottom", "example": "10,12,74,80"}


def both_bodies(model: type[BaseModel], multipart_fields: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI: the route takes JSON (base64 images) or multipart (file uploads)."""
    BODY_MODELS.append(model)
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}},
                "multipart/form-data": {"schema": {"type": "object", "properties": multipart_fields}},
            },
        }
    }


def request_body_schemas() -> dict[str, Any]:
    """JSON schemas of ``BODY_MODELS`` (and the models they use), keyed for ``#/components/schemas``."""
    schemas: dict[str, Any] = {}
    for model in BODY_MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas
