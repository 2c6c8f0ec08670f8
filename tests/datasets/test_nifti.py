"""NiftiCollectionDataset: lazy loading, parallel round trips, atomic writes, and never overwriting user data."""

from __future__ import annotations

import dataclasses
import functools
import os
import pickle

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError

from tlkedro.datasets import NiftiCollectionDataset, NiftiRef
from tlkedro.datasets.nifti import MARKER

UKB_GLOB = "*/T1/T1_brain_to_MNI.nii.gz"


def _image(value: int) -> nib.Nifti1Image:
    data = np.full((4, 5, 6), value, dtype=np.int16)
    return nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))


def _ukb_key(eid: int) -> str:
    return f"{eid}/T1/T1_brain_to_MNI.nii.gz"


@pytest.mark.parametrize("workers", [1, 2])
def test_images_and_recipes_round_trip_as_sorted_lazy_references(tmp_path, workers):
    dataset = NiftiCollectionDataset(path=str(tmp_path / "ukb"), glob=UKB_GLOB, workers=workers)
    dataset.save({_ukb_key(3000000): _image(3), _ukb_key(1000000): functools.partial(_image, 1)})

    loaded = dataset.load()

    assert list(loaded) == [_ukb_key(1000000), _ukb_key(3000000)]
    ref = loaded[_ukb_key(1000000)]
    assert isinstance(ref, NiftiRef) and ref.path.is_absolute()
    assert ref.path == (tmp_path / "ukb" / _ukb_key(1000000)).resolve()
    img = pickle.loads(pickle.dumps(ref)).load()
    assert np.array_equal(np.asarray(img.dataobj), np.full((4, 5, 6), 1))
    assert np.allclose(img.affine, np.diag([2.0, 2.0, 2.0, 1.0]))
    assert ref.path.read_bytes()[:2] == b"\x1f\x8b"  # gzip, as the .nii.gz name says


def test_loading_lists_files_without_opening_them(tmp_path):
    broken = tmp_path / "1000001" / "T1" / "T1_brain_to_MNI.nii.gz"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"")
    (tmp_path / "1000001" / "T1" / "notes.txt").write_text("not matched by the glob")

    loaded = NiftiCollectionDataset(path=str(tmp_path), glob=UKB_GLOB).load()

    # The empty file is listed: it reaches ingestion, which quarantines it.
    assert list(loaded) == [_ukb_key(1000001)]


def test_double_star_matches_any_number_of_folders(tmp_path):
    dataset = NiftiCollectionDataset(
        path=str(tmp_path / "bids"), glob="sub-*/**/anat/*_T1w.nii.gz", workers=1
    )
    keys = ["sub-1/anat/sub-1_T1w.nii.gz", "sub-2/ses-a/anat/sub-2_ses-a_T1w.nii.gz"]
    dataset.save({key: _image(0) for key in keys})
    assert list(dataset.load()) == keys


def test_loading_a_missing_folder_names_it(tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path / "absent")):
        NiftiCollectionDataset(path=str(tmp_path / "absent"), glob=UKB_GLOB).load()


def test_refuses_to_write_into_a_foreign_non_empty_folder(tmp_path):
    user_file = tmp_path / "1000001" / "T1" / "T1_brain_to_MNI.nii.gz"
    user_file.parent.mkdir(parents=True)
    user_file.write_bytes(b"someone's scan")
    dataset = NiftiCollectionDataset(path=str(tmp_path), glob=UKB_GLOB, workers=1)

    with pytest.raises(
        DatasetError, match=rf"Refusing to write .* into {tmp_path}: the folder is not empty"
    ):
        dataset.save({_ukb_key(1000001): _image(1)})

    assert user_file.read_bytes() == b"someone's scan"
    assert not (tmp_path / MARKER).exists()


def test_writes_into_an_existing_empty_folder_and_marks_it(tmp_path):
    dataset = NiftiCollectionDataset(path=str(tmp_path), glob=UKB_GLOB, workers=1)
    dataset.save({_ukb_key(1000001): _image(1)})
    assert (tmp_path / MARKER).is_file()
    assert list(dataset.load()) == [_ukb_key(1000001)]


