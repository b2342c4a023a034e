"""Checkpoints in, a complete Triton model repository out: the export as a library call.

:func:`export_repository` is what ``magnet-triton export``, ``magnet-triton demo``, the test helpers
and the benchmarks all call. It exports and checks the networks
(:func:`~magnet_triton.export.artifacts.build_artifacts`), writes the repository
(:func:`~magnet_triton.export.repository.write_repository`), and does both in a staging folder beside
``out`` that is renamed into place at the end, so a folder named ``out`` is always a whole repository.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from magnet_triton.export.artifacts import Progress, build_artifacts
from magnet_triton.export.repository import MANIFEST, RepositoryOptions, write_repository
from magnet_triton.export.staging import staged_output
from magnet_triton.settings import Settings

log = logging.getLogger(__name__)


def export_repository(
    settings: Settings,
    out: str | os.PathLike[str],
    *,
    backbone_checkpoint: str | os.PathLike[str] | None = None,
    refiner_checkpoints: Sequence[str | os.PathLike[str]] = (),
    random_seed: int | None = None,
    options: RepositoryOptions | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    replace: bool = False,
    progress: Progress | None = None,
    calibration_images: Sequence[str | os.PathLike[str]] = (),
    into: bool = False,
) -> Path:
    """Export ``settings``' networks with their weights and write a model repository at ``out``.

    Args:
        settings: the preset (with any overrides) the pipeline serves.
        out: the repository folder to create.
        backbone_checkpoint, refiner_checkpoints, random_seed: the weights, as
            :func:`~magnet_triton.networks.weights.weight_set` takes them.
        options: serving settings written into the configs, the target, engine and precision among
            them (default: :class:`RepositoryOptions` ``()``, the CPU target in FP32).
        work_dir: keep the ONNX files, engines and timing cache here (reused by the next export);
            default: a scratch folder deleted at the end.
        replace: replace ``out`` when it holds an earlier repository; otherwise it must be new or empty.
        progress: called with one line per step; default: log at INFO.
        calibration_images: image files whose patches calibrate INT8 networks; none: the sample scene.
        into: ``out`` is an existing repository: add the preset (``options.name_prefix``) beside the
            others, or, when it is there already, the next version of its networks.

    Returns:
        ``out`` as an absolute path.

    Raises:
        MagnetError: bad settings, options or weights, an export whose parity check fails, a missing
            engine dependency, or an unwritable ``out``. Nothing is left at ``out`` then.
    """
    options = options or RepositoryOptions()
    say = progress or (lambda message: log.info("%s", message))
    out = Path(out).absolute()
    with _build_folders(out, replace=replace, into=into) as (output, scratch):
        artifacts = build_artifacts(
            settings,
            backbone_checkpoint=backbone_checkpoint,
            refiner_checkpoints=list(refiner_checkpoints),
            random_seed=random_seed,
            out_dir=Path(work_dir).absolute() if work_dir else scratch / "artifacts",
            target=options.target,
            engine=options.engine,
            precision=options.precision,
            max_batch=options.max_batch,
            progress=say,
            calibration_images=calibration_images,
        )
        say("writing the model repository")
        backbone_model, refiner_models = artifacts.served_files(options.runtime)
        version = write_repository(
            output,
            settings,
            options,
            backbone_model=backbone_model,
            refiner_models=refiner_models,
            provenance={
                **artifacts.provenance,
                "parity": {k: r.to_dict() for k, r in artifacts.parity.items()},
            },
            into=into,
        )
    names = options.names
    if version > 1:
        say(
            f"version {version} of {', '.join(names.networks(settings.n_refiners))} written beside the "
            f"earlier ones in {out}; a server with explicit model control serves it after loading those "
            "models again (the pipeline calls the newest unless its network_version is pinned)"
        )
    elif into:
        say(f"{names.ensemble} added to the model repository {out}")
    else:
        say(f"model repository written: {out}")
    return out


@contextmanager
def _build_folders(out: Path, *, replace: bool, into: bool) -> Iterator[tuple[Path, Path]]:
    """The folder to write the repository in and a scratch folder. A new repository is staged whole and
    renamed into place; ``into`` writes into ``out`` itself (each model is still renamed in whole)."""
    if not into:
        with staged_output(out, MANIFEST, replace=replace) as staging:
            yield staging.output, staging.scratch
        return
    with tempfile.TemporaryDirectory(
        prefix=f".{out.name}.", dir=out.parent if out.parent.is_dir() else None
    ) as tmp:
        yield out, Path(tmp)
