"""Evaluate models (and the teacher) on LFW and write results.json + report.md + plots."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from lrface.data.lfw import identity_split
from lrface.model_card import Routing, load_card
from lrface.preprocessing import CHIP_SIDE
from lrface.settings import Settings
from lrface.teacher import DLIB_VERSION
from training.evaluate import (
    RESOLUTIONS,
    evaluate_model,
    fusion_identification,
    is_detector_protocol,
    load_test_set,
    probe_faces,
    protocol_faces,
    student_embedder,
    teacher_embedder,
)
from training.identification import identification
from training.metrics import kfold_accuracy
from training.routing import choose_size_threshold, routed_results
from training.teacher_cache import TeacherCache
from training.validation import val_data

TEACHER_ROW = "teacher-dlib (up-sampled LR)"


def _cached_teacher_embed(settings: Settings, chips: np.ndarray, hr_emb: np.ndarray, label: str, teacher: str) -> Any:
    """Teacher embeddings of degraded faces, cached per protocol (they cost minutes each); ``label``
    names the set of people ('test', 'val')."""
    folder = settings.cache / "eval" / teacher
    folder.mkdir(parents=True, exist_ok=True)
    embed = teacher_embedder(teacher, workers=2)
    key = f"{label}-{len(chips)}-chip{CHIP_SIDE}"  # probes start from the canonical chip

    def by_protocol(protocol: str) -> np.ndarray:
        if protocol == "hr":
            return hr_emb
        path = folder / f"{protocol}-{key}.npy"
        if path.exists():
            return np.load(path)
        emb = embed(probe_faces(chips, protocol))
        np.save(path, emb)
        return emb

    return by_protocol


def choose_routing(settings: Settings, model_dir: Path) -> dict[str, Any]:
    """Rank-1 of the student and the teacher on validation people at every clean size, the face size
    from which the teacher takes over (:func:`training.routing.choose_size_threshold`), and the
    teacher's decision threshold on validation pairs (HR against a probe of that size)."""
    split = identity_split(settings.lfw_root())
    cache = TeacherCache(settings.cache, "dlib")
    val = val_data(split.val, cache)
    files = sorted(f for fs in split.val.values() for f in fs)
    labels = np.unique([f.parent.name for f in files], return_inverse=True)[1]
    hr_teacher = val.teacher
    assert hr_teacher is not None  # val_data reads them from the cache
    student = student_embedder(model_dir)
    teacher = _cached_teacher_embed(settings, val.chips, hr_teacher, "val", "dlib")
    protocols = ["hr", *[f"lr{r}" for r in RESOLUTIONS]]
    student_hr = student(probe_faces(val.chips, "hr"))
    rule = load_card(model_dir).gallery_from_teacher
    # as the service's gallery holds them (without distant views: they need the service's detector)
    enrolled = student_hr if rule is None else rule.vectors(hr_teacher)
    curves: dict[str, dict[str, float]] = {"student": {}, "teacher": {}}
    for protocol in protocols:
        s_probe = student_hr if protocol == "hr" else student(probe_faces(val.chips, protocol))
        curves["student"][protocol] = identification(enrolled, s_probe, labels)["rank1"]
        curves["teacher"][protocol] = identification(hr_teacher, teacher(protocol), labels)["rank1"]
    threshold = choose_size_threshold(curves["student"], curves["teacher"])
    routing: dict[str, Any] = {
        "min_face_px_for_teacher": threshold,
        "validation_rank1": curves,
        "validation_people": int(len(np.unique(labels))),
        "validation_images": int(len(labels)),
    }
    if threshold is not None:
        probes = teacher("hr" if threshold > max(RESOLUTIONS) else f"lr{threshold}")
        scores = (hr_teacher[val.pairs[:, 0]] * probes[val.pairs[:, 1]]).sum(1)
        routing["teacher_threshold"] = kfold_accuracy(scores, val.same)[2]
        routing["teacher_threshold_pairs"] = f"{len(scores)} validation pairs, HR against {threshold} px"
    return routing


