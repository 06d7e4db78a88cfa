"""LFW access: the ``images/<Name>/<Name>_NNNN.jpg`` tree, the official pairs files, and splits.

Any user dataset in the same one-folder-per-identity layout loads with :func:`list_identities`.
"""

from __future__ import annotations

import random
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".pgm", ".ppm"})
PAIRS_FILES = ("pairs.txt", "pairsDevTrain.txt", "pairsDevTest.txt")
# The official archive and its mirror for the pairs files (used only when the data is missing).
LFW_URLS = {
    "images": ["http://vis-www.cs.umass.edu/lfw/lfw-deepfunneled.tgz"],
    "pairs.txt": ["http://vis-www.cs.umass.edu/lfw/pairs.txt", "https://ndownloader.figshare.com/files/5976006"],
    "pairsDevTrain.txt": [
        "http://vis-www.cs.umass.edu/lfw/pairsDevTrain.txt",
        "https://ndownloader.figshare.com/files/5976012",
    ],
    "pairsDevTest.txt": [
        "http://vis-www.cs.umass.edu/lfw/pairsDevTest.txt",
        "https://ndownloader.figshare.com/files/5976009",
    ],
}


@dataclass(frozen=True)
class Pair:
    """One verification pair; images are addressed as (name, 1-based index) like the pairs files."""

    name_a: str
    index_a: int
    name_b: str
    index_b: int

    @property
    def same(self) -> bool:
        return self.name_a == self.name_b


@dataclass
class Split:
    """Identity-disjoint split: nobody appears in two parts."""

    train: dict[str, list[Path]] = field(default_factory=dict)
    val: dict[str, list[Path]] = field(default_factory=dict)
    test: dict[str, list[Path]] = field(default_factory=dict)


def images_dir(root: Path) -> Path:
    """``root/images`` when present (our layout), else ``root`` itself (a plain identity tree)."""
    return root / "images" if (root / "images").is_dir() else root


def list_identities(root: Path) -> dict[str, list[Path]]:
    """Map each identity folder name to its sorted image files."""
    base = images_dir(root)
    if not base.is_dir():
        raise FileNotFoundError(f"no face image folder at {base} (set LRFACE_DATA or run `lrface fetch-lfw`)")
    identities: dict[str, list[Path]] = {}
    for person in sorted(p for p in base.iterdir() if p.is_dir()):
        files = sorted(f for f in person.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            identities[person.name] = files
    return identities


def image_path(root: Path, name: str, index: int) -> Path:
    return images_dir(root) / name / f"{name}_{index:04d}.jpg"


def read_pairs(path: Path) -> list[Pair]:
    """Parse an LFW pairs file (View 1 or View 2): 3 fields for a match, 4 for a mismatch."""
    pairs: list[Pair] = []
    lines = path.read_text().splitlines()
    for line_no, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if len(fields) == 3:
            pairs.append(Pair(fields[0], int(fields[1]), fields[0], int(fields[2])))
        elif len(fields) == 4:
            pairs.append(Pair(fields[0], int(fields[1]), fields[2], int(fields[3])))
        elif fields:
            raise ValueError(f"{path}:{line_no}: expected 3 or 4 fields, got {len(fields)}")
    return pairs


def people_in(pairs: Iterable[Pair]) -> set[str]:
    return {name for pair in pairs for name in (pair.name_a, pair.name_b)}


def identity_split(root: Path, val_fraction: float = 0.1, seed: int = 0) -> Split:
    """Everyone in ``pairsDevTest.txt`` goes to test; the rest split by identity into train / val."""
    identities = list_identities(root)
    test_people = people_in(read_pairs(root / "pairsDevTest.txt"))
    rest = sorted(name for name in identities if name not in test_people)
    rng = random.Random(seed)
    # Validation needs matched pairs, so draw it from people with at least two images.
    multi = [name for name in rest if len(identities[name]) >= 2]
    val_people = set(rng.sample(multi, k=int(round(len(multi) * val_fraction))))
    split = Split()
    for name, files in identities.items():
        part = split.test if name in test_people else split.val if name in val_people else split.train
        part[name] = files
    return split


def make_pairs(
    identities: dict[str, list[Path]], n_pairs: int | None = None, seed: int = 0, max_per_person: int | None = None
) -> list[tuple[Path, Path, bool]]:
    """Matched pairs (every pair of images of one person, at most ``max_per_person`` of each, or
    ``n_pairs`` in all) and as many mismatched.

    Used for validation pairs and for the extended test pair set, always from one split's people.
    The cap keeps a few people with hundreds of photos from owning most matched pairs.
    """
    rng = random.Random(seed)
    matched = []
    for files in identities.values():
        own = [(files[i], files[j], True) for i in range(len(files)) for j in range(i + 1, len(files))]
        if max_per_person is not None and len(own) > max_per_person:
            own = rng.sample(own, max_per_person)
        matched += own
    rng.shuffle(matched)
    if n_pairs is not None:
        matched = matched[:n_pairs]
    names = sorted(identities)
    mismatched: list[tuple[Path, Path, bool]] = []
    seen: set[tuple[Path, Path]] = set()
    while len(mismatched) < len(matched) and len(names) >= 2:
        a, b = rng.sample(names, 2)
        key = (rng.choice(identities[a]), rng.choice(identities[b]))
        if key not in seen:
            seen.add(key)
            mismatched.append((key[0], key[1], False))
    return matched + mismatched


def fetch_lfw(root: Path) -> Path:
    """Download LFW (deep-funneled) and its pairs files into ``root`` where missing; returns root."""
    root.mkdir(parents=True, exist_ok=True)
    for name in PAIRS_FILES:
        target = root / name
        if not target.exists():
            target.write_bytes(_download(LFW_URLS[name]))
    if not (root / "images").is_dir():
        archive = root / "lfw-deepfunneled.tgz"
        if not archive.exists():
            archive.write_bytes(_download(LFW_URLS["images"]))
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
        (root / "lfw-deepfunneled").rename(root / "images")
        archive.unlink()
    return root


def _download(urls: list[str]) -> bytes:
    import httpx

    errors = []
    for url in urls:
        try:
            response = httpx.get(url, follow_redirects=True, timeout=600)
            response.raise_for_status()
            return response.content
        except httpx.HTTPError as exc:
            errors.append(f"{url}: {exc}")
    raise RuntimeError("could not download LFW: " + "; ".join(errors))
