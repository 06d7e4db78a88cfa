from __future__ import annotations

from pathlib import Path

import pytest

from lrface.data.lfw import identity_split, list_identities, make_pairs, people_in, read_pairs


def test_dev_test_people_are_never_in_training_or_validation(lfw_root: Path) -> None:
    split = identity_split(lfw_root)
    test_people = people_in(read_pairs(lfw_root / "pairsDevTest.txt"))
    assert test_people == set(split.test)
    assert not test_people & set(split.train) and not test_people & set(split.val)
    assert not set(split.train) & set(split.val)
    assert len(split.train) > 4000 and len(split.val) > 50
    assert all(len(files) >= 2 for files in split.val.values())


def test_official_pairs_files_parse(lfw_root: Path) -> None:
    dev_test = read_pairs(lfw_root / "pairsDevTest.txt")
    assert len(dev_test) == 1000 and sum(p.same for p in dev_test) == 500
    assert len(read_pairs(lfw_root / "pairs.txt")) == 6000


def test_split_is_seeded(lfw_root: Path) -> None:
    assert set(identity_split(lfw_root, seed=3).val) == set(identity_split(lfw_root, seed=3).val)
    assert set(identity_split(lfw_root, seed=3).val) != set(identity_split(lfw_root, seed=4).val)


def test_user_dataset_layout_and_pairs(tmp_path: Path) -> None:
    for person, count in (("alice", 3), ("bob", 2), ("carol", 1)):
        (tmp_path / person).mkdir()
        for i in range(count):
            (tmp_path / person / f"{i}.jpg").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("ignored")
    identities = list_identities(tmp_path)
    assert sorted(identities) == ["alice", "bob", "carol"]
    pairs = make_pairs(identities, seed=0)
    matched = [p for p in pairs if p[2]]
    assert len(matched) == 3 + 1 and len(pairs) == 2 * len(matched)
    assert all(a.parent.name != b.parent.name for a, b, same in pairs if not same)


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="LRFACE_DATA"):
        list_identities(tmp_path / "nope")


def test_extra_training_people_never_enter_validation_or_test(tmp_path: Path) -> None:
    from lrface.data.lfw import Split
    from training.data_prep import training_identities

    extra = tmp_path / "celeba-299"
    for person, count in (("101", 2), ("202", 3)):
        (extra / "images" / person).mkdir(parents=True)
        for i in range(count):
            (extra / "images" / person / f"{i}.jpg").write_bytes(b"x")
    lfw_file = tmp_path / "a.jpg"
    split = Split(train={"Ann": [lfw_file]}, val={"Bob": [lfw_file]}, test={"Cy": [lfw_file]})
    people = training_identities(split, [extra])
    assert sorted(people) == ["Ann", "celeba-299/101", "celeba-299/202"]
    assert len(people["celeba-299/202"]) == 3 and split.val == {"Bob": [lfw_file]}
