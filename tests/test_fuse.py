"""Fusion strategies fed with layers that cover part of a chunk (``region``), as the reader gives them."""

from __future__ import annotations

import numpy as np
import pytest

from mosaic.fuse import FirstNative, as_chunk, make_fuser

SHAPE = (4, 5)
LEFT = (slice(0, 4), slice(0, 3))  # columns 0-2
RIGHT = (slice(1, 3), slice(2, 5))  # rows 1-2, columns 2-4


def layer(value: float, region: tuple[slice, slice], hole: tuple[int, int] | None = None) -> np.ndarray:
    rows, cols = region
    data = np.full((rows.stop - rows.start, cols.stop - cols.start), value, dtype=np.float32)
    if hole is not None:
        data[hole] = np.nan
    return data


def whole(value: float, region: tuple[slice, slice], hole: tuple[int, int] | None = None) -> np.ndarray:
    return as_chunk(layer(value, region, hole), region, SHAPE)


@pytest.mark.parametrize("method", ["first", "min", "max", "mean", "count", "median"])
def test_region_layers_fuse_like_whole_chunk_layers(method):
    layers = [(1.0, LEFT, (0, 0)), (5.0, RIGHT, None), (3.0, (slice(0, 4), slice(0, 5)), (3, 4))]
    by_region, by_chunk = make_fuser(method, SHAPE), make_fuser(method, SHAPE)
    for value, region, hole in layers:
        by_region.feed(layer(value, region, hole), None, region)
        by_chunk.feed(whole(value, region, hole))
    np.testing.assert_array_equal(by_region.result(), by_chunk.result())


def test_first_keeps_the_first_valid_value_and_knows_what_is_left():
    fuser = make_fuser("first", SHAPE)
    assert fuser.pending() == (slice(0, 4), slice(0, 5))  # nothing fed: all of it
    fuser.feed(layer(1.0, LEFT, (2, 1)), None, LEFT)
    assert fuser.pending() == (slice(0, 4), slice(1, 5))  # the hole at (2, 1) and columns 3-4
    fuser.feed(layer(7.0, RIGHT), None, RIGHT)
    result = fuser.result()
    assert result[2, 2] == 1.0 and result[1, 4] == 7.0 and np.isnan(result[2, 1]) and np.isnan(result[0, 4])
    fuser.feed(layer(9.0, (slice(0, 4), slice(0, 5))), None, None)
    assert fuser.pending() is None and fuser.is_done
    assert fuser.result()[2, 1] == 9.0 and fuser.result()[2, 2] == 1.0


def test_first_native_fills_nodata_holes_in_the_band_dtype():
    fuser = FirstNative(SHAPE, "uint16", 0)
    scratch = fuser.scratch()
    assert scratch is not None  # before the first layer, the reader may write into the accumulator
    scratch[LEFT] = 4
    fuser.feed(scratch[LEFT], None, LEFT)  # a view of the scratch: nothing to copy
    assert fuser.scratch() is None
    fuser.feed(np.full((2, 3), 8, dtype="uint16"), None, RIGHT)
    result = fuser.result()
    assert result.dtype == np.uint16
    assert result[1, 2] == 4 and result[1, 3] == 8 and result[0, 4] == 0
    assert fuser.pending() == (slice(0, 4), slice(3, 5))


def test_a_discarded_scratch_is_nodata_again():
    fuser = FirstNative(SHAPE, "int16", -1)
    fuser.scratch()[0, :2] = 5  # a read that failed half-way
    fuser.discard_scratch()
    assert (fuser.result() == -1).all() and fuser.pending() == (slice(0, 4), slice(0, 5))
    first = make_fuser("first", SHAPE)
    first.scratch()[1, 1] = 3.0
    first.discard_scratch()
    assert np.isnan(first.result()).all()


def test_only_first_and_last_offer_a_scratch():
    for method in ("min", "max", "mean", "count", "median", "highest:B02"):
        assert make_fuser(method, SHAPE).scratch() is None
    assert make_fuser("last", SHAPE).scratch() is not None


@pytest.mark.parametrize("method", ["highest:quality", "lowest:quality"])
def test_ranking_prefers_ranked_pixels_but_never_drops_data_for_a_missing_rank(method):
    nan = np.nan
    fuser = make_fuser(method, (1, 4))
    # scene a: data everywhere, rank only at the first two pixels; scene b: data and rank at 1..3
    fuser.feed(np.array([[1.0, 1.0, 1.0, 1.0]]), np.array([[5.0, 5.0, nan, nan]]))
    fuser.feed(np.array([[nan, 2.0, 2.0, 2.0]]), np.array([[nan, 9.0, 1.0, nan]]))
    expect = [1.0, 2.0, 2.0, 1.0] if method.startswith("highest") else [1.0, 1.0, 2.0, 1.0]
    # pixel 0: only a has data; 1: both ranked; 2: only b ranked, so b; 3: neither ranked: a, fed first
    assert fuser.result().tolist() == [expect]