def run_evaluation(
    settings: Settings, model_dirs: list[Path], teacher: bool, protocols: list[str], out: Path, route: bool = False
) -> dict[str, Any]:
    """Evaluate ``model_dirs`` (and the teacher) on the test people; with ``route`` (needs the teacher),
    choose on validation people the face size from which the teacher serves, and add the routed row."""
    test = load_test_set(settings.lfw_root(), settings.cache, detector=any(map(is_detector_protocol, protocols)))
    results: dict[str, Any] = {"command": " ".join(["lrface", *sys.argv[1:]]), "models": {}}
    for directory in model_dirs:
        card = load_card(directory)
        embed = student_embedder(directory)
        rule = card.gallery_from_teacher
        gallery = None if rule is None else rule.vectors(test.hr_teacher)
        results["models"][card.model_version] = {
            "model_dir": str(directory),
            "config": card.training.config,
            "gallery": "student" if rule is None else "teacher, centred (the card's gallery_from_teacher)",
            **evaluate_model(lambda p, e=embed: e(protocol_faces(test, p)), test, protocols, gallery),  # type: ignore[misc]
        }
        enrolled = embed(probe_faces(test.chips, "hr")) if gallery is None else gallery
        results["models"][card.model_version]["fusion@lr16"] = fusion_identification(embed, test, enrolled)
    if teacher:
        by_protocol = _cached_teacher_embed(settings, test.chips, test.hr_teacher, "test", "dlib")
        # The teacher's rows on aligned faces only (in the service it aligns detected faces itself).
        aligned = [p for p in protocols if not is_detector_protocol(p)]
        results["models"][TEACHER_ROW] = evaluate_model(by_protocol, test, aligned)
    if route and teacher and model_dirs:
        routing = choose_routing(settings, model_dirs[0])
        results["routing"] = routing
        student_row = results["models"][load_card(model_dirs[0]).model_version]
        threshold = routing["min_face_px_for_teacher"]
        name = f"routed: teacher from {threshold} px, else {load_card(model_dirs[0]).model_version}"
        results["models"][name] = routed_results(student_row, results["models"][TEACHER_ROW], threshold)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_report(results, protocols, out)
    return results


def record_in_cards(results: dict[str, Any], out: Path) -> None:
    """Copy each model's LFW View 1 test accuracies (official pairs) into its model card."""
    from lrface.model_card import load_card

    first = next((e for e in results["models"].values() if "model_dir" in e), None)
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
        routing = results.get("routing")
        if routing and routing.get("min_face_px_for_teacher") and entry is first:
            # the service's own switches and fusions are chosen apart (lrface bench frames --calibrate-routing)
            offline = {
                "teacher_version": DLIB_VERSION,
                "min_face_px": routing["min_face_px_for_teacher"],
                "threshold": routing["teacher_threshold"],
                "validation": {k: v for k, v in routing.items() if k != "min_face_px_for_teacher"},
            }
            kept = card.routing  # chosen for this teacher: kept; for another, dropped
            same = kept is not None and kept.teacher_version == DLIB_VERSION
            card.routing = Routing.model_validate({**(kept.model_dump() if same and kept else {}), **offline})
        card.save(directory)


def _acc(entry: dict[str, Any], key: str, pairs: str = "official") -> str:
    if key not in entry:
        return "–"
    r = entry[key][pairs]
    return f"{100 * r['accuracy']:.1f} ({100 * r['ci95_low']:.1f}–{100 * r['ci95_high']:.1f})"


IDENT_PROTOCOLS = ("lr8", "lr12", "lr16", "lr20", "lr24", "lr32", "hr", "surveillance16")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def identification_lines(results: dict[str, Any]) -> list[str]:
    """The identification tables (the headline): rank-1 by probe size, then per-person and open-set
    figures at 16 px and on HR probes."""
    some = next(iter(results["models"].values()))
    ident = some.get("ident@lr16") or some.get("ident@hr") or {}
    lines = [
        "## Identification (1:N)",
        "",
        f"One HR image of every test person enrolled ({ident.get('enrolled', '?')} people, singletons "
        f"included as distractors); every other image is a probe ({ident.get('probes', '?')} probes of "
        f"{ident.get('probe_people', '?')} people), degraded to the column's size. Rank-1 per probe in %, "
        "95% interval from a bootstrap over people in brackets at 16 px.",
        "",
        "| model | "
        + " | ".join(p.replace("lr", "").replace("surveillance", "surv. ") for p in IDENT_PROTOCOLS)
        + " |",
        "| --- |" + " --- |" * len(IDENT_PROTOCOLS),
    ]
    for name, entry in results["models"].items():
        cells = []
        for protocol in IDENT_PROTOCOLS:
            r = entry.get(f"ident@{protocol}")
            if r is None:
                cells.append("–")
            elif protocol == "lr16":
                low, high = r["rank1_ci95"]
                cells.append(f"{_pct(r['rank1'])} ({_pct(low)}–{_pct(high)})")
            else:
                cells.append(_pct(r["rank1"]))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Rank-1 / rank-5 per probe and averaged per person, and open-set FNIR at FPIR = 1% and 10% "
        "(NIST FRVT's 1:N measure: each probe searched once with its mate enrolled and once without):",
        "",
        "| model | probe | rank-1 | rank-5 | rank-1 per person | rank-5 per person"
        " | FNIR @ FPIR 1% | FNIR @ FPIR 10% |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in results["models"].items():
        for protocol in ("lr16", "hr"):
            r = entry.get(f"ident@{protocol}")
            if r is None:
                continue
            lines.append(
                f"| {name} | {protocol} | {_pct(r['rank1'])} | {_pct(r['rank5'])} | {_pct(r['rank1_per_person'])} | "
                f"{_pct(r['rank5_per_person'])} | {_pct(r['fnir_at_fpir_0.01'])} | {_pct(r['fnir_at_fpir_0.1'])} |"
            )
    lines += detector_lines(results) + fusion_lines(results)
    routing = results.get("routing")
    if routing:
        curves = routing["validation_rank1"]
        sizes = list(curves["student"])
        lines += [
            "",
            f"Routing, chosen on {routing['validation_people']} validation people ({routing['validation_images']} "
            f"images; never test people): the teacher serves faces from **{routing['min_face_px_for_teacher']} px**, "
            "the student below. Validation rank-1 (%):",
            "",
            "| model | " + " | ".join(sizes) + " |",
            "| --- |" + " --- |" * len(sizes),
            *[f"| {m} | " + " | ".join(_pct(curves[m][p]) for p in sizes) + " |" for m in ("student", "teacher")],
        ]
    return [*lines, ""]