def test_saving_again_replaces_its_own_collection(tmp_path):
    dataset = NiftiCollectionDataset(path=str(tmp_path / "ukb"), glob=UKB_GLOB, workers=1)
    dataset.save({_ukb_key(1000001): _image(1), _ukb_key(1000002): _image(2)})
    # A sibling file that the glob does not match stays.
    (tmp_path / "ukb" / "ukb_showcase.csv").write_text("eid\n")

    dataset.save({_ukb_key(1000002): _image(5)})

    loaded = dataset.load()
    assert list(loaded) == [_ukb_key(1000002)]
    assert np.asarray(loaded[_ukb_key(1000002)].load().dataobj).max() == 5
    assert (tmp_path / "ukb" / "ukb_showcase.csv").exists()
    assert not (tmp_path / "ukb" / "1000001").exists()  # no empty subject folder is left behind


def test_an_interrupted_write_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    dataset = NiftiCollectionDataset(path=str(tmp_path), glob=UKB_GLOB, workers=1)
    dataset.save({_ukb_key(1000001): _image(1)})
    old_bytes = (tmp_path / _ukb_key(1000001)).read_bytes()

    def crash(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("tlkedro.datasets.nifti.os.fsync", crash)
    with pytest.raises(DatasetError, match="disk full"):
        dataset.save({_ukb_key(1000001): _image(9), _ukb_key(1000002): _image(2)})

    assert (tmp_path / _ukb_key(1000001)).read_bytes() == old_bytes
    assert not (tmp_path / _ukb_key(1000002)).exists()
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != MARKER]
    assert leftovers == [tmp_path / _ukb_key(1000001)]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("sub-1/anat/sub-1_T1w.nii.gz", "match the dataset's glob"),
        ("../1000001/T1/T1_brain_to_MNI.nii.gz", "relative paths inside the folder"),
    ],
)
def test_keys_that_loading_would_not_find_are_refused_before_writing(tmp_path, key, message):
    dataset = NiftiCollectionDataset(path=str(tmp_path / "ukb"), glob=UKB_GLOB, workers=1)
    with pytest.raises(DatasetError, match=message):
        dataset.save({key: _image(1)})
    assert not (tmp_path / "ukb").exists()


def test_items_must_be_images_or_recipes(tmp_path):
    dataset = NiftiCollectionDataset(path=str(tmp_path), glob=UKB_GLOB, workers=1)
    with pytest.raises(DatasetError, match="expected a nibabel Nifti1Image or a recipe"):
        dataset.save({_ukb_key(1000001): np.zeros((2, 2, 2))})


def test_exists_and_describe(tmp_path):
    dataset = NiftiCollectionDataset(path=str(tmp_path / "ukb"), glob=UKB_GLOB, workers=1)
    assert not dataset.exists()
    dataset.save({_ukb_key(1000001): _image(1)})
    assert dataset.exists()
    assert dataset._describe() == {"path": str(tmp_path / "ukb"), "glob": UKB_GLOB, "workers": 1}


@dataclasses.dataclass(frozen=True)
class _CountedRecipe:
    """A fingerprinted recipe that records each evaluation in a log file."""

    value: int
    fingerprint: str
    log: str

    def __call__(self) -> tuple[nib.Nifti1Image, dict]:
        with open(self.log, "a") as handle:
            handle.write(f"{self.value}\n")
        return _image(self.value), {"value": self.value}


