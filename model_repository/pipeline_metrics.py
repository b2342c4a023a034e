"""Counters of how ``magnet_pipeline`` answered its requests, on Triton's metrics endpoint (``/metrics``).

Triton's own request counters cannot tell: a Python-backend model that answers with an error response
has still executed, so Triton counts it in ``nv_inference_request_success``, and it counts one failed
``magnet`` ensemble request twice in ``nv_inference_request_failure``. So the pipeline keeps one counter
family of its own, created through the Python backend's custom-metrics API (``MetricFamily``)::

    magnet_pipeline_requests_total{outcome="success"}
    magnet_pipeline_requests_total{outcome="refused", reason="bad_input" | "over_limit" | "over_work_cap" | "unknown_parameter"}
    magnet_pipeline_requests_total{outcome="failed"}
    magnet_pipeline_requests_total{outcome="unavailable"}
    magnet_pipeline_requests_total{outcome="cancelled"}

and what the work was, for each answered request (:class:`PipelineWork`)::

    magnet_pipeline_stage_seconds_total{stage="backbone" | "refiner" | "uncertainty" | "roi_align" | "refine" | "prepare" | "finish"}
    magnet_pipeline_patches_refined_total{scale="1" | "2" | ...}
    magnet_pipeline_points_refined_total{scale="1" | "2" | ...}
    magnet_pipeline_deadline_stops_total

(the scale label counts refined scales from 1, the coarse pass being 0; a stop is a request whose
``deadline_ms`` ended the refinement before the preset's last scale; a cancelled one is an outcome above).

The outcome is the one :func:`~magnet_triton.model_repository.responses.outcome_of` derives from what
the request raised, the reason a :class:`~magnet_triton.errors.MagnetError` subclass's ``reason``.
Every instance of the model adds to the same series (Triton shares a family and its labelled metrics
by name). Requests Triton turns away from the queue never reach the model: Triton counts a queue
timeout in ``nv_inference_request_failure{reason="REJECTED"}``, and (2.51) a full-queue refusal nowhere.
"""

from __future__ import annotations

import logging
from typing import Any

from magnet_triton.errors import REFUSAL_REASONS
from magnet_triton.model_repository.responses import CANCELLED, FAILED, REFUSED, SUCCESS, UNAVAILABLE

log = logging.getLogger(__name__)

FAMILY = "magnet_pipeline_requests_total"
DESCRIPTION = (
    "Requests magnet_pipeline answered, by outcome: success; refused (the caller's mistake, reason says "
    "which); failed (a server error); unavailable (a composing model was down); cancelled (the client cancelled; a deadline_ms cut counts as a success)"
)


def _labels(outcome: str, reason: str | None) -> dict[str, str]:
    return {"outcome": outcome} if reason is None else {"outcome": outcome, "reason": reason}


class PipelineMetrics:
    """The pipeline's request counters; :meth:`create` returns None where the backend has no metrics."""

    def __init__(self, family: Any) -> None:
        self._family = family
        self._metrics: dict[tuple[str, str | None], Any] = {}
        # Every series from the start, at 0: a series that appears only at its first increment hides
        # that first one from Prometheus' rate() and increase().
        for key in [
            (SUCCESS, None),
            *((REFUSED, r) for r in REFUSAL_REASONS),
            (FAILED, None),
            (UNAVAILABLE, None),
            (CANCELLED, None),
        ]:
            self._metric(*key)

    @classmethod
    def create(cls, pb_utils: Any) -> PipelineMetrics | None:
        """The counters, or None (logged) where ``pb_utils`` has no ``MetricFamily`` or metrics are off."""
        family_type = getattr(pb_utils, "MetricFamily", None)
        if family_type is None:
            log.info("this Python backend has no custom metrics (MetricFamily): %s is not counted", FAMILY)
            return None
        try:
            return cls(family_type(name=FAMILY, description=DESCRIPTION, kind=family_type.COUNTER))
        except Exception as e:  # a server started with metrics off refuses families; serving goes on
            log.warning("no %s counters: %s", FAMILY, e)
            return None

    def _metric(self, outcome: str, reason: str | None) -> Any:
        key = (outcome, reason)
        if key not in self._metrics:
            self._metrics[key] = self._family.Metric(labels=_labels(outcome, reason))
        return self._metrics[key]

    def count(self, outcome: str, reason: str | None = None) -> None:
        """Add one request answered with ``outcome`` (``reason``: why it was refused)."""
        try:
            self._metric(outcome, reason).increment(1)
        except Exception:  # a counter must never turn an answered request into a failed one
            log.warning("could not count a %s request in %s", outcome, FAMILY, exc_info=True)

    def close(self) -> None:
        """Release the metrics, then their family (the backend wants them deleted in that order)."""
        self._metrics.clear()
        self._family = None


STAGES = ("prepare", "backbone", "uncertainty", "roi_align", "refiner", "refine", "finish")
WORK_FAMILIES = {
    "stage_seconds": ("magnet_pipeline_stage_seconds_total", "Seconds magnet_pipeline spent per stage"),
    "patches": ("magnet_pipeline_patches_refined_total", "Patches refined, by refined scale (1 = first)"),
    "points": ("magnet_pipeline_points_refined_total", "Points replaced by the refiner, by refined scale"),
    "deadline_stops": (
        "magnet_pipeline_deadline_stops_total",
        "Requests answered before the preset's last scale because their deadline_ms passed",
    ),
}


class PipelineWork:
    """What the answered requests cost: seconds per stage, patches and points per scale, deadline stops.

    Every series exists from load at 0 (stages, and the ``num_scales - 1`` refined scales).
    """

    def __init__(self, family_type: Any, refined_scales: int) -> None:
        self._families = {
            key: family_type(name=name, description=text, kind=family_type.COUNTER)
            for key, (name, text) in WORK_FAMILIES.items()
        }
        self._stages = {s: self._families["stage_seconds"].Metric(labels={"stage": s}) for s in STAGES}
        self._patches = [
            self._families["patches"].Metric(labels={"scale": str(i)}) for i in range(1, refined_scales + 1)
        ]
        self._points = [
            self._families["points"].Metric(labels={"scale": str(i)}) for i in range(1, refined_scales + 1)
        ]
        self._stops = self._families["deadline_stops"].Metric(labels={})

    @classmethod
    def create(cls, pb_utils: Any, refined_scales: int) -> PipelineWork | None:
        """The counters, or None where ``pb_utils`` has no ``MetricFamily`` or metrics are off."""
        family_type = getattr(pb_utils, "MetricFamily", None)
        if family_type is None:
            return None
        try:
            return cls(family_type, refined_scales)
        except Exception as e:
            log.warning("no magnet_pipeline work counters: %s", e)
            return None

    def record(self, result: Any, num_scales: int, mode: str) -> None:
        """Add one answered request's :class:`~magnet_triton.pipeline.SegmentationResult`."""
        try:
            for stage, seconds in result.timings_s.items():
                if stage in self._stages:
                    self._stages[stage].increment(float(seconds))
            for counters, values in (
                (self._patches, result.patches_refined),
                (self._points, result.points_replaced),
            ):
                for counter, value in zip(counters, values):
                    counter.increment(float(value))
            if mode in ("magnet", "magnet-fast") and result.scales_done < num_scales:
                self._stops.increment(1)
        except Exception:  # a counter must never turn an answered request into a failed one
            log.warning("could not record a request's work", exc_info=True)

    def close(self) -> None:
        self._stages.clear()
        self._patches.clear()
        self._points.clear()
        self._stops = None
        self._families.clear()
