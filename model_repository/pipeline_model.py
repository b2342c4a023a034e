"""``magnet_pipeline``: the MagNet loop inside Triton (Python backend, BLS to the two networks).

The algorithm is :func:`magnet_triton.pipeline.run_magnet`, the same function ``segment-local`` runs;
only the networks differ (:class:`BLSNetworks`). A bad request gets an error response of its own and
never fails the other requests of the batch or the server.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from magnet_triton import io_spec, request_options
from magnet_triton.errors import ImageTooLarge, MagnetError, OverWorkCap
from magnet_triton.model_repository.bls_networks import BLSNetworks
from magnet_triton.model_repository.config_params import instance_device, model_parameters
from magnet_triton.model_repository.pipeline_metrics import PipelineMetrics, PipelineWork
from magnet_triton.model_repository.responses import respond_to_each
from magnet_triton.ops.steps import steps_for_device
from magnet_triton.pipeline import check_image, request_work, run_magnet
from magnet_triton.request_options import apply_overrides
from magnet_triton.settings import Settings, settings_from_dict

log = logging.getLogger(__name__)

#: Refused above this many pixels unless the config says otherwise (the reason is in io_spec).
DEFAULT_MAX_IMAGE_PIXELS = io_spec.DEFAULT_MAX_IMAGE_PIXELS


def check_image_size(image: np.ndarray, max_pixels: int) -> None:
    height, width = image.shape[:2]
    if height * width > max_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height} = {width * height} pixels, over this server's limit of "
            f"{max_pixels} (the pipeline's parameter max_image_pixels); send a smaller image"
        )


def check_work(settings: Settings, max_patches: int, max_points: int) -> None:
    """Refuse a request whose settings would refine more than this server allows (0: no cap)."""
    patches, points = request_work(settings)
    for what, wanted, cap, parameter in (
        ("patches", patches, max_patches, "max_patches_per_request"),
        ("points", points, max_points, "max_points_per_request"),
    ):
        if cap and wanted > cap:
            raise OverWorkCap(
                f"this request would refine {wanted} {what}, over this server's cap of {cap} "
                f"(the pipeline's parameter {parameter}); ask for fewer (n_patches, n_points) "
                "or mode magnet-fast"
            )


def request_overrides(request: Any, pb_utils: Any) -> dict[str, Any]:
    """Overrides from optional inputs and from request parameters (inputs win), keyed by option name.

    Raises:
        UnknownParameter: a request parameter that is no option (a misspelling would otherwise be ignored).
    """
    raw: dict[str, Any] = {}
    parameters = json.loads(request.parameters() or "{}")
    request_options.check_request_parameters(parameters)
    for option in request_options.REQUEST_OPTIONS:
        if option.parameter in parameters:
            raw[option.name] = parameters[option.parameter]
        tensor = pb_utils.get_input_tensor_by_name(request, option.tensor)
        if tensor is not None:
            raw[option.name] = tensor.as_numpy()
    return raw


def wanted_outputs(request: Any) -> set[str]:
    """The outputs a request's ``outputs`` parameter names (the class map always), else every output.

    Raises:
        MagnetError: the parameter is not a comma-separated list of this model's outputs.
    """
    every = {t.name for t in io_spec.pipeline_spec().outputs}
    raw = json.loads(request.parameters() or "{}").get(io_spec.OUTPUTS_PARAMETER)
    if raw is None:
        return every
    names = {n.strip() for n in raw.split(",")} if isinstance(raw, str) else None
    if names is None or not names <= every:
        raise MagnetError(
            f"request parameter {io_spec.OUTPUTS_PARAMETER} must name outputs among {sorted(every)}, "
            f"comma-separated; got {raw!r}"
        )
    return names | {io_spec.SEGMENTATION}


def stop_conditions(
    request: Any, started: float
) -> tuple[Callable[[], bool] | None, Callable[[], bool] | None]:
    """(cancelled, out of time) of a request, each None when it cannot be known.

    Cancelled: the client gave up (Python backends before 23.10 cannot tell). Out of time: its
    ``deadline_ms``, counted from ``started`` (a ``time.monotonic()``), has passed.

    Raises:
        MagnetError: a ``deadline_ms`` that is not a whole number of milliseconds > 0.
    """
    parameters = json.loads(request.parameters() or "{}")
    budget = parameters.get(io_spec.DEADLINE_PARAMETER)
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0):
        raise MagnetError(
            f"request parameter {io_spec.DEADLINE_PARAMETER} must be an integer > 0, got {budget!r}"
        )
    cancelled = getattr(request, "is_cancelled", None)
    if budget is None:
        return cancelled, None
    deadline = started + budget / 1000
    return cancelled, lambda: time.monotonic() > deadline


def network_version(params: dict[str, str]) -> int:
    """The ``network_version`` parameter as a BLS ``model_version``: ``latest`` (the default) is -1,
    Triton's newest loaded version; a number pins that version of every network."""
    value = params.get("network_version", "latest").strip().lower()
    if value == "latest":
        return -1
    if not value.isdigit() or int(value) < 1:
        raise MagnetError(
            f"parameter network_version must be 'latest' or a version number >= 1, got {value!r}"
        )
    return int(value)


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb_utils = pb_utils
        params = model_parameters(args)
        self.settings = settings_from_dict(json.loads(params["settings"]))
        self.max_image_pixels = int(params.get("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS))
        # 0: no cap. Checked on the request's settings before any work (request_work).
        self.max_patches = int(params.get("max_patches_per_request", "0"))
        self.max_points = int(params.get("max_points_per_request", "0"))
        self.device = torch.device(instance_device(args))
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        kernel_dir = params.get("kernel_dir")
        if kernel_dir:
            kernel_dir = os.path.join(args["model_repository"], args["model_version"], kernel_dir)
        self.steps = steps_for_device(self.device, kernel_dir=kernel_dir)
        # Named in messages and error responses (the progressive twin has its own name).
        self.model_name = args.get("model_name", self.model_name)
        self.networks = BLSNetworks(
            pb_utils,
            device=self.device,
            max_batch=int(params.get("bls_max_batch", "8")),
            names=io_spec.ModelNames(params.get("name_prefix", "")),
            version=network_version(params),
        )
        torch.set_num_threads(int(params.get("torch_threads", "0")) or len(os.sched_getaffinity(0)))
        # Triton's own counters call every answered request a success; these say how it was answered.
        self.metrics = PipelineMetrics.create(pb_utils)
        self.work = PipelineWork.create(pb_utils, self.settings.num_scales - 1)
        log.info(
            "%s ready: preset %s on %s, steps %s, %d torch threads, networks at %s",
            self.model_name,
            self.settings.name,
            self.device,
            self.steps,
            torch.get_num_threads(),
            "their newest version" if self.networks.version < 0 else f"version {self.networks.version}",
        )

    #: Named in messages before initialize has read the served name.
    model_name = io_spec.PIPELINE_MODEL

    def _segment(self, request: Any, on_stage: Callable[[int, np.ndarray], None] | None = None) -> Any:
        """One request's final ``InferenceResponse``; ``on_stage`` gets the maps of the stages before."""
        started = time.monotonic()
        pb = self.pb_utils
        image_tensor = pb.get_input_tensor_by_name(request, io_spec.IMAGE)
        if image_tensor is None:
            raise MagnetError(f"{self.model_name} needs the {io_spec.IMAGE} input (H x W x 3 uint8)")
        image = check_image(image_tensor.as_numpy())
        check_image_size(image, self.max_image_pixels)
        settings = apply_overrides(self.settings, request_overrides(request, pb))
        check_work(settings, self.max_patches, self.max_points)
        cancelled, out_of_time = stop_conditions(request, started)
        # Triton lists every output when the client names none, so this only skips what was left out;
        # behind the ensemble every output is requested, and the client's own choice is the parameter.
        requested = set(request.requested_output_names()) & wanted_outputs(request)
        result = run_magnet(
            image,
            settings,
            self.networks,
            device=self.device,
            steps=self.steps,
            return_coarse=io_spec.COARSE_SEGMENTATION in requested,
            return_confidence=io_spec.CONFIDENCE in requested,
            should_stop=cancelled,
            out_of_time=out_of_time,
            on_stage=on_stage,
        )
        if self.work is not None:
            self.work.record(result, settings.num_scales, settings.mode)
        outputs = [pb.Tensor(io_spec.SEGMENTATION, result.segmentation)]
        if result.coarse_segmentation is not None:
            outputs.append(pb.Tensor(io_spec.COARSE_SEGMENTATION, result.coarse_segmentation))
        if result.confidence is not None:
            outputs.append(pb.Tensor(io_spec.CONFIDENCE, result.confidence.astype(np.float32)))
        if io_spec.SCALES_DONE in requested:
            outputs.append(pb.Tensor(io_spec.SCALES_DONE, np.array([result.scales_done], np.int32)))
        return pb.InferenceResponse(output_tensors=outputs)

    def execute(self, requests: list[Any]) -> list[Any]:
        count = self.metrics.count if self.metrics is not None else None
        return respond_to_each(requests, self._segment, self.pb_utils, self.model_name, log, on_outcome=count)

    def finalize(self) -> None:
        for counters in (getattr(self, "metrics", None), getattr(self, "work", None)):
            if counters is not None:  # absent when initialize failed before making them
                counters.close()