def test_fingerprinted_recipes_are_reused_until_their_fingerprint_changes(tmp_path):
    dataset = NiftiCollectionDataset(path=str(tmp_path / "out"), glob=UKB_GLOB, workers=1)
    log = tmp_path / "calls.log"
    dataset.save(
        {
            _ukb_key(1): _CountedRecipe(1, "a", str(log)),
            _ukb_key(2): _CountedRecipe(2, "a", str(log)),
        }
    )
    assert dataset.load()[_ukb_key(1)].sidecar() == {"value": 1, "fingerprint": "a"}
    dataset.save(
        {
            _ukb_key(1): _CountedRecipe(1, "a", str(log)),
            _ukb_key(2): _CountedRecipe(5, "b", str(log)),
        }
    )
    assert log.read_text().split() == ["1", "2", "5"]  # 1 reused, 2 stale: recomputed
    loaded = dataset.load()
    assert np.asanyarray(loaded[_ukb_key(2)].load().dataobj).max() == 5
    assert loaded[_ukb_key(2)].sidecar()["fingerprint"] == "b"
    dataset.save({_ukb_key(2): _CountedRecipe(5, "b", str(log))})
    assert set(dataset.load()) == {_ukb_key(2)}
    assert not (tmp_path / "out" / "1" / "T1").exists()  # the dropped file went with its sidecar


def _interrupted() -> nib.Nifti1Image:
    raise RuntimeError("killed halfway")


def test_a_collection_interrupted_halfway_does_not_exist_until_a_save_finishes(tmp_path):
    dataset = NiftiCollectionDataset(path=str(tmp_path / "out"), glob=UKB_GLOB, workers=1)
    dataset.save({_ukb_key(1000001): _image(1)})
    assert dataset.exists()

    with pytest.raises(Exception, match="killed halfway"):
        dataset.save({_ukb_key(1000001): _image(5), _ukb_key(1000002): _interrupted})

    assert (tmp_path / "out" / _ukb_key(1000001)).is_file()  # written before the interruption
    assert not dataset.exists()
    assert not NiftiCollectionDataset(path=str(tmp_path / "out"), glob=UKB_GLOB).exists()
    dataset.save({_ukb_key(1000001): _image(5), _ukb_key(1000002): _image(2)})
    assert dataset.exists()


def test_a_folder_it_did_not_write_exists_when_a_file_matches(tmp_path):
    NiftiCollectionDataset(path=str(tmp_path / "out"), glob=UKB_GLOB, workers=1).save({})
    assert NiftiCollectionDataset(
        path=str(tmp_path / "out"), glob=UKB_GLOB
    ).exists()  # empty, finished
    foreign = tmp_path / "raw" / _ukb_key(1000001)
    foreign.parent.mkdir(parents=True)
    dataset = NiftiCollectionDataset(path=str(tmp_path / "raw"), glob=UKB_GLOB)
    assert not dataset.exists()
    nib.save(_image(1), foreign)
    assert dataset.exists()


def test_the_fingerprint_follows_the_files_names_and_contents(tmp_path):
    dataset = NiftiCollectionDataset(path=str(tmp_path / "raw"), glob=UKB_GLOB)
    assert dataset.fingerprint() == "absent"
    first = tmp_path / "raw" / _ukb_key(1000001)
    first.parent.mkdir(parents=True)
    nib.save(_image(1), first)
    one = dataset.fingerprint()
    assert dataset.fingerprint() == one
    nib.save(_image(2), tmp_path / "raw" / "other.nii.gz")  # outside the glob
    assert dataset.fingerprint() == one
    nib.save(_image(3), first.with_name("T1_brain_to_MNI.nii.gz"))
    os.utime(first, ns=(1, 1))
    assert dataset.fingerprint() != one


def _table(rows: int) -> pd.DataFrame:
    return pd.DataFrame({"roi_0": np.arange(rows, dtype=float), "roi_1": np.ones(rows)})


def test_tsv_keys_are_written_from_recipes_of_tables(tmp_path):
    dataset = NiftiCollectionDataset(path=str(tmp_path / "ts"), glob="*_timeseries.tsv", workers=1)
    dataset.save({"sub-1_timeseries.tsv": functools.partial(_table, 3)})

    [(key, ref)] = dataset.load().items()
    assert key == "sub-1_timeseries.tsv"
    pd.testing.assert_frame_equal(pd.read_csv(ref.path, sep="\t"), _table(3))
    with pytest.raises(DatasetError, match="needs a recipe"):
        dataset.save({"sub-2_timeseries.tsv": _table(3)})
    with pytest.raises(DatasetError, match="not a DataFrame"):
        dataset.save({"sub-2_timeseries.tsv": functools.partial(np.zeros, 3)})
