"""BatchNorm statistics that match the weights they are saved with."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def recalibrate_batch_norm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Replace every BatchNorm's running mean and variance by their plain average over ``batches``.

    Each batch (B x ... float32, the model's input) goes through ``model`` in training mode without a
    gradient; nothing but the BN buffers changes. Inference normalises with the running statistics, and
    after a few hundred steps with momentum 0.01 (the refiner's) they are still mostly their initial
    zeros and ones; averaging over batches seen with the final weights fixes that. The model is left in
    eval mode.

    Returns:
        The number of batches used (0 leaves the statistics as they were).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = {m: (m.momentum, m.running_mean.clone(), m.running_var.clone()) for m in norms}
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # None: a cumulative average, every batch weighted equally
    model.train()
    used = 0
    with torch.no_grad():
        for batch in batches:
            model(batch)
            used += 1
    for m, (momentum, mean, var) in saved.items():
        m.momentum = momentum
        if not used:
            m.running_mean.copy_(mean)
            m.running_var.copy_(var)
    model.eval()
    return used
