"""Where the networks' weights come from, and the one function that builds a network with them.

Every path that runs or exports MagNet (``segment-local``, ``export``, the benchmarks, the tests) names
its weights the same way: the authors' checkpoints, one per network, or seeded random weights for
trying the bundle. :func:`weight_set` turns command-line style arguments into a :class:`WeightSet`,
whose sources are recorded in the exported repository and read back by :func:`weight_set_from_record`,
so an in-process run can use exactly the weights a server runs.

torch is imported only when a network is built.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magnet_triton.errors import MagnetError
from magnet_triton.networks.registry import REFINER_NETWORK

if TYPE_CHECKING:
    from torch import nn

    from magnet_triton.settings import Settings

NO_WEIGHTS = "give --backbone and --refiner checkpoints, or --random-weights SEED"


@dataclass(frozen=True)
class WeightSource:
    """The weights of one network: a checkpoint file in the authors' layout, or a random seed."""

    checkpoint: Path | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.seed is None):
            raise MagnetError("a network's weights come from a checkpoint or a seed, exactly one of them")

    def describe(self) -> str:
        """``checkpoint NAME`` or ``random weights, seed N``, for progress lines."""
        if self.checkpoint is not None:
            return f"checkpoint {self.checkpoint.name}"
        return f"random weights, seed {self.seed}"

    def record(self) -> dict[str, Any]:
        """What a repository records of it (with the checkpoint's SHA-256, so a swap is noticed)."""
        if self.checkpoint is not None:
            from magnet_triton.export.engine_record import file_sha256

            return {
                "weights": "checkpoint",
                "path": str(self.checkpoint),
                "sha256": file_sha256(self.checkpoint),
            }
        return {"weights": "random", "seed": self.seed}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> WeightSource:
        """The inverse of :meth:`record`."""
        if record.get("weights") == "random":
            return cls(seed=int(record["seed"]))
        return cls(checkpoint=Path(record["path"]))

    def build(self, name: str, num_classes: int) -> nn.Module:
        """Network ``name`` with these weights, in eval mode (see :func:`network_with_weights`)."""
        return network_with_weights(name, num_classes, checkpoint=self.checkpoint, random_seed=self.seed)


@dataclass(frozen=True)
class WeightSet:
    """The weights of a preset's networks: the backbone's, and one source per refiner (scale transition)."""

    backbone: WeightSource
    refiners: tuple[WeightSource, ...]

    @property
    def random(self) -> bool:
        """True when any network has random weights (its class maps then mean nothing)."""
        return any(s.seed is not None for s in (self.backbone, *self.refiners))

    def record(self) -> dict[str, dict[str, Any]]:
        """``{"backbone": ..., "refiner_1": ..., ...}``, as repositories record it."""
        entries = {"backbone": self.backbone.record()}
        entries.update({f"refiner_{i + 1}": s.record() for i, s in enumerate(self.refiners)})
        return entries


def weight_set(
    settings: Settings,
    backbone_checkpoint: str | os.PathLike[str] | None,
    refiner_checkpoints: Sequence[str | os.PathLike[str]] = (),
    random_seed: int | None = None,
) -> WeightSet:
    """The weights of ``settings``' networks from checkpoint paths and/or a seed.

    Refiners: one file per scale transition (``n_refiners`` files), one file shared by every refiner,
    or none with a seed. A network without a checkpoint gets seeded random weights: the backbone seed
    ``random_seed``, refiner ``i`` seed ``random_seed + 1 + i`` (so the versions differ).

    Raises:
        MagnetError: a network has neither a checkpoint nor a seed, a file is missing, or the refiner
            file count fits neither form.
    """
    if backbone_checkpoint is None and random_seed is None:
        raise MagnetError(f"no backbone checkpoint: {NO_WEIGHTS}")
    files = [Path(p) for p in refiner_checkpoints]
    n = settings.n_refiners
    if not files:
        if random_seed is None:
            raise MagnetError(
                f"no refiner checkpoint: give {n} refiner file(s) or one shared one; {NO_WEIGHTS}"
            )
        refiners = tuple(WeightSource(seed=int(random_seed) + 1 + i) for i in range(n))
    elif len(files) == 1:
        refiners = (WeightSource(checkpoint=files[0]),) * n
    elif len(files) == n:
        refiners = tuple(WeightSource(checkpoint=f) for f in files)
    else:
        raise MagnetError(
            f"got {len(files)} refiner checkpoints, but these settings use {n} refiner(s) "
            f"(one per scale transition): give {n} files in scale order, or one shared file"
        )
    if backbone_checkpoint is not None:
        backbone = WeightSource(checkpoint=Path(backbone_checkpoint))
    else:
        backbone = WeightSource(seed=int(random_seed))  # type: ignore[arg-type]
    for source in (backbone, *refiners):
        if source.checkpoint is not None and not source.checkpoint.is_file():
            raise MagnetError(f"checkpoint file not found: {source.checkpoint}")
    return WeightSet(backbone, refiners)


def weight_set_from_record(networks: Mapping[str, Mapping[str, Any]], n_refiners: int) -> WeightSet:
    """The :class:`WeightSet` a repository recorded (``provenance.networks`` of its manifest)."""
    try:
        return WeightSet(
            WeightSource.from_record(networks["backbone"]),
            tuple(WeightSource.from_record(networks[f"refiner_{i + 1}"]) for i in range(n_refiners)),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise MagnetError(f"the repository's record of its weights is incomplete: {e!r}") from e


def network_with_weights(
    name: str,
    num_classes: int,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    random_seed: int | None = None,
) -> nn.Module:
    """Network ``name`` in eval mode with the checkpoint's weights (loaded strictly), or seeded random ones.

    Raises:
        MagnetError: neither given, an unknown network, or a checkpoint that does not fit it.
    """
    from magnet_triton.networks import build_network

    model = build_network(name, num_classes)
    if checkpoint is not None:
        from magnet_triton.networks.checkpoint import load_checkpoint

        load_checkpoint(model, checkpoint)
    elif random_seed is not None:
        from magnet_triton.networks.checkpoint import random_state_dict

        model.load_state_dict(random_state_dict(name, num_classes, int(random_seed)))
    else:
        raise MagnetError(f"{name}: give a checkpoint or a random-weights seed")
    return model.eval()


def build_networks(settings: Settings, weights: WeightSet) -> tuple[nn.Module, list[nn.Module]]:
    """The backbone and the refiners of ``settings`` with ``weights``, in eval mode."""
    backbone = weights.backbone.build(settings.backbone, settings.num_classes)
    refiners = [s.build(REFINER_NETWORK, settings.num_classes) for s in weights.refiners]
    return backbone, refiners
