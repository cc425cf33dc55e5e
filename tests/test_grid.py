"""The before/after picture: its columns, and the toy world's ideal column."""

from __future__ import annotations

import pytest
import torch

from rewrite.eval.grid import before_after_grid


def test_columns_with_reference_and_ideal() -> None:
    size, scale, pad = 8, 2, 2
    before, after = torch.full((2, 3, size, size), -1.0), torch.full((2, 3, size, size), 1.0)
    ideal = torch.zeros(2, 3, size, size)
    ref = torch.full((3, size, size), 0.5)
    rows = [(ref, None, before[0], after[0], None), (None, None, before[1], after[1], None)]
    tile = size * scale + pad
    plain = before_after_grid(rows, size, scale=scale)
    grid = before_after_grid(rows, size, scale=scale, ideal=ideal)
    assert plain.shape == (3, pad + 2 * tile, pad + 4 * tile)  # reference, before, after, diff
    assert grid.shape == (3, pad + 2 * tile, pad + 5 * tile)  # ... and the ideal
    y = pad + 1
    assert grid[:, y, pad + 1 + 4 * tile].tolist() == [128, 128, 128]  # ideal 0 -> mid grey
    assert grid[:, y, pad + 1 + 2 * tile].tolist() == [255, 255, 255]  # after 1 -> white
    with pytest.raises(ValueError, match="ideal images"):
        before_after_grid(rows, size, ideal=ideal[:1])
