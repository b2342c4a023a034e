"""The training loop: the backbone first, then each refiner on the frozen backbone's predictions.

Phases run in order, ``backbone``, ``refiner_1`` ... ``refiner_n`` (one per refiner of the preset); each
ends by writing its network to ``OUT/<phase>.pth`` in the authors' key layout (a plain state dict, the
form :func:`magnet_triton.networks.checkpoint.load_checkpoint` reads strictly). ``OUT/train_state.pt``
holds the phase, the step, the network being trained, its optimizer (and FP16 grad scaler) and every
random generator, written every ``save_every`` steps and at each phase's end, so ``resume`` continues
the same run: stopping and resuming gives the weights an uninterrupted run gives (on the CPU, where
kernels are deterministic).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from magnet_triton.errors import MagnetError
from magnet_triton.networks import build_network
from magnet_triton.networks.checkpoint import load_checkpoint, save_checkpoint
from magnet_triton.networks.registry import REFINER_NETWORK
from magnet_triton.settings import Settings
from magnet_triton.training.batch_norm import recalibrate_batch_norm
from magnet_triton.training.data import Batch, SceneSet
from magnet_triton.training.progress import Progress
from magnet_triton.training.refiner_inputs import refiner_batch

log = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
PRECISIONS = ("fp32", "fp16", "bf16")
IGNORE = 255


@dataclass(frozen=True)
class TrainConfig:
    """What one training run does; saved in the state file and checked on resume.

    Attributes:
        steps: optimizer steps for the backbone.
        refiner_steps: optimizer steps for each refiner.
        batch: crops per step.
        lr: AdamW learning rate (constant; the runs are short).
        precision: ``fp32``, or ``fp16`` / ``bf16`` autocast (fp16 with a grad scaler; CUDA only).
        seed: seeds the initial weights and every sampled crop.
        save_every: steps between state saves.
        calibration_batches: batches whose statistics replace each network's BatchNorm running statistics
            at the end of its phase (0: keep the running averages). A short run leaves them mostly at
            their initial values (the refiner's momentum is 0.01), and inference uses them.
        backbone_from: a backbone checkpoint (authors' layout) to train the refiners on instead of
            training one: the backbone phase copies it to ``OUT/backbone.pth``, as the authors train
            their refiners on a finished backbone.
        half_checkpoints: write the ``.pth`` files' floating-point tensors in FP16 (half the size; the
            bundle loads them into FP32 networks).
    """

    steps: int
    refiner_steps: int
    batch: int = 8
    lr: float = 1e-3
    precision: str = "fp32"
    seed: int = 0
    save_every: int = 50
    calibration_batches: int = 8
    half_checkpoints: bool = False
    backbone_from: str | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "refiner_steps", "batch", "save_every", "calibration_batches"):
            value = getattr(self, name)
            least = 0 if name in ("refiner_steps", "calibration_batches") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise MagnetError(
                    f"--{name.replace('_', '-')} must be a whole number >= {least}, got {value!r}"
                )
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise MagnetError(f"lr must be > 0, got {self.lr}")
        if self.precision not in PRECISIONS:
            raise MagnetError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")


@dataclass
class TrainResult:
    """Per phase, the loss of every step run in this call (resumed steps are not repeated)."""

    losses: dict[str, list[float]] = field(default_factory=dict)
    first_step: dict[str, int] = field(default_factory=dict)
    checkpoints: dict[str, Path] = field(default_factory=dict)


def phases(settings: Settings) -> list[str]:
    """``["backbone", "refiner_1", ...]``: the networks a preset needs, in training order."""
    return ["backbone"] + [f"refiner_{r + 1}" for r in range(settings.n_refiners)]


def refiner_transitions(settings: Settings, refiner: int) -> list[int]:
    """The scale indices whose transition refiner ``refiner`` (0-based) merges at inference."""
    return [i for i in range(1, settings.num_scales) if settings.refiner_index(i) == refiner]


def cpu_state_dict(module: torch.nn.Module, half: bool = False) -> dict[str, torch.Tensor]:
    """A copy of ``module``'s state dict on the CPU; ``half`` stores floating-point tensors as float16
    (integers, such as BN's ``num_batches_tracked``, stay int64)."""
    return {
        k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu().clone())
        for k, v in module.state_dict().items()
    }


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _write_state(path: Path, state: dict[str, Any]) -> None:
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)  # a run killed mid-write keeps the previous state


