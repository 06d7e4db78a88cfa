"""The ``lrface`` command line. Training commands import torch lazily, so the service image
(which has no torch) still runs every other command."""

from __future__ import annotations

from pathlib import Path

import typer

from lrface.settings import get_settings

DEFAULT_PROTOCOLS = ("lr8", "lr12", "lr16", "lr24", "lr32", "surveillance16")

app = typer.Typer(help="lrface: low-resolution face recognition.", no_args_is_help=True, add_completion=False)


@app.callback()
def _root() -> None:
    """lrface: low-resolution face recognition (service, enrollment, training, evaluation)."""


gallery_app = typer.Typer(help="Gallery maintenance.", no_args_is_help=True)
app.add_typer(gallery_app, name="gallery")


@app.command()
def serve(
    host: str = typer.Option(None, help="Bind address (default LRFACE_HOST, 127.0.0.1)."),
    port: int = typer.Option(None, help="Port (default LRFACE_PORT, 8000)."),
    workers: int = typer.Option(None, help="Uvicorn worker processes (default LRFACE_WORKERS, 1)."),
) -> None:
    """Run the HTTP service with the model in LRFACE_MODEL (the bundled one by default)."""
    import uvicorn

    settings = get_settings()
    uvicorn.run(
        "service.asgi:app",
        host=host or settings.host,
        port=port or settings.port,
        workers=workers or settings.workers,
        log_level="info",
    )


@app.command()
def health(
    url: str = typer.Option("", help="Service base URL (default http://127.0.0.1:LRFACE_PORT)."),
    ready: bool = typer.Option(False, help="Check /readyz (model and gallery loaded) instead of /healthz."),
) -> None:
    """Exit 0 when the service answers 200 (the container HEALTHCHECK), 1 otherwise."""
    import httpx

    base = url or f"http://127.0.0.1:{get_settings().port}"
    target = base.rstrip("/") + ("/readyz" if ready else "/healthz")
    try:
        status = httpx.get(target, timeout=4).status_code
    except httpx.HTTPError as exc:
        typer.echo(f"{target}: {exc}", err=True)
        raise typer.Exit(1) from None
    if status != 200:
        typer.echo(f"{target}: HTTP {status}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{target}: ok")


