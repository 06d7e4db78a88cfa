"""Evaluate models (and the teacher) on LFW and write results.json + report.md + plots."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from lrface.model_card import load_card
from lrface.settings import Settings
from training.evaluate import (
    RESOLUTIONS,
    TestSet,
    evaluate_model,
    load_test_set,
    probe_faces,
    student_embedder,
    teacher_embedder,
)


def _cached_teacher_embed(settings: Settings, test: TestSet, teacher: str) -> Any:
    """Teacher embeddings of degraded test faces, cached per protocol (they cost minutes each)."""
    folder = settings.cache / "eval" / teacher
    folder.mkdir(parents=True, exist_ok=True)
    embed = teacher_embedder(teacher)
    key = str(len(test.files))

    def by_protocol(protocol: str) -> np.ndarray:
        if protocol == "hr":
            return test.hr_teacher
        path = folder / f"{protocol}-{key}.npy"
        if path.exists():
            return np.load(path)
        emb = embed(probe_faces(test.chips, protocol))
        np.save(path, emb)
        return emb

    return by_protocol


def run_evaluation(
    settings: Settings, model_dirs: list[Path], teacher: bool, protocols: list[str], out: Path
) -> dict[str, Any]:
    test = load_test_set(settings.lfw_root(), settings.cache)
    results: dict[str, Any] = {"command": " ".join(["lrface", *sys.argv[1:]]), "models": {}}
    for directory in model_dirs:
        card = load_card(directory)
        embed = student_embedder(directory)
        results["models"][card.model_version] = {
            "model_dir": str(directory),
            "config": card.training.config,
            **evaluate_model(lambda p, e=embed: e(probe_faces(test.chips, p)), test, protocols),  # type: ignore[misc]
        }
    if teacher:
        by_protocol = _cached_teacher_embed(settings, test, "dlib")
        results["models"]["teacher-dlib (up-sampled LR)"] = evaluate_model(by_protocol, test, protocols)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_report(results, protocols, out)
    return results


def record_in_cards(results: dict[str, Any], out: Path) -> None:
    """Copy each model's LFW View 1 test accuracies (official pairs) into its model card."""
    from lrface.model_card import load_card

    for entry in results["models"].values():
        if "model_dir" not in entry:
            continue
        directory = Path(entry["model_dir"])
        card = load_card(directory)
        card.accuracy["lfw_view1_test"] = {
            "protocol": "10-fold accuracy on pairsDevTest.txt (1,000 pairs, people unseen in training)",
            "command": results["command"],
            "report": str(out / "report.md"),
            **{
                key: round(value["official"]["accuracy"], 4)
                for key, value in entry.items()
                if key.startswith(("hr-", "lr-"))
            },
        }
        card.save(directory)


def _acc(entry: dict[str, Any], key: str, pairs: str = "official") -> str:
    if key not in entry:
        return "–"
    r = entry[key][pairs]
    return f"{100 * r['accuracy']:.1f} ({100 * r['ci95_low']:.1f}–{100 * r['ci95_high']:.1f})"


def write_report(results: dict[str, Any], protocols: list[str], out: Path) -> None:
    lines = [
        "# lrface evaluation on LFW View 1 test (people unseen in training)",
        "",
        f"Command: `{results['command']}`",
        "",
        "Verification accuracy in % with the 10-fold LFW threshold protocol on the 1,000 official pairs "
        "(95% Wilson interval in brackets).",
        "",
    ]
    lines += [
        "| model | HR–HR | LR–LR 16 px | HR–LR 16 px | LR–LR 16 px, extended pairs"
        " | TAR@FAR=1e-3 LR–LR 16 | rank-1 16 px |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in results["models"].items():
        ext = entry.get("lr-lr@lr16", {}).get("extended")
        ident = entry.get("ident@lr16")
        lines.append(
            f"| {name} | {_acc(entry, 'hr-hr')} | {_acc(entry, 'lr-lr@lr16')} | {_acc(entry, 'hr-lr@lr16')} | "
            f"{100 * ext['accuracy']:.1f} ({int(ext['pairs'])} pairs) | "
            f"{100 * entry['lr-lr@lr16']['official']['tar_far_1e-3']:.1f} | {100 * ident['rank1']:.1f} |"
            if ext and ident
            else f"| {name} | {_acc(entry, 'hr-hr')} | – | – | – | – | – |"
        )
    lines += [
        "",
        "Accuracy (%) against probe resolution, LR–LR / HR–LR:",
        "",
        "| model | " + " | ".join(protocols) + " |",
        "| --- |" + " --- |" * len(protocols),
    ]
    for name, entry in results["models"].items():
        cells = [
            f"{100 * entry[f'lr-lr@{p}']['official']['accuracy']:.1f}"
            f" / {100 * entry[f'hr-lr@{p}']['official']['accuracy']:.1f}"
            if f"lr-lr@{p}" in entry
            else "–"
            for p in protocols
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    _plot(results, out)
    lines += [
        "",
        "![accuracy against resolution](accuracy_vs_resolution.png)",
        "",
        "ROC, LR–LR at 16 px, extended pair set of the test people:",
        "",
        "![ROC at 16 px](roc_lr16.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def _plot(results: dict[str, Any], out: Path) -> None:
    accuracy, roc = {}, {}
    for name, entry in results["models"].items():
        xs = [r for r in RESOLUTIONS if f"lr-lr@lr{r}" in entry]
        accuracy[name] = (xs, [100 * entry[f"lr-lr@lr{r}"]["official"]["accuracy"] for r in xs])
        curve = entry.get("lr-lr@lr16", {}).get("extended", {}).get("roc")
        if curve:
            roc[name] = (curve["far"], [100 * t for t in curve["tar"]])
    _line_plot(out / "accuracy_vs_resolution.png", accuracy, "probe resolution (px)",
               "LR–LR verification accuracy (%)", marker="o")  # fmt: skip
    _line_plot(out / "roc_lr16.png", roc, "false accept rate", "true accept rate (%)", log_x=True)


def _line_plot(
    path: Path, series: dict[str, tuple[list[Any], list[float]]], xlabel: str, ylabel: str,
    marker: str | None = None, log_x: bool = False,
) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker=marker, label=name)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
