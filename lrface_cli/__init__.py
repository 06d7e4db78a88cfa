"""The ``lrface`` command: one thin entry point composing the commands of the core (``lrface.cli``),
the service (``service.cli``) and training (``training.cli``). Where the training code or its
``train`` extra (torch) is not installed, as in the service image, the training commands are still
listed and say what to install."""

from __future__ import annotations

from collections.abc import Callable
from importlib.util import find_spec

import typer

from lrface import cli as core_cli
from service import cli as service_cli

# The training commands (``training.cli.COMMANDS``; a test keeps the two lists equal).
TRAINING_COMMANDS = (
    "teacher-cache", "train", "pack", "release", "quantize", "evaluate", "ablation",
    "export-detector", "export-teacher",
)  # fmt: skip
TRAINING_BENCH_COMMANDS = ("models",)
MISSING_TRAIN = (
    "this command needs the training code and the `train` extra (torch): "
    "pip install -e '.[cpu,train]' from a checkout of lrface"
)

app = typer.Typer(help="lrface: low-resolution face recognition.", no_args_is_help=True, add_completion=False)
bench_app = typer.Typer(
    help="Benchmarks (numbers for the README and reports; never timed asserts).", no_args_is_help=True
)


@app.callback()
def _root() -> None:
    """lrface: low-resolution face recognition (service, enrollment, training, evaluation)."""


def training_available() -> bool:
    try:
        return find_spec("training") is not None and find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def _missing_train_command(name: str) -> Callable[[], None]:
    def command() -> None:
        typer.echo(f"error: lrface {name}: {MISSING_TRAIN}", err=True)
        raise typer.Exit(2)

    command.__doc__ = f"(unavailable here: {MISSING_TRAIN})"
    return command


def compose() -> None:
    core_cli.register(app)
    service_cli.register(app, bench_app)
    if training_available():
        from training import cli as training_cli

        training_cli.register(app, bench_app)
    else:
        for name in TRAINING_COMMANDS:
            app.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})(
                _missing_train_command(name)
            )
        for name in TRAINING_BENCH_COMMANDS:
            bench_app.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})(
                _missing_train_command(f"bench {name}")
            )
    app.add_typer(bench_app, name="bench")


compose()
