"""What the server sends back, as plain numpy and dicts (pure logic: no gRPC calls here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from magnet_triton import io_spec
from magnet_triton.client.errors import ServerError
from magnet_triton.errors import MagnetError

# The per-model counters of Triton's statistics extension that a request's timing is made of.
_STAT_PHASES = ("queue", "compute_input", "compute_infer", "compute_output")
# The outputs do not depend on the preset (the pipeline's spec ignores its settings).
_OUTPUTS = io_spec.ensemble_spec().outputs
#: The H0 x W0 maps; SCALES_DONE is a count beside them (absent from repositories written before it).
_MAPS = tuple(o for o in _OUTPUTS if o.name != io_spec.SCALES_DONE)


@dataclass(frozen=True, eq=False)
class SegmentResult:
    """The segmentation of one image.

    The arrays may be read-only views of the response; copy them to change them.

    Attributes:
        segmentation: H0 x W0 uint8 class map of the final (finest) scale.
        coarse_segmentation: H0 x W0 uint8 class map of the coarse, whole-image pass; None when the call
            named ``outputs`` without it.
        confidence: H0 x W0 float32, top-1 minus top-2 class probability of the final scale, in [0, 1];
            None when the call named ``outputs`` without it.
        scales_done: the scales the map went through, the coarse pass included; fewer than the preset's
            when the request's ``deadline_ms`` ended the refinement early. None from a server whose
            repository predates the output.
        model_name: the model that answered (``magnet`` for encoded images, ``magnet_pipeline`` for arrays).
        latency_s: seconds from sending the (last) attempt to having the response, measured here.
        attempts: how many times the request was sent (1 unless the server was unreachable at first).
        server_timings: per model, seconds spent in Triton's queue / compute_input / compute_infer /
            compute_output during the request and the number of requests it ran, from the statistics
            extension; empty unless the client was made with ``collect_server_timings=True``.
    """

    segmentation: np.ndarray
    coarse_segmentation: np.ndarray | None
    confidence: np.ndarray | None
    model_name: str
    latency_s: float
    attempts: int = 1
    server_timings: dict[str, dict[str, float]] = field(default_factory=dict)
    scales_done: int | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(H0, W0), the image size."""
        return (int(self.segmentation.shape[0]), int(self.segmentation.shape[1]))


def is_final(result: Any) -> bool:
    """Whether a streamed ``InferResult`` is its request's last: Triton marks it with the
    ``triton_final_response`` parameter (for requests sent with ``enable_empty_final_response``); an
    answer without outputs is the flags-only final one."""
    response = result.get_response()
    if "triton_final_response" in response.parameters:
        return bool(response.parameters["triton_final_response"].bool_param)
    return not response.outputs


def has_outputs(result: Any) -> bool:
    """Whether a streamed ``InferResult`` carries tensors (the flags-only final one does not)."""
    return bool(result.get_response().outputs)


def parse_response(
    response: Any,
    *,
    model_name: str,
    image_shape: tuple[int, int] | None,
    latency_s: float,
    attempts: int,
    server_timings: dict[str, dict[str, float]],
    requested: tuple[str, ...] | None = None,
) -> SegmentResult:
    """A :class:`SegmentResult` from a ``tritonclient`` ``InferResult``; checks dtypes and shapes.

    ``image_shape`` (H0, W0) is known for raw arrays and then checked too. ``requested``: the outputs
    asked for (None: all); the maps left out are None in the result.
    """
    arrays: dict[str, np.ndarray | None] = {}
    for spec in _MAPS:
        if requested is not None and spec.name not in requested:
            arrays[spec.name] = None
            continue
        array = response.as_numpy(spec.name)
        if array is None:
            raise ServerError(f"{model_name} returned no {spec.name} output; is the repository out of date?")
        if array.dtype != spec.numpy_dtype or array.ndim != 2:
            raise ServerError(
                f"{model_name} returned {spec.name} as {array.dtype} {array.shape}, expected {spec.dtype} H x W"
            )
        arrays[spec.name] = array
    shapes = {a.shape for a in arrays.values() if a is not None}
    if len(shapes) != 1 or (image_shape is not None and shapes != {tuple(image_shape)}):
        raise ServerError(
            f"{model_name} returned outputs of sizes {sorted(shapes)} for an image of {image_shape}"
        )
    scales = response.as_numpy(io_spec.SCALES_DONE)
    if scales is not None and (scales.dtype != np.int32 or scales.size != 1):
        raise ServerError(f"{model_name} returned {io_spec.SCALES_DONE} as {scales.dtype} {scales.shape}")
    return SegmentResult(
        segmentation=arrays[io_spec.SEGMENTATION],
        coarse_segmentation=arrays[io_spec.COARSE_SEGMENTATION],
        confidence=arrays[io_spec.CONFIDENCE],
        model_name=model_name,
        latency_s=latency_s,
        attempts=attempts,
        server_timings=server_timings,
        scales_done=None if scales is None else int(scales.reshape(-1)[0]),
    )


