"""The direction of imports: ``lrface/`` is the core and imports neither ``service`` nor ``training``;
``service`` imports neither ``training`` nor torch. Read from the source (every import statement,
top level or inside a function), so a lazy import counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "lrface": {"service", "training", "lrface_cli", "torch", "torchvision", "facenet_pytorch"},
    "service": {"training", "lrface_cli", "torch", "torchvision", "facenet_pytorch"},
}


def _is_dynamic_import(call: ast.Call) -> bool:
    name = getattr(call.func, "attr", getattr(call.func, "id", ""))
    first = call.args[0] if call.args else None
    return name in ("import_module", "__import__") and isinstance(first, ast.Constant) and isinstance(first.value, str)


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and _is_dynamic_import(node):
            names.add(node.args[0].value.split(".")[0])  # type: ignore[attr-defined]
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_walk_sees_lazy_and_dynamic_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "import os\n"
        "def f():\n    from training.loop import train\n    import torch.nn\n"
        "def g():\n    import importlib\n    importlib.import_module('service.app')\n"
    )
    assert imported_packages(source) == {"os", "training", "torch", "importlib", "service"}


def test_training_command_names_match_the_entry_point() -> None:
    pytest.importorskip("torch")
    import lrface_cli
    from training import cli as training_cli

    assert tuple(training_cli.COMMANDS) == lrface_cli.TRAINING_COMMANDS
    assert tuple(training_cli.BENCH_COMMANDS) == lrface_cli.TRAINING_BENCH_COMMANDS


WITHOUT_TORCH = """
import importlib.abc, sys
class HideTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, HideTorch())
from lrface_cli import app
app()
"""


def test_without_torch_training_commands_say_what_to_install() -> None:
    import subprocess
    import sys

    run = [sys.executable, "-c", WITHOUT_TORCH]
    listed = subprocess.run([*run, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert listed.returncode == 0 and "train" in listed.stdout and "serve" in listed.stdout
    train = subprocess.run([*run, "train", "cfg.json"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert train.returncode == 2 and "the `train` extra (torch)" in train.stderr
    bench = subprocess.run([*run, "bench", "models"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert bench.returncode == 2 and "lrface bench models" in bench.stderr


def test_the_command_line_loads_no_torch_until_a_training_command_runs() -> None:
    """`lrface serve` goes through the same entry point as `lrface train`: a module the training CLI
    imports at load time that imports torch put 470 MB into every server process (the oversized-box
    memory test caught it)."""
    import subprocess
    import sys

    code = "import sys, lrface_cli; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')[:3])"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert loaded.returncode == 0, loaded.stderr[-500:]
    assert loaded.stdout.strip() == "[]"
