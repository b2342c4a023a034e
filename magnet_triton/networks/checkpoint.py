"""Loading, saving and making checkpoints in the authors' layout.

An authors' checkpoint is a state dict, sometimes with every key prefixed by ``model.``, sometimes
wrapped as ``{"state_dict": ...}``. Loading is strict: a file that does not fit the network raises
``MagnetError`` naming the missing, unexpected and mis-shaped keys, never a bare traceback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from magnet_triton.errors import MagnetError
from magnet_triton.networks import build_network, network_entry
from magnet_triton.networks.registry import NETWORKS

_LIST_LIMIT = 10  # keys shown per category in an error message
_AUTHORS_PREFIX = "model."  # what the authors' training code puts on every key


def unwrap_state_dict(
    checkpoint: Any, source: str = "checkpoint", prefixes: tuple[str, ...] | None = None
) -> dict[str, torch.Tensor]:
    """The plain state dict inside a loaded checkpoint: ``{"state_dict": ...}`` unwrapped, prefix stripped.

    A prefix (the registry's ``checkpoint_prefix`` of the networks, ``model.`` for the authors' code;
    ``prefixes`` overrides) is stripped only when every key carries it. ``source`` names the file.

    Raises:
        MagnetError: not a dict, or a value that is not a tensor.
    """
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, Mapping):
        raise MagnetError(
            f"{source}: expected a state dict (a dict of tensors), found {type(checkpoint).__name__}"
        )
    keys = [str(k) for k in checkpoint]
    if prefixes is None:
        prefixes = tuple(dict.fromkeys(e.checkpoint_prefix for e in NETWORKS.values() if e.checkpoint_prefix))
    strip = next((p for p in prefixes if keys and all(k.startswith(p) for k in keys)), "")
    state: dict[str, torch.Tensor] = {}
    for key, value in checkpoint.items():
        if not isinstance(value, torch.Tensor):
            raise MagnetError(f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor")
        state[str(key)[len(strip) :]] = value
    return state


def _listing(title: str, items: list[str]) -> str:
    shown = items[:_LIST_LIMIT]
    more = f", ... ({len(items) - len(shown)} more)" if len(items) > len(shown) else ""
    return f"{title} ({len(items)}): {', '.join(shown)}{more}"


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise ``MagnetError`` unless ``state`` has exactly the model's keys with the model's shapes."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} (checkpoint {list(state[k].shape)}, network {list(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if not (missing or unexpected or misshaped):
        return
    parts = [
        _listing(title, items)
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("mis-shaped keys", misshaped),
        )
        if items
    ]
    raise MagnetError(
        f"checkpoint {source} does not fit the network {type(model).__name__}: "
        + "; ".join(parts)
        + ". Check that the checkpoint is for this network and this number of classes."
    )


def apply_state_dict(model: nn.Module, checkpoint: Any, source: str = "checkpoint") -> None:
    """Load an already-loaded checkpoint (any accepted form) into ``model``, strictly.

    Raises:
        MagnetError: the checkpoint is not a state dict or does not fit the model.
    """
    state = unwrap_state_dict(checkpoint, source)
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True)


def read_checkpoint(path: str | os.PathLike[str]) -> Any:
    """``torch.load`` on the CPU with ``weights_only=True``, turning I/O and format errors into MagnetError."""
    file = Path(path)
    if not file.is_file():
        raise MagnetError(f"checkpoint file not found: {file}")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors all mean "not a readable checkpoint"
        if "Weights only load failed" in str(e):
            # PyTorch's own message is a page of advice on unsafe loading; say what matters here.
            raise MagnetError(
                f"cannot read checkpoint {file}: it holds Python objects besides tensors, and untrusted "
                "files are only loaded with torch.load(weights_only=True); load it in a trusted session "
                "and re-save its state dict with torch.save(model.state_dict(), path)"
            ) from e
        first_line = str(e).splitlines()[0] if str(e) else ""
        raise MagnetError(
            f"cannot read checkpoint {file}: {type(e).__name__}: {first_line} "
            "(expected a file written by torch.save holding a state dict)"
        ) from e


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load the checkpoint file at ``path`` into ``model`` strictly (see module docstring for the forms).

    Raises:
        MagnetError: missing, unreadable or corrupt file, not a state dict, or keys/shapes that differ
            from the model's (the message names the file and the keys).
    """
    apply_state_dict(model, read_checkpoint(path), source=str(path))


def save_checkpoint(
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    prefix: bool = False,
    *,
    wrap: bool = False,
) -> None:
    """Write ``state_dict`` with ``torch.save``; ``prefix`` adds ``model.`` to every key, ``wrap`` nests
    it as ``{"state_dict": ...}`` (the forms the authors' checkpoints come in)."""
    state = {(_AUTHORS_PREFIX + k if prefix else k): v for k, v in state_dict.items()}
    torch.save({"state_dict": state} if wrap else state, Path(path))


def random_state_dict(name: str, num_classes: int, seed: int) -> dict[str, torch.Tensor]:
    """Deterministic, seeded weights for network ``name`` in the authors' layout (for trying the bundle).

    Convolutions get He-normal weights (fan-in, ReLU gain) so activations keep their scale through the
    depth of the network; BN statistics and affine parameters are drawn near the identity
    (weight ~ U(0.8, 1.2), bias and running_mean ~ N(0, 0.05^2), running_var ~ U(0.8, 1.2)). The last BN
    of every path that is added onto another (residual branches, HRNet fuse paths) is scaled down
    (weight ~ 0.2) so that the dozens of additions in these networks do not blow the activations up, and
    the classifier weights are centred. The result, in eval mode, gives finite logits of moderate size
    whose argmax varies across pixels.

    Returns:
        A state dict of CPU float32 tensors (int64 ``num_batches_tracked``) with the network's keys.
    """
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = build_network(name, num_classes)
        with torch.no_grad():
            branch_ends = residual_end_norms(model)
            for module_name, module in model.named_modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                    if module.bias is not None:
                        nn.init.normal_(module.bias, 0.0, 0.05)
                elif isinstance(module, nn.BatchNorm2d):
                    scale = 0.2 if module_name in branch_ends else 1.0
                    module.weight.uniform_(0.8 * scale, 1.2 * scale)
                    module.bias.normal_(0.0, 0.05)
                    module.running_mean.normal_(0.0, 0.05)
                    module.running_var.uniform_(0.8, 1.2)
            # Post-ReLU features have a positive mean, so random class weights add a per-class offset
            # that can outweigh the spatial signal and paint one class everywhere; zero-mean weights
            # (per class, over input channels) mostly cancel it.
            for layer_name in network_entry(name).classifier_layers:
                weight = model.get_submodule(layer_name).weight
                weight -= weight.mean(dim=(1, 2, 3), keepdim=True)
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
    finally:
        # Leave the caller's global RNG as it was: seeding here must not change anything else.
        torch.random.set_rng_state(generator_state)


def residual_end_norms(model: nn.Module) -> set[str]:
    """Names of the BNs whose output is added onto another path.

    Each block that has such BNs says which, relative to itself, with a ``residual_end_norms()`` method
    (the last BN of a residual branch, of an HRNet fuse path), so a new network's blocks need no change
    here.
    """
    names = set()
    for name, module in model.named_modules():
        method = getattr(module, "residual_end_norms", None)
        if callable(method):
            names.update(f"{name}.{norm}" if name else norm for norm in method())
    return names


__all__ = [
    "apply_state_dict",
    "check_state_dict",
    "load_checkpoint",
    "random_state_dict",
    "read_checkpoint",
    "residual_end_norms",
    "save_checkpoint",
    "unwrap_state_dict",
]
