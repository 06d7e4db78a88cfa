"""pgvector: the gallery searched inside PostgreSQL, so replicas hold no copy of it.

Each face's embeddings are also stored as pgvector ``vector`` columns (``embedding_vec``, ``teacher_vec``),
written in the same transaction as the canonical float32 blobs. The columns carry no dimension (the
schema does not know the model's), so the HNSW index is an expression index on the column cast to the
served model's dimension, one per space and dimension (``faces_student_hnsw_128``), created when a
process first serves that model. Inner product of unit vectors = cosine similarity, as in FAISS.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa

log = logging.getLogger("lrface.gallery")

COLUMNS = {"student": "embedding_vec", "teacher": "teacher_vec"}
BLOBS = {"student": "embedding", "teacher": "teacher_embedding"}
HNSW_M, HNSW_EF_CONSTRUCTION = 16, 128
MAX_SCAN_TUPLES = 20_000  # faces an iterative (gallery-filtered) HNSW walk may visit (pgvector's default)


def literal(vector: np.ndarray | None) -> str | None:
    """pgvector's text form, exact for float32 (``repr`` of each value round-trips)."""
    if vector is None:
        return None
    return "[" + ",".join(map(repr, np.asarray(vector, dtype=np.float32).reshape(-1).tolist())) + "]"


def available(conn: sa.Connection) -> bool:
    """The server can install the ``vector`` extension (the pgvector image, or the package installed)."""
    return conn.exec_driver_sql("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").first() is not None


def ready(conn: sa.Connection) -> bool:
    """The extension is installed and the faces table has the vector columns."""
    if conn.dialect.name != "postgresql":
        return False
    found = conn.exec_driver_sql(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = 'faces' AND column_name IN ('embedding_vec', 'teacher_vec')"
    ).scalar_one()
    return int(found) == 2


def install(conn: sa.Connection) -> bool:
    """Create the extension and the vector columns, and fill them from the stored blobs; idempotent.
    False (and the gallery stays searchable in memory with FAISS) where the server has no pgvector or
    the database user may not create the extension."""
    if conn.dialect.name != "postgresql":
        return False
    if ready(conn):
        return True
    if not available(conn):
        log.warning("PostgreSQL has no vector extension (pgvector): galleries are searched in each process's memory")
        return False
    try:
        with conn.begin_nested():
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS vector")
    except sa.exc.DBAPIError as exc:
        log.warning("cannot create the vector extension (%s): ask the database owner to `CREATE EXTENSION vector`",
                    str(exc.orig).strip())  # fmt: skip
        return False
    conn.exec_driver_sql(
        "ALTER TABLE faces ADD COLUMN IF NOT EXISTS embedding_vec vector, ADD COLUMN IF NOT EXISTS teacher_vec vector"
    )
    filled = backfill(conn)
    if filled:
        log.info("pgvector: %d faces' embeddings copied into vector columns", filled)
    return True


def backfill(conn: sa.Connection, batch: int = 5_000) -> int:
    """Fill the vector columns of faces stored without them (a gallery made before pgvector)."""
    done, last = 0, -1
    while True:
        rows = conn.execute(
            sa.text(
                "SELECT face_id, embedding, teacher_embedding FROM faces WHERE face_id > :last AND "
                "(embedding_vec IS NULL OR (teacher_embedding IS NOT NULL AND teacher_vec IS NULL)) "
                "ORDER BY face_id LIMIT :batch"
            ),
            {"last": last, "batch": batch},
        ).all()
        if not rows:
            return done
        conn.execute(
            sa.text(
                "UPDATE faces SET embedding_vec = CAST(:s AS vector), teacher_vec = CAST(:t AS vector) "
                "WHERE face_id = :i"
            ),
            [
                {
                    "i": r[0],
                    "s": literal(np.frombuffer(r[1], dtype=np.float32)),
                    "t": None if r[2] is None else literal(np.frombuffer(r[2], dtype=np.float32)),
                }
                for r in rows
            ],
        )
        done, last = done + len(rows), int(rows[-1][0])


def index_name(space: str, dim: int) -> str:
    return f"faces_{space}_hnsw_{int(dim)}"


def _cast(space: str, dim: int) -> str:
    return f"({COLUMNS[space]}::vector({int(dim)}))"


BUILD_BYTES_PER_FACE = 1300


def ensure_index(conn: sa.Connection, space: str, dim: int) -> bool:
    """Create the HNSW index of ``space`` at ``dim`` unless it exists; True when it was built now."""
    name = index_name(space, dim)
    if conn.exec_driver_sql(f"SELECT to_regclass('{name}')").scalar_one() is not None:
        return False
    # The graph is built in memory while it fits (pgvector needs ~1,230 bytes a face at m=16: measured at
    # 1M faces by `lrface bench gallery`), else much more slowly on disk: sized to the table, 1 GB at least.
    rows = conn.exec_driver_sql("SELECT GREATEST(reltuples, 0)::bigint FROM pg_class WHERE relname = 'faces'")
    megabytes = max(1024, math.ceil((rows.scalar_one_or_none() or 0) * BUILD_BYTES_PER_FACE / 2**20))
    conn.exec_driver_sql(f"SELECT set_config('maintenance_work_mem', '{int(megabytes)}MB', true)")
    conn.exec_driver_sql(
        f"CREATE INDEX IF NOT EXISTS {name} ON faces USING hnsw ({_cast(space, dim)} vector_ip_ops) "
        f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"
    )
    return True


