"""The gallery searched in PostgreSQL with pgvector: no copy in the process, nothing to build at start.

An enrolment or a delete committed by any replica is seen by the next search of every replica (the
search reads the table), so there is no sync lag for searches. The change log is still followed, but
only to keep the face counts (``len``, /readyz, the teacher-routing check) current: by key, from the
enrolled faces' rows and from what each delete's entry says the face had (revision 0006), so a sync
recounts the table only after a bulk rewrite ('reload'), on ``CHANGES_COUNTED`` changes or more since
the last sync, on a delete whose entry does not say (older than 0006), or should a count go below zero.

Galleries share one table and one HNSW graph per space. A search of gallery G walks the graph with
pgvector's iterative scan filtered to G, as long as G is a large enough part of the table for the
walk to meet ``limit`` of its faces within its budget; a gallery smaller than that is scanned exactly
(its rows found through the ``(gallery, subject_id)`` btree), which is both faster and complete there.
"""

from __future__ import annotations

import numpy as np

from service.gallery.gallery import Gallery, Match
from service.gallery.index import FaceIndex
from service.gallery.store import Change, GalleryStore
from service.gallery.tables import DEFAULT_GALLERY
from service.gallery.vectors import MAX_SCAN_TUPLES

# Changes since the last sync counted by key up to this many; more: a recount.
CHANGES_COUNTED = 1000


class DatabaseIndex(FaceIndex):
    """Stands where the FAISS index would: the vectors and the HNSW graph live in PostgreSQL, so adding,
    removing and rebuilding here do nothing; what /readyz reports is the kind and where it runs."""

    def __init__(self, dim: int) -> None:  # no FAISS structure at all
        self.dim, self.kind, self.active_kind, self.use_gpu = dim, "pgvector", "pgvector-hnsw", False

    @property
    def device(self) -> str:
        return "postgresql"

    def rebuild(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        pass

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        pass

    def remove(self, ids: list[int]) -> None:
        pass

    def __len__(self) -> int:
        return 0


class PgvectorGallery(Gallery):
    EXACT_BELOW = 1_000  # faces of one gallery under which its rows are scanned instead of walking the graph

    def __init__(
        self,
        store: GalleryStore,
        dim: int,
        model_version: str,
        space: str = "student",
        teacher: Gallery | None = None,
        ef_search: int = 100,
    ) -> None:
        if not store.pgvector:
            raise ValueError(f"gallery {store.describe()} has no pgvector columns (PostgreSQL without pgvector)")
        super().__init__(store, dim, model_version, DatabaseIndex(dim), space, teacher)
        self.ef_search = ef_search
        self._count = 0
        self._counts: dict[str, int] = {}  # faces per gallery, as of the last sync

    def load(self, from_file: bool = True) -> None:
        """Check model versions, make sure the HNSW index exists (built once per model dimension), read
        the counts. Seconds at any gallery size once the index exists (``from_file`` has no meaning here)."""
        self.check_versions()
        self.store.ensure_vector_index(self.space, self.dim)
        with self._sync_lock:
            self._refresh()
        if self.teacher is not None:
            self.teacher.load()

    def _refresh(self) -> None:
        # One snapshot: counts read after the seq in another transaction could already hold a change
        # committed between the two, which the next sync would then count a second time.
        self.seq, self._counts = self.store.vector_counts_as_of(self.space)
        self._count = sum(self._counts.values())

    def sync(self) -> int:
        """Bring the face counts up to the change log; returns how many entries were read. Counted by
        key, without reading the table: enrolments from their own rows (a primary-key lookup, in the
        snapshot the entries were read from), deletes from their entries, which say the face's gallery
        and whether it had a vector in this space (revision 0006). A face enrolled and deleted since the
        last sync is counted by neither (its row is gone from that snapshot, and its delete is skipped).
        The table is recounted (0.4 s at 1M faces, `lrface bench gallery`) after a 'reload', on
        ``CHANGES_COUNTED`` or more entries, on a delete whose entry does not say (older than 0006, or
        written without pgvector), and should a count ever go below zero."""
        if self.teacher is not None:
            self.teacher.sync()
        with self._sync_lock:
            pending, added = self.store.changes_and_added_vectors(self.space, self.seq, CHANGES_COUNTED)
            if not pending:
                return 0
            counts = None if len(pending) >= CHANGES_COUNTED else self._counted(pending, added)
            if counts is None:
                self._refresh()
            else:
                self._counts, self._count, self.seq = counts, sum(counts.values()), pending[-1].seq
            return len(pending)

    def _counted(self, pending: list[Change], added: dict[str, int]) -> dict[str, int] | None:
        """The counts after ``pending`` given ``added`` (its enrolled faces still present, per gallery),
        or None where they cannot be told by key."""
        counts = dict(self._counts)
        for gallery, count in added.items():
            counts[gallery] = counts.get(gallery, 0) + count
        enrolled = {c.face_id for c in pending if c.op == "add"}
        for c in pending:
            if c.op == "add" and c.face_id is not None:
                continue
            had = c.had(self.space)
            if c.op != "remove" or c.face_id is None or c.gallery is None or had is None:
                return None  # a reload, or a delete that does not say what the face had
            if had and c.face_id not in enrolled:  # one enrolled in this batch was never counted
                counts[c.gallery] = counts.get(c.gallery, 0) - 1
        if any(count < 0 for count in counts.values()):
            return None
        return {gallery: count for gallery, count in counts.items() if count}

    def search(
        self, query: np.ndarray, top_k: int, exact: bool = False, *, gallery: str = DEFAULT_GALLERY
    ) -> list[Match]:
        """Best-scoring subjects of ``gallery`` (each by its best face), highest first; ``exact`` scans
        every face of the gallery instead of walking the HNSW graph (the benchmark's ground truth)."""
        limit = max(top_k * 4, top_k + 8)
        exact = exact or self.scan_exactly(gallery, limit)
        rows = self.store.vector_search(self.space, self.dim, query, limit, self.ef_search, exact, gallery)
        best: dict[str, Match] = {}
        for face_id, subject, score in rows:
            if subject not in best:
                best[subject] = Match(subject, score, face_id)
        return sorted(best.values(), key=lambda m: m.score, reverse=True)[:top_k]

    def scan_exactly(self, gallery: str, limit: int) -> bool:
        """Whether ``gallery`` is scanned exactly rather than walked: a small gallery (under
        ``EXACT_BELOW`` faces, a scan of which costs less than a walk), or too small a part of the table for
        a filtered HNSW walk (it meets about ``count / total`` of the gallery's faces per face visited, so it
        needs ``limit * total / count`` visits, which must stay well within ``MAX_SCAN_TUPLES``). Counts are
        as of the last sync (a gallery not counted yet is scanned exactly: always right, and it is new)."""
        count = self._counts.get(gallery, 0)
        return count < self.EXACT_BELOW or limit * max(self._count, count) > count * (MAX_SCAN_TUPLES // 2)

    def count(self, gallery: str = DEFAULT_GALLERY) -> int:
        return self._counts.get(gallery, 0)

    def __len__(self) -> int:
        return self._count
