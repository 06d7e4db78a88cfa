"""HR teachers behind a factory: ``get_teacher("dlib")``."""

from __future__ import annotations

from collections.abc import Callable

from training.teachers.base import Teacher

_REGISTRY: dict[str, Callable[..., Teacher]] = {}


def register(name: str) -> Callable[[Callable[..., Teacher]], Callable[..., Teacher]]:
    def wrap(factory: Callable[..., Teacher]) -> Callable[..., Teacher]:
        _REGISTRY[name] = factory
        return factory

    return wrap


def get_teacher(name: str, **kwargs: object) -> Teacher:
    # Import for the side effect of registration; each module imports its heavy library lazily.
    from training.teachers import dlib_teacher, facenet_teacher, onnx_teacher  # noqa: F401

    if name not in _REGISTRY:
        raise KeyError(f"unknown teacher {name!r}; choose one of {sorted(_REGISTRY)}")
    return _REGISTRY[name](**kwargs)
