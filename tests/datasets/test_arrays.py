"""NumpyArrayDataset: memory-mapped round trips, dtype, streaming lazy stacks, and atomic writes."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from kedro.io import DatasetError

from tlkedro.datasets import NumpyArrayDataset
from tlkedro.imaging.extraction import LazyArrayStack


def _rows(index: int, n_rows: int) -> np.ndarray:
    return np.full((n_rows, 1, 4, 4), index, dtype=np.float32)


def _fail(index: int) -> np.ndarray:
    raise RuntimeError(f"scan {index} is corrupt")


def _stack(
    recipes: list, rows: list[int], dtype: str = "float16", workers: int = 1
) -> LazyArrayStack:
    return LazyArrayStack(
        recipes=recipes, rows=rows, item_shape=(1, 4, 4), dtype=dtype, workers=workers
    )


def test_array_round_trip_is_memory_mapped_read_only(tmp_path):
    dataset = NumpyArrayDataset(filepath=str(tmp_path / "x" / "images.npy"))
    data = np.arange(2 * 1 * 3 * 5, dtype=np.float32).reshape(2, 1, 3, 5)
    dataset.save(data)
    loaded = dataset.load()
    assert isinstance(loaded, np.memmap) and not loaded.flags.writeable
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, data)
    assert dataset.exists()


# Two workers start a process pool (seconds, importing torch): one case covers that path.
@pytest.mark.parametrize(("workers", "dtype"), [(1, "float16"), (1, "float32"), (2, "float16")])
def test_lazy_stack_is_streamed_in_order_with_its_dtype(tmp_path, workers, dtype):
    rows = [1, 3, 2]
    recipes = [functools.partial(_rows, i, n) for i, n in enumerate(rows)]
    dataset = NumpyArrayDataset(filepath=str(tmp_path / "images.npy"))
    dataset.save(_stack(recipes, rows, dtype=dtype, workers=workers))
    loaded = dataset.load()
    assert loaded.shape == (6, 1, 4, 4) and loaded.dtype == np.dtype(dtype)
    assert loaded[:, 0, 0, 0].tolist() == [0, 1, 1, 1, 2, 2]


def test_an_empty_stack_saves_an_empty_array_of_the_right_shape(tmp_path):
    dataset = NumpyArrayDataset(filepath=str(tmp_path / "images.npy"))
    dataset.save(_stack([], []))
    assert dataset.load().shape == (0, 1, 4, 4)


def test_a_failing_recipe_leaves_no_file_behind(tmp_path):
    dataset = NumpyArrayDataset(filepath=str(tmp_path / "images.npy"))
    recipes = [
        functools.partial(_rows, 0, 1),
        functools.partial(_fail, 1),
        functools.partial(_rows, 2, 1),
    ]
    with pytest.raises(DatasetError, match="scan 1 is corrupt"):
        dataset.save(_stack(recipes, [1, 1, 1]))
    assert list(tmp_path.iterdir()) == []


def test_a_failing_save_keeps_the_previous_array(tmp_path):
    dataset = NumpyArrayDataset(filepath=str(tmp_path / "images.npy"))
    dataset.save(np.ones((2, 1, 4, 4), dtype=np.float16))
    with pytest.raises(DatasetError):
        dataset.save(_stack([functools.partial(_fail, 0)], [1]))
    assert dataset.load().sum() == 32
    assert [p.name for p in tmp_path.iterdir()] == ["images.npy"]


def test_a_recipe_returning_the_wrong_shape_is_named(tmp_path):
    dataset = NumpyArrayDataset(filepath=str(tmp_path / "images.npy"))
    with pytest.raises(
        DatasetError, match=r"_rows.*returned shape \(2, 1, 4, 4\), expected \(1, 1, 4, 4\)"
    ):
        dataset.save(_stack([functools.partial(_rows, 0, 2)], [1]))
    assert not dataset.exists()


def test_saving_something_else_is_refused(tmp_path):
    dataset = NumpyArrayDataset(filepath=str(tmp_path / "images.npy"))
    with pytest.raises(
        DatasetError,
        match=r"images\.npy: NumpyArrayDataset saves a numpy array or a LazyArrayStack, got list",
    ):
        dataset.save([[1.0, 2.0]])