def fusion_lines(results: dict[str, Any]) -> list[str]:
    """Multi-frame fusion: tracks of 1, 3 and 5 frames of each probe at 16 px, fused into one probe."""
    rows = [(name, e["fusion@lr16"]) for name, e in results["models"].items() if "fusion@lr16" in e]
    if not rows:
        return []
    counts = list(rows[0][1])
    lines = [
        "",
        "Multi-frame fusion at 16 px (`/identify` with `fuse=true`): each probe as a track of frames, every "
        "frame its own small box shift, blur, noise and JPEG; unit embeddings averaged. Rank-1 per probe, %, "
        "95% interval over people:",
        "",
        "| model | " + " | ".join(f"{c} frame{'s' if c != '1' else ''}" for c in counts) + " |",
        "| --- |" + " --- |" * len(counts),
    ]
    for name, fusion in rows:
        cells = [f"{_pct(f['rank1'])} ({_pct(f['rank1_ci95'][0])}–{_pct(f['rank1_ci95'][1])})" for f in fusion.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def detector_lines(results: dict[str, Any]) -> list[str]:
    """Landmark-aligned chips against crops cut around the detector's box (``det<size>``: gallery and
    probes both detector crops, as a photo and a frame sent with ``detect`` give), where evaluated."""
    sizes = sorted({int(k.removeprefix("ident@det")) for e in results["models"].values() for k in e
                    if k.startswith("ident@det") and k != "ident@dethr"})  # fmt: skip
    if not sizes:
        return []
    lines = [
        "",
        "Aligned chips against detector-box crops (MTCNN box, framed by `lrface.preprocessing.frame_face`; "
        "gallery and probes both cut that way): rank-1 and LR–LR verification on the official pairs, %:",
        "",
        "| model | " + " | ".join(f"{r} px aligned / detector" for r in sizes) + " | LR–LR 16 px aligned / detector |",
        "| --- |" + " --- |" * (len(sizes) + 1),
    ]
    for name, entry in results["models"].items():
        if f"ident@det{sizes[0]}" not in entry:
            continue
        cells = [f"{_pct(entry[f'ident@lr{r}']['rank1'])} / {_pct(entry[f'ident@det{r}']['rank1'])}" for r in sizes]
        cells.append(f"{_acc(entry, 'lr-lr@lr16')} / {_acc(entry, 'lr-lr@det16')}" if "lr-lr@det16" in entry else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def write_report(results: dict[str, Any], protocols: list[str], out: Path) -> None:
    lines = [
        "# lrface evaluation on LFW View 1 test (people unseen in training)",
        "",
        f"Command: `{results['command']}`",
        "",
        *[
            f"Gallery side of `{name}` (identification, HR–LR pairs, fusion; detector-crop protocols too, whose "
            "probes are cut around the detector's box): the teacher's embeddings of the enrolled HR photos, "
            "centred (its card's `gallery_from_teacher`, as the service fills its index); LR–LR pairs compare "
            "two student embeddings.\n"
            for name, entry in results["models"].items()
            if entry.get("gallery", "student") != "student"
        ],
        *identification_lines(results),
        "## Verification (1:1)",
        "",
        "Accuracy in % with the 10-fold LFW threshold protocol on the 1,000 official pairs (95% Wilson "
        "interval in brackets); the extended pairs (at most 20 matched pairs per person, as many "
        "mismatched) carry a bootstrap interval over people. TAR@FAR only where the impostor pairs "
        "support it (at least 10 / FAR of them): 1e-2 on the extended set; neither 1e-2 nor 1e-3 on the "
        "official 500, nor 1e-3 on the extended set.",
        "",
    ]
    lines += [
        "| model | HR–HR | LR–LR 16 px | HR–LR 16 px | LR–LR 16 px, extended pairs | TAR@FAR=1e-2 LR–LR 16, extended |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in results["models"].items():
        ext = entry.get("lr-lr@lr16", {}).get("extended")
        lines.append(
            f"| {name} | {_acc(entry, 'hr-hr')} | {_acc(entry, 'lr-lr@lr16')} | {_acc(entry, 'hr-lr@lr16')} | "
            f"{_acc(entry, 'lr-lr@lr16', 'extended')} [{int(ext['pairs'])} pairs] | {_pct(ext['tar_far_1e-2'])} |"
            if ext
            else f"| {name} | {_acc(entry, 'hr-hr')} | – | – | – | – |"
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