def train(
    settings: Settings,
    data: SceneSet,
    out: Path,
    config: TrainConfig,
    *,
    device: str = "cpu",
    resume: bool = False,
    progress: Callable[[str, int, int], Progress] | None = None,
) -> TrainResult:
    """Train every network of ``settings`` on ``data``, writing checkpoints and state under ``out``.

    ``progress(name, first_step, total)`` makes a bar for each phase (``update(step, loss)``, ``close()``).

    Raises:
        MagnetError: ``out`` holds a run and ``resume`` is false, a resumed run's settings differ, or
            the precision needs a GPU.
    """
    dev = torch.device(device)
    if config.precision == "fp16" and dev.type != "cuda":
        raise MagnetError("--precision fp16 needs --device cuda (use bf16 or fp32 on the CPU)")
    if data.settings != settings:
        raise MagnetError(f"the scenes were prepared for {data.settings.name}, not {settings.name}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MagnetError(f"cannot create {out}: {e.strerror or e}") from e
    state = _load_state(out / STATE_FILE, settings, config, resume)
    result = TrainResult()
    for phase_index, name in enumerate(phases(settings)):
        result.checkpoints[name] = out / f"{name}.pth"
        if state is not None and state["phase"] > phase_index:
            continue  # finished in an earlier call; its checkpoint is on disk
        resumed = state if state is not None and state["phase"] == phase_index else None
        if name == "backbone" and config.backbone_from is not None:
            _copy_backbone(settings, Path(config.backbone_from), out)
            state = None
            continue
        _train_phase(settings, data, out, config, dev, phase_index, resumed, result, progress)
        state = None
    _write_summary(out, settings, config, result)
    return result


def _train_phase(
    settings: Settings,
    data: SceneSet,
    out: Path,
    config: TrainConfig,
    dev: torch.device,
    phase_index: int,
    resumed: dict[str, Any] | None,
    result: TrainResult,
    progress: Callable[[str, int, int], Progress] | None,
) -> None:
    """One network: build (or restore), train to its step count, calibrate BN, save."""
    name = phases(settings)[phase_index]
    checkpoint = result.checkpoints[name]
    network = REFINER_NETWORK if name.startswith("refiner") else settings.backbone
    torch.manual_seed(config.seed + phase_index)
    model = build_network(network, settings.num_classes).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=config.precision == "fp16")
    rng = np.random.default_rng([config.seed, phase_index])
    step = 0
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        scaler.load_state_dict(resumed["scaler"])
        rng.bit_generator.state = resumed["rng"]
        torch.random.set_rng_state(resumed["torch_rng"])
        step = int(resumed["step"])
    total = config.steps if name == "backbone" else config.refiner_steps
    backbone = None
    if name != "backbone":
        # Always the file, never the network just trained: a resumed run and an uninterrupted one then
        # train the refiners on the same (possibly FP16-rounded) backbone.
        backbone = build_network(settings.backbone, settings.num_classes)
        load_checkpoint(backbone, out / "backbone.pth")
        backbone = backbone.to(dev).eval()
    sample = _sampler(name, settings, data, backbone, dev, config)
    result.first_step[name] = step + 1
    losses = result.losses.setdefault(name, [])

    def save(next_phase: bool) -> None:
        save_checkpoint(cpu_state_dict(model, config.half_checkpoints), checkpoint)
        _write_state(
            out / STATE_FILE,
            {
                "phase": phase_index + 1 if next_phase else phase_index,
                "step": 0 if next_phase else step,
                "model": cpu_state_dict(model),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": rng.bit_generator.state,
                "torch_rng": torch.random.get_rng_state(),
                "settings": settings.to_dict(),
                "config": asdict(config),
            },
        )

    bar = progress(name, step, total) if progress is not None else None
    model.train()
    while step < total:
        batch = sample(rng)
        with _autocast(dev, config.precision):
            logits = model(batch.images.to(dev))
            loss = F.cross_entropy(logits.float(), batch.labels.to(dev), ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        step += 1
        losses.append(float(loss.detach()))
        if bar is not None:
            bar.update(step, losses[-1])
        if step % config.save_every == 0 and step < total:
            save(next_phase=False)
    if bar is not None:
        bar.close()
    if config.calibration_batches:
        with _autocast(dev, config.precision):
            batches = (sample(rng).images.to(dev) for _ in range(config.calibration_batches))
            recalibrate_batch_norm(model, batches)
    save(next_phase=True)


def _copy_backbone(settings: Settings, source: Path, out: Path) -> None:
    """Check ``source`` fits the preset's backbone (strictly) and write it as ``OUT/backbone.pth``."""
    model = build_network(settings.backbone, settings.num_classes)
    load_checkpoint(model, source)
    save_checkpoint(cpu_state_dict(model), out / "backbone.pth")


def _sampler(
    name: str,
    settings: Settings,
    data: SceneSet,
    backbone: torch.nn.Module | None,
    dev: torch.device,
    config: TrainConfig,
) -> Callable[[np.random.Generator], Batch]:
    if name == "backbone":
        return lambda rng: data.backbone_batch(rng, config.batch)
    refiner = int(name.rsplit("_", 1)[1]) - 1
    transitions = refiner_transitions(settings, refiner)
    assert backbone is not None

    def probabilities(patches: torch.Tensor) -> torch.Tensor:
        with _autocast(dev, config.precision):
            return torch.softmax(backbone(patches.to(dev)).float(), dim=1)

    return lambda rng: refiner_batch(data, probabilities, rng, config.batch, transitions)


def _load_state(path: Path, settings: Settings, config: TrainConfig, resume: bool) -> dict[str, Any] | None:
    if not path.exists():
        if resume:
            log.info("no %s in %s: starting a new run", STATE_FILE, path.parent)
        return None
    if not resume:
        raise MagnetError(
            f"{path.parent} holds a training run ({STATE_FILE}); pass --resume to continue it, or choose another --out"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["settings"] != settings.to_dict():
        raise MagnetError(
            f"{path} was trained with other settings ({state['settings'].get('name')}); resume with the same --preset"
        )
    saved = {k: v for k, v in state["config"].items() if k not in ("steps", "refiner_steps", "save_every")}
    now = {k: v for k, v in asdict(config).items() if k in saved}
    if saved != now:
        changed = sorted(k for k in saved if saved[k] != now[k])
        raise MagnetError(
            f"{path}: resume with the run's own {', '.join(changed)} (only the step counts may change)"
        )
    return state


def _write_summary(out: Path, settings: Settings, config: TrainConfig, result: TrainResult) -> None:
    """``training.json``: what made the checkpoints (settings, config, the last losses of each phase)."""
    record = {
        "settings": settings.to_dict(),
        "config": asdict(config),
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "final_loss": {k: float(np.mean(v[-10:])) for k, v in result.losses.items() if v},
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
