"""Top-k with the tie break MagNet's results depend on (``magnet-spec.md`` step 13)."""

from __future__ import annotations

import torch


def topk_lowest_index(values: torch.Tensor, k: int) -> torch.Tensor:
    """Flat indices of the ``k`` largest entries of ``values`` (N, float), ties broken by lowest index.

    The smoothed error map is full of ties (the median filter copies values), so which tied pixels make
    the cut changes the result. Returns int64 indices ordered by (value descending, index ascending);
    ``k >= N`` returns every index.
    """
    flat = values.reshape(-1)
    k = max(0, min(int(k), flat.numel()))
    # A stable sort keeps equal values in index order, which is exactly the lowest-index tie break.
    order = torch.sort(flat, descending=True, stable=True).indices
    return order[:k]
