"""The core's commands and the helpers every package's commands share. The ``lrface`` command itself
is composed in ``lrface_cli`` (the core imports neither ``service`` nor ``training``)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from lrface.settings import get_settings


def print_json(results: object, out: Path | None) -> None:
    """Print ``results`` as JSON, and also write it to ``out`` when given (benchmarks, reports)."""
    text = json.dumps(results, indent=2)
    typer.echo(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


def fetch_lfw() -> None:
    """Download LFW (deep-funneled images and the official pairs files) into LRFACE_DATA/lfw where missing."""
    from lrface.data.lfw import fetch_lfw as fetch

    root = fetch(get_settings().lfw_root())
    typer.echo(f"LFW ready in {root}")


def register(app: typer.Typer) -> None:
    app.command("fetch-lfw")(fetch_lfw)