# Triton counts a request in a model's statistics just after that model sends its response, so a
# snapshot taken straight after ``infer`` returns can miss the last step of an ensemble. The lag is
# milliseconds; these waits (about 2 s in all) cover a busy 2-core machine.
STATISTICS_RETRY_DELAYS_S = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def models_behind(model_name: str) -> tuple[str, ...]:
    """The models that run for one request to ``model_name`` (the ensemble runs its two steps)."""
    try:
        names = io_spec.ModelNames.of_entry_point(model_name)
    except MagnetError:
        return (model_name,)
    if model_name == names.ensemble:
        return (names.ensemble, names.decode, names.pipeline)
    return (model_name,)


def timings_complete(timings: Mapping[str, Mapping[str, float]], model_name: str) -> bool:
    """True when ``timings`` counts the request in every model behind ``model_name``."""
    return all(timings.get(m, {}).get("requests", 0) >= 1 for m in models_behind(model_name))


def statistics_delta(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Per-model time between two ``get_inference_statistics(as_json=True)`` snapshots.

    Returns ``{model: {"requests": n, "queue_s": ..., "compute_infer_s": ..., ...}}`` for every model
    (all versions summed) that ran between the snapshots. Counters are server-wide, so other clients'
    requests in between are counted too.
    """
    old, new = _totals(before), _totals(after)
    delta: dict[str, dict[str, float]] = {}
    for model, counters in new.items():
        previous = old.get(model, {})
        change = {key: value - previous.get(key, 0) for key, value in counters.items()}
        if change.get("requests", 0) <= 0:
            continue
        delta[model] = {
            key if key == "requests" else f"{key}_s": (value if key == "requests" else value / 1e9)
            for key, value in change.items()
        }
    return delta


def _totals(stats: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = {}
    for entry in stats.get("model_stats", []):
        model = totals.setdefault(entry["name"], {"requests": 0, **dict.fromkeys(_STAT_PHASES, 0)})
        phases = entry.get("inference_stats", {})
        # JSON carries uint64 counters as strings.
        model["requests"] += int(phases.get("success", {}).get("count", 0))
        for phase in _STAT_PHASES:
            model[phase] += int(phases.get(phase, {}).get("ns", 0))
    return totals


def summarize_health(
    *, url: str, live: bool, ready: bool, metadata: Mapping[str, Any], index: Mapping[str, Any]
) -> dict[str, Any]:
    """The dict ``health()`` returns, from the server's answers.

    ``{"url", "live", "ready", "server": {"name", "version"}, "models": {name: {"ready": bool,
    "versions": {version: state}, "reason": str}}}``; a model is ready when one of its versions is.
    """
    models: dict[str, dict[str, Any]] = {}
    for entry in index.get("models", []):
        model = models.setdefault(entry["name"], {"ready": False, "versions": {}, "reason": ""})
        state = entry.get("state", "UNKNOWN")
        model["versions"][str(entry.get("version", ""))] = state
        model["ready"] = model["ready"] or state == "READY"
        if entry.get("reason"):
            model["reason"] = "; ".join(filter(None, [model["reason"], entry["reason"]]))
    return {
        "url": url,
        "live": bool(live),
        "ready": bool(ready),
        "server": {"name": metadata.get("name", ""), "version": metadata.get("version", "")},
        "models": dict(sorted(models.items())),
    }


def is_restricted(error: Exception) -> bool:
    """Whether a tritonclient error says the API is behind a key (Triton's restricted protocols)."""
    message = getattr(error, "message", None)
    return "is restricted" in (message() if callable(message) else str(error))


def index_from_statistics(statistics: Mapping[str, Any]) -> dict[str, Any]:
    """A repository index, in its JSON form, built from the inference statistics.

    For servers whose repository API is behind an admin key (``magnet-triton serve`` does that): the
    statistics, which stay open, list every loaded model version; models that failed to load are not
    in them, and so not in this index either.
    """
    return {
        "models": [
            {"name": m["name"], "version": m.get("version", ""), "state": "READY", "reason": ""}
            for m in statistics.get("model_stats", [])
        ]
    }