def drop_other_indexes(conn: sa.Connection, space: str, dim: int) -> None:
    """Drop ``space``'s HNSW indexes of other dimensions: a re-embedding into a model of another size
    would otherwise fail to cast its vectors into them."""
    keep = index_name(space, dim)
    names = conn.execute(
        sa.text(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'faces' "
            "AND starts_with(indexname, :prefix)"
        ),
        {"prefix": f"faces_{space}_hnsw_"},
    ).scalars()
    for name in list(names):
        if name != keep:
            conn.exec_driver_sql(f'DROP INDEX IF EXISTS "{name}"')


def search(
    conn: sa.Connection,
    space: str,
    dim: int,
    query: np.ndarray,
    limit: int,
    ef_search: int,
    exact: bool = False,
    gallery: str = "default",
) -> list[tuple[int, str, float]]:
    """``(face_id, subject_id, cosine)`` of the ``limit`` nearest faces of ``gallery``, best first: through
    the HNSW index, or by a scan of the gallery's rows with ``exact`` (the ground truth of the recall
    benchmark, and what a gallery that is a small part of the table needs: see ``PgvectorGallery``).

    The HNSW walk is filtered by gallery with pgvector's iterative scan (0.8+): when the first
    ``ef_search`` candidates hold fewer than ``limit`` faces of the gallery, the walk goes on (up to
    ``MAX_SCAN_TUPLES``) instead of returning too few. ``relaxed_order`` may return them slightly out of
    order, so they are sorted here."""
    if exact:  # the HNSW index can only serve an index scan; the gallery's btree still serves a bitmap scan
        conn.exec_driver_sql("SELECT set_config('enable_indexscan', 'off', true)")
    else:  # ef_search below the limit would return fewer rows than asked
        conn.execute(sa.text("SELECT set_config('hnsw.ef_search', :ef, true)"), {"ef": str(max(ef_search, limit))})
        conn.exec_driver_sql("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
        conn.exec_driver_sql(f"SELECT set_config('hnsw.max_scan_tuples', '{MAX_SCAN_TUPLES}', true)")
        # The walk was chosen from the gallery's counts; right after a bulk import the planner's statistics
        # still see a handful of rows and would sort the whole gallery instead. Only the walk needs no sort.
        conn.exec_driver_sql("SELECT set_config('enable_sort', 'off', true)")
    expr = _cast(space, dim)
    # One statement text per plan: psycopg prepares a statement run often, and PostgreSQL then keeps its
    # plan whatever the settings above say, so a walk's plan must never serve a scan (or the reverse).
    path = "scan" if exact else "walk"
    rows: Sequence[Any] = conn.execute(
        sa.text(
            f"SELECT /* {path} */ face_id, subject_id, {expr} <#> CAST(:q AS vector({int(dim)})) AS distance "
            f"FROM faces WHERE {COLUMNS[space]} IS NOT NULL AND gallery = :gallery ORDER BY distance LIMIT :limit"
        ),
        {"q": literal(query), "limit": int(limit), "gallery": gallery},
    ).all()
    found = [(int(r[0]), str(r[1]), -float(r[2])) for r in rows]
    return sorted(found, key=lambda row: -row[2])


def counts(conn: sa.Connection) -> dict[str, int]:
    """Faces with an embedding in each space."""
    row = conn.exec_driver_sql("SELECT count(embedding_vec), count(teacher_vec) FROM faces").one()
    return {"student": int(row[0]), "teacher": int(row[1])}


def counts_of_faces(conn: sa.Connection, space: str, face_ids: Sequence[int]) -> dict[str, int]:
    """Of the faces ``face_ids`` (those still present), how many have a vector in ``space``, per gallery."""
    if not face_ids:
        return {}
    rows = conn.execute(
        sa.text(
            f"SELECT gallery, count({COLUMNS[space]}) FROM faces WHERE face_id = ANY(:ids) GROUP BY gallery"
        ).bindparams(ids=[int(i) for i in face_ids])
    ).all()
    return {str(r[0]): int(r[1]) for r in rows if int(r[1]) > 0}


def counts_by_gallery(conn: sa.Connection, space: str) -> dict[str, int]:
    """Faces with a vector in ``space``, per gallery (galleries without any are absent)."""
    rows = conn.exec_driver_sql(
        f"SELECT gallery, count({COLUMNS[space]}) FROM faces GROUP BY gallery HAVING count({COLUMNS[space]}) > 0"
    ).all()
    return {str(r[0]): int(r[1]) for r in rows}
