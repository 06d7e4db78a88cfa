"""`lrface bench gallery`'s own machinery at tiny sizes: the binary-COPY seeding of PostgreSQL, the
HNSW index it builds for the engine, and the enrolment measurements (in process, by request groups)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lrface.settings import BUNDLED_MODEL_DIR, Settings
from service.gallery import vectors
from service.gallery.gallery import open_gallery
from service.gallery.pgvector import PgvectorGallery
from service.gallery.store import GalleryStore
from service.gallery.tables import faces
from service.gallery_bench import (
    EmbeddingFit,
    _measured,
    _requests,
    build_vector_index,
    copy_faces,
    enrol_in_process,
    pgvector_plan,
    workload,
)
from tests.faces import lfw_faces

FIT = EmbeddingFit(same_mean=0.48, same_std=0.19, diff_mean=0.01, diff_std=0.2, images=0, people=0).solve(16)


def test_copy_seeding_stores_what_import_faces_would(postgres_url: str) -> None:
    """Every face's float32 blob and pgvector column hold its vector exactly, subjects exist, and a
    'reload' change tells followers to load afresh; across more than one COPY chunk."""
    work = workload(FIT, 50, 16, 4)
    store = GalleryStore(postgres_url)
    copy_faces(store, work, "m:1", chunk=20)
    with store.engine.connect() as conn:
        rows = conn.execute(
            faces.select().with_only_columns(
                faces.c.subject_id,
                faces.c.content_hash,
                faces.c.model_version,
                faces.c.embedding,
                faces.c.embedding_vec,
            )  # fmt: skip
        ).all()
        subjects = conn.exec_driver_sql("SELECT count(*) FROM subjects").scalar_one()
        ops = list(conn.exec_driver_sql("SELECT op FROM changes").scalars())
    assert len(rows) == 50 and subjects == len(set(work.subjects.tolist())) and ops == ["reload"]
    for subject_id, content_hash, version, blob, vec in rows:
        i = int(content_hash)
        assert subject_id == f"s{int(work.subjects[i]):08d}" and version == "m:1"
        assert np.array_equal(np.frombuffer(blob, np.float32), work.vectors[i])
        assert np.array_equal(np.asarray(vec.strip("[]").split(","), np.float32), work.vectors[i])
    store.close()


def test_the_benchmark_builds_the_engines_own_index(postgres_url: str) -> None:
    """The index the benchmark builds is the one the engine would have built: the engine finds it,
    does not build another, and its search walks it."""
    work = workload(FIT, 4000, 16, 4)
    store = GalleryStore(postgres_url)
    copy_faces(store, work, "m:1")
    built = build_vector_index(store, 16, work_mem_gb=0.1, workers=0)
    assert built["index_mb"] > 0 and built["notices"] == []
    assert store.ensure_vector_index("student", 16) is False
    gallery = PgvectorGallery(store, 16, "m:1")
    gallery.load()
    assert len(gallery) == 4000
    assert vectors.index_name("student", 16) in pgvector_plan(gallery, work.probes[0])
    best = gallery.search(work.vectors[7], 1)[0]
    assert best.subject_id == f"s{int(work.subjects[7]):08d}" and best.score == pytest.approx(1.0, abs=1e-5)
    store.close()


def test_enrolment_requests_group_up_to_n_photos_of_one_person() -> None:
    files = [("ann", Path(f"a{i}.jpg")) for i in range(5)] + [("bob", Path("b0.jpg"))]
    groups = _requests(files, "http4", 4)
    assert [(s, len(p)) for s, p in groups] == [("http4-ann", 4), ("http4-ann", 1), ("http4-bob", 1)]
    assert len(_requests(files, "http1", 1)) == 6


def test_enrolment_in_process_splits_embedding_from_storing(tmp_path: Path) -> None:
    """Real photos through the service's enrolment function: every face is stored, and the time splits
    into embedding and storing; each subject is then deleted again, timed."""
    photos = [("Colin_Powell", p) for p in lfw_faces("Colin_Powell", 2)]
    card_dim = 128
    settings = Settings(gallery_dir=tmp_path, index="flat", gallery_engine="faiss")
    from lrface.embedder import OnnxEmbedder
    from service.embedders import Embedders

    version = Embedders.for_model(OnnxEmbedder(BUNDLED_MODEL_DIR, "cpu", 1)).gallery_model_id  # as the service
    gallery = open_gallery(settings, card_dim, version)
    result = enrol_in_process(gallery, BUNDLED_MODEL_DIR, photos)
    assert result["faces"] == 2 and result["faces_per_s"] > 0
    assert result["embed_ms_per_face"] > 0 and result["store_ms_per_face"] > 0 and 0 < result["store_share"] < 1
    assert gallery.get_subject("inproc-Colin_Powell") is None and len(gallery) == 1  # deleted again; the warm-up face
    assert result["delete_subject"]["p50_ms"] > 0
    gallery.close()


def test_a_failed_enrolment_stage_is_recorded_and_the_run_goes_on() -> None:
    assert _measured("stage", lambda: {"faces": 1}) == {"faces": 1}
    assert _measured("stage", lambda: 1 / 0)["error"].startswith("ZeroDivisionError")