@app.command()
def enroll(
    directory: Path = typer.Argument(..., exists=True, file_okay=False, help="DIR/<subject_id>/*.jpg"),
    server: str = typer.Option("", help="Enroll through this service URL instead of the local gallery."),
    api_key: str = typer.Option("", envvar="LRFACE_API_KEY", help="Admin API key for --server."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Enroll one folder per subject. Skips files already enrolled (same content), so it can be rerun
    after an interruption. Exits non-zero when any file was rejected."""
    from service.enroll import enroll_local, enroll_remote

    settings = get_settings()
    try:
        if server:
            summary = enroll_remote(directory, server, api_key or None, progress)
        else:
            from service.app import open_gallery
            from service.embedder import Embedder

            embedder = Embedder(settings.model, settings.providers, settings.threads)
            gallery = open_gallery(settings, embedder)
            try:
                summary = enroll_local(directory, embedder, gallery, settings.max_image_pixels, progress)
            finally:
                gallery.close()
    except Exception as exc:  # noqa: BLE001 - one clear line for the user, not a traceback
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"enrolled {summary.enrolled}, skipped {summary.skipped} (already enrolled), rejected {len(summary.rejected)}"
    )
    for path, reason in summary.rejected:
        typer.echo(f"  rejected {path}: {reason}", err=True)
    if summary.rejected:
        raise typer.Exit(1)


@gallery_app.command("rebuild-index")
def gallery_rebuild_index() -> None:
    """Rebuild the FAISS index from the store and report its size (the service does this at start-up)."""
    from service.app import open_gallery
    from service.embedder import Embedder

    settings = get_settings()
    gallery = open_gallery(settings, Embedder(settings.model, "cpu"))
    typer.echo(f"{gallery.store.describe()}: {len(gallery)} faces indexed ({gallery.index.active_kind})")
    gallery.close()


@gallery_app.command("migrate")
def gallery_migrate() -> None:
    """Apply the gallery schema migrations (the service also does this when it starts) and print the revision."""
    from service.gallery.store import open_store

    settings = get_settings()
    store = open_store(settings.database_url, settings.gallery_dir)
    typer.echo(f"{store.describe()}: schema at revision {store.revision}")
    store.close()


@gallery_app.command("reembed")
def gallery_reembed() -> None:
    """Re-embed every stored face chip with the current model (after a model change)."""
    from service.embedder import Embedder
    from service.gallery.chips import chip_face
    from service.gallery.store import open_store

    settings = get_settings()
    embedder = Embedder(settings.model, settings.providers)
    store = open_store(settings.database_url, settings.gallery_dir)
    updates = []
    missing = 0
    for face_id, png in store.chips():
        if png is None:
            missing += 1
            continue
        updates.append((face_id, embedder.embed([chip_face(png)])[0]))
    store.replace_embeddings(updates, embedder.model_version)
    store.close()
    typer.echo(f"re-embedded {len(updates)} faces with {embedder.model_version}; {missing} had no stored chip")
    if missing:
        raise typer.Exit(1)


@app.command("fetch-lfw")
def fetch_lfw_command() -> None:
    """Download LFW (deep-funneled images and the official pairs files) into LRFACE_DATA/lfw where missing."""
    from lrface.data.lfw import fetch_lfw

    root = fetch_lfw(get_settings().lfw_root())
    typer.echo(f"LFW ready in {root}")


@app.command("teacher-cache")
def teacher_cache(
    teacher: str = typer.Option("dlib", help="Teacher name: dlib, facenet or onnx."),
    workers: int = typer.Option(2, min=1, help="Processes computing chips and embeddings."),
    limit: int = typer.Option(0, min=0, help="Only the first N images (0: all), for a quick check."),
) -> None:
    """Align every face under LRFACE_DATA/lfw and cache the teacher's embeddings in LRFACE_CACHE."""
    from lrface.data.lfw import list_identities
    from training.teacher_cache import TeacherCache

    settings = get_settings()
    files = [f for fs in list_identities(settings.lfw_root()).values() for f in fs]
    if limit:
        files = files[:limit]
    cache = TeacherCache(settings.cache, teacher)
    targets = cache.targets(files, workers=workers)
    typer.echo(f"{len(files)} images: chips {targets.chips.shape}, embeddings {targets.emb.shape} in {cache.folder}")


if __name__ == "__main__":  # pragma: no cover
    app()


@app.command()
def train(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, help="A JSON config (training/configs/*.json)."),
    run_name: str = typer.Option("", help="Run folder name under LRFACE_CACHE/runs (default: the config's name)."),
    epochs: int = typer.Option(0, min=0, help="Override the config's epoch count (0: keep it)."),
    max_minutes: float = typer.Option(
        0.0, min=0.0, help="Stop after the epoch that passes this many minutes; run again to resume (0: no limit)."
    ),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Train a student or assistant (resumes from LRFACE_CACHE/runs/NAME/last.pt when present).

    The loss terms (identity, 1st/2nd/3rd order against the teacher, the same against an assistant)
    and their weights come from the config. Works under `torchrun --nproc_per_node N` unchanged.
    """
    from training.config import TrainConfig
    from training.data_prep import prepare
    from training.loop import train as train_loop

    settings = get_settings()
    cfg = TrainConfig.load(config)
    if epochs:
        cfg = cfg.model_copy(update={"epochs": epochs})
    runs = settings.cache / "runs"
    if cfg.assistant_run and not Path(cfg.assistant_run).is_absolute():
        cfg = cfg.model_copy(update={"assistant_run": str(runs / cfg.assistant_run)})
    run_dir = runs / (run_name or cfg.name)
    _, train_data, val = prepare(settings.lfw_root(), settings.cache, cfg.teacher, cfg.val_fraction, cfg.seed)
    row = train_loop(cfg, run_dir, train_data, val, max_minutes or None, progress)
    typer.echo(
        f"run {run_dir}: epoch {row.get('epoch')} val_accuracy {row.get('val_accuracy', float('nan')):.4f}"
        + (" (stopped at the time limit; run again to resume)" if row.get("stopped_early") else "")
    )


@app.command()
def release(
    run_name: str = typer.Argument(..., help="Run folder name under LRFACE_CACHE/runs."),
    out: Path = typer.Option(Path("models/lrface-student"), help="Where model.onnx and card.json go."),
    name: str = typer.Option("lrface-student", help="Model name in the card."),
    version: str = typer.Option("1", help="Model version in the card."),
) -> None:
    """Export a run's best checkpoint to ONNX, check ONNX Runtime against torch (1e-4) on real
    validation faces, calibrate thresholds on the validation split, and write the model card."""
    from training.release import release_run

    settings = get_settings()
    card = release_run(settings, settings.cache / "runs" / run_name, out, name, version)
    typer.echo(
        f"released {card.name}:{card.version} to {out}: threshold {card.threshold:.4f}, "
        f"onnx/torch max diff {card.accuracy['onnx_torch_max_abs_diff']:.2e}"
    )


@app.command("quantize")
def quantize_command(
    model: Path = typer.Argument(..., exists=True, file_okay=False, help="Released FP32 model directory."),
    out: Path = typer.Option(..., help="Where the INT8 model.onnx and card.json go."),
    calibration_faces: int = typer.Option(512, min=16, help="Training-split faces used to calibrate."),
) -> None:
    """INT8 variant of a released student (ONNX Runtime static quantization, calibrated on training
    faces; thresholds re-calibrated on validation people). Compare with `lrface evaluate` before use."""
    from training.quantize import quantize_release

    card = quantize_release(get_settings(), model, out, calibration_faces)
    typer.echo(f"wrote {out / card.onnx_file} ({card.name}:{card.version}), threshold {card.threshold:.4f}")


@app.command()
def evaluate(
    models: list[Path] = typer.Argument(None, help="Model directories (model.onnx + card.json) to evaluate."),
    teacher: bool = typer.Option(False, help="Also evaluate the teacher on HR and up-sampled LR faces."),
    protocols: str = typer.Option(
        ",".join(DEFAULT_PROTOCOLS),
        help="Probe protocols: lr<size> (area down-sampling) or surveillance<size>.",
    ),
    out: Path = typer.Option(Path("reports/latest"), help="Folder for results.json and report.md."),
    update_card: bool = typer.Option(False, help="Write the LFW test accuracies into each model's card.json."),
) -> None:
    """LFW View 1 test (people unseen in training): verification accuracy (10-fold), AUC, TAR@FAR,
    HR-HR / LR-LR / HR-LR protocols, extended pair set, rank-1/5 identification."""
    from training.report import run_evaluation

    settings = get_settings()
    results = run_evaluation(settings, models or [], teacher, protocols.split(","), out)
    if update_card:
        from training.report import record_in_cards

        record_in_cards(results, out)
    typer.echo(f"wrote {out / 'results.json'} and {out / 'report.md'} ({len(results['models'])} models)")


ABLATION_ROWS = "identity,first,second,hybrid,hybrid-robust,assistant-lr,hybrid-assistant"


@app.command()
def ablation(
    configs: str = typer.Option(
        ABLATION_ROWS,
        help="Comma-separated config names in training/configs, in order "
        "(assistants before the students that use them).",
    ),
    max_minutes: float = typer.Option(85.0, min=1.0, help="Stop training after this many minutes; rerun to resume."),
    teacher: bool = typer.Option(True, help="Also evaluate the teacher on HR and up-sampled LR faces."),
    out: Path = typer.Option(Path("reports/ablation"), help="Folder for results.json and report.md."),
) -> None:
    """Train every ablation row (resuming finished or interrupted runs), export each to ONNX, and
    evaluate them all with the teacher in one report."""
    import time

    from training.config import TrainConfig
    from training.data_prep import prepare
    from training.loop import train as train_loop
    from training.release import release_run
    from training.report import run_evaluation

    settings = get_settings()
    runs = settings.cache / "runs"
    started = time.monotonic()
    names = [n.strip() for n in configs.split(",") if n.strip()]
    data = None
    for name in names:
        cfg = TrainConfig.load(Path("training/configs") / f"{name}.json")
        if cfg.assistant_run and not Path(cfg.assistant_run).is_absolute():
            cfg = cfg.model_copy(update={"assistant_run": str(runs / cfg.assistant_run)})
        left = max_minutes - (time.monotonic() - started) / 60
        if left <= 0:
            typer.echo(f"time limit reached before {name}; rerun `lrface ablation` to resume")
            raise typer.Exit(3)
        if data is None:
            data = prepare(settings.lfw_root(), settings.cache, cfg.teacher, cfg.val_fraction, cfg.seed)
        row = train_loop(cfg, runs / name, data[1], data[2], left)
        if row.get("stopped_early"):
            typer.echo(f"{name} stopped at the time limit; rerun `lrface ablation` to resume")
            raise typer.Exit(3)
    exported = []
    for name in names:
        target = settings.cache / "ablation" / name
        release_run(settings, runs / name, target, name, "ablation")
        exported.append(target)
    run_evaluation(settings, exported, teacher, list(DEFAULT_PROTOCOLS), out)
    typer.echo(f"wrote {out / 'report.md'}")


bench_app = typer.Typer(
    help="Benchmarks (numbers for the README and reports; never timed asserts).", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")


def _print_json(results: object, out: Path | None) -> None:
    import json

    text = json.dumps(results, indent=2)
    typer.echo(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


@bench_app.command("models")
def bench_models_command(
    model: Path = typer.Option(None, help="Released model directory (default LRFACE_MODEL)."),
    int8: Path = typer.Option(None, help="Also time this INT8 model directory (e.g. models/lrface-student-int8)."),
    threads: int = typer.Option(2, min=1, help="Threads for every model (the machine's cores)."),
    repeats: int = typer.Option(50, min=5, help="Timed batches of 64 (batch-1 runs are 10x this)."),
    out: Path = typer.Option(None, help="Also write the JSON here."),
) -> None:
    """Teacher vs student (torch) vs student (ONNX Runtime): faces/s at batch 1 and 64, p50/p99
    latency, size, peak memory and speed-up over the teacher, all in one run."""
    from training.bench import bench_models

    _print_json(bench_models(model or get_settings().model, threads, repeats, int8), out)


@bench_app.command("index")
def bench_index_command(
    size: int = typer.Option(1_000_000, min=10, help="Synthetic gallery size (faces)."),
    kind: str = typer.Option("hnsw", help="Index kind: flat or hnsw."),
    dim: int = typer.Option(128, min=2, help="Embedding size."),
    ef_search: int = typer.Option(256, min=1, help="HNSW efSearch (the service's default is 256)."),
    out: Path = typer.Option(None, help="Also write the JSON here."),
) -> None:
    """FAISS gallery index at scale: build time, search p50/p99, recall@1 against exact search, memory."""
    from service.bench import bench_index

    _print_json(bench_index(size, dim, kind=kind, ef_search=ef_search), out)


@bench_app.command("load")
def bench_load_command(
    url: str = typer.Option("", help="A running service on loopback; default: start one on a fresh gallery."),
    duration: float = typer.Option(10.0, min=1, max=3600, help="Seconds of load."),
    clients: int = typer.Option(4, min=1, max=256, help="Concurrent clients."),
    enroll_fraction: float = typer.Option(0.2, min=0, max=1, help="Share of requests that enroll (rest identify)."),
    api_key: str = typer.Option("", envvar="LRFACE_API_KEY", help="Admin key for --url."),
    out: Path = typer.Option(None, help="Also write the JSON here."),
) -> None:
    """Bounded load (loopback only): N clients mixing /identify and enrolment for a fixed time.
    Reports throughput, p50/p99 per route, errors, and acknowledged enrolments missing afterwards.
    Exits 1 on any error or lost enrolment."""
    import tempfile

    from service.load import peak_rss_mb, run_load
    from service.process import start_server

    if url:
        report = run_load(url, duration, clients, enroll_fraction, api_key or None)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            server = start_server({"LRFACE_GALLERY_DIR": tmp, "LRFACE_API_KEYS": ""}, timeout=600, quiet=True)
            try:
                report = run_load(server.url, duration, clients, enroll_fraction)
                report.server_peak_rss_mb = peak_rss_mb(server.pid)
            finally:
                server.stop()
    _print_json(report.to_dict(), out)
    if report.errors or report.lost_enrolments:
        raise typer.Exit(1)


@bench_app.command("service")
def bench_service_command(
    gallery_size: int = typer.Option(10_000, min=0, help="Synthetic faces seeded into a fresh gallery."),
    requests: int = typer.Option(200, min=10, help="Timed requests per route."),
    out: Path = typer.Option(None, help="Also write the JSON here."),
) -> None:
    """Start the real server (loopback) on a fresh seeded gallery; /embed and /identify p50/p99."""
    import tempfile

    from service.bench import bench_http, seed_gallery
    from service.load import peak_rss_mb
    from service.process import start_server

    settings = get_settings()
    with tempfile.TemporaryDirectory() as tmp:
        seed_gallery(Path(tmp), settings.model, gallery_size)
        env = {"LRFACE_GALLERY_DIR": tmp, "LRFACE_API_KEYS": "", "LRFACE_THREADS": str(settings.threads)}
        server = start_server(env, timeout=1800, quiet=True)
        try:
            results = bench_http(server.url, requests)
            results["server_peak_rss_mb"] = peak_rss_mb(server.pid)
            _print_json(results, out)
        finally:
            server.stop()
