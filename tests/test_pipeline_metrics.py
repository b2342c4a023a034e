"""The pipeline's request counters, in this process against the fake Triton (:mod:`tests.fake_triton`).

``test_server_pipeline`` reads the same counters from a real tritonserver's ``/metrics``; these cover the
outcomes a real server makes hard to cause on demand (an internal failure, a cancellation mid-run) and
a backend without custom metrics.
"""

from __future__ import annotations

import logging

import pytest
import torch

from magnet_triton import io_spec
from magnet_triton.errors import REFUSAL_REASONS, ImageTooLarge, MagnetError, OverWorkCap, WorkStopped
from magnet_triton.export.repository import RepositoryOptions, model_configs
from magnet_triton.model_repository.pipeline_metrics import FAMILY, PipelineMetrics
from magnet_triton.model_repository.responses import outcome_of, respond_to_each
from tests import fake_triton
from tests.test_served_models import NetworkModels, image_input, request, triton_args
from tests.tiny_repository import SEED, TINY, scene


def counts(pb_utils) -> dict[tuple[str, str | None], float]:
    """(outcome, reason) -> value of every magnet_pipeline_requests_total series made so far."""
    found = {}
    for (name, labels), value in pb_utils.metric_values.items():
        if name == FAMILY:
            as_dict = dict(labels)
            found[(as_dict.pop("outcome"), as_dict.pop("reason", None))] = value
            assert not as_dict, f"unexpected labels {as_dict}"
    return found


@pytest.fixture(scope="module")
def networks():
    from magnet_triton.local import load_networks

    return load_networks(TINY, None, [], random_seed=SEED)


@pytest.fixture
def served(monkeypatch, tmp_path, networks):
    """(model, pb_utils, network models) of a pipeline capped at 10 patches a request."""
    from magnet_triton.model_repository.pipeline_model import TritonPythonModel

    network_models = NetworkModels(networks)
    pb_utils = fake_triton.install(monkeypatch, bls=network_models)
    options = RepositoryOptions(max_image_pixels=20_000, max_patches_per_request=10)
    config = model_configs(TINY, options)[io_spec.PIPELINE_MODEL]
    threads = torch.get_num_threads()
    model = TritonPythonModel()
    model.initialize(triton_args(config, tmp_path / io_spec.PIPELINE_MODEL))
    yield model, pb_utils, network_models
    model.finalize()
    torch.set_num_threads(threads)


def test_every_series_is_listed_at_zero_from_load(served):
    _, pb_utils, _ = served
    expected = {("success", None), ("failed", None), ("unavailable", None), ("cancelled", None)}
    expected |= {("refused", reason) for reason in REFUSAL_REASONS}
    assert counts(pb_utils) == dict.fromkeys(expected, 0.0)
    assert set(REFUSAL_REASONS) == {"bad_input", "over_limit", "over_work_cap", "unknown_parameter"}


def test_each_request_is_counted_once_under_its_outcome_and_reason(served):
    model, pb_utils, network_models = served
    cancelled = request(image_input(), parameters={"mode": "magnet-fast"})
    cancelled.cancel_after_calls = 1  # stops before its first refinement scale
    network_models.fail_next = 0
    batch = [
        request(image_input(), parameters={"mode": "downsample"}),
        request(image_input(), parameters={"mode": "downsample"}),
        request(image_input(), parameters={"n_patchs": 2}),
        request(image_input(scene(150, 150)), parameters={"mode": "downsample"}),
        request(image_input()),  # the full magnet mode refines 20 patches, over the cap of 10
        request(image_input(), parameters={"mode": "turbo"}),
        cancelled,
    ]
    responses = model.execute(batch)
    assert [r.has_error() for r in responses] == [False, False, True, True, True, True, True]
    network_models.fail_next = 1  # the backbone answers with an error: the pipeline's failure
    (failed,) = model.execute([request(image_input(), parameters={"mode": "downsample"})])
    assert failed.error().code() == fake_triton.TritonError.INTERNAL
    assert {k: v for k, v in counts(pb_utils).items() if v} == {
        ("success", None): 2,
        ("refused", "unknown_parameter"): 1,
        ("refused", "over_limit"): 1,
        ("refused", "over_work_cap"): 1,
        ("refused", "bad_input"): 1,
        ("cancelled", None): 1,
        ("failed", None): 1,
    }


def test_outcome_of_follows_the_error_type_not_its_words():
    assert outcome_of(None) == ("success", None)
    assert outcome_of(MagnetError("image too large, over the limit")) == ("refused", "bad_input")
    assert outcome_of(ImageTooLarge("x")) == ("refused", "over_limit")
    assert outcome_of(OverWorkCap("x")) == ("refused", "over_work_cap")
    assert outcome_of(WorkStopped("x")) == ("cancelled", None)
    assert outcome_of(KeyError("over_limit")) == ("failed", None)


def test_without_custom_metrics_the_pipeline_serves_and_counts_nothing(monkeypatch, tmp_path, networks):
    """Older Python backends have no MetricFamily."""
    from magnet_triton.model_repository.pipeline_model import TritonPythonModel

    pb_utils = fake_triton.install(monkeypatch, bls=NetworkModels(networks))
    monkeypatch.delattr(pb_utils, "MetricFamily")
    config = model_configs(TINY, RepositoryOptions())[io_spec.PIPELINE_MODEL]
    threads = torch.get_num_threads()
    model = TritonPythonModel()
    try:
        model.initialize(triton_args(config, tmp_path / io_spec.PIPELINE_MODEL))
        (response,) = model.execute([request(image_input(), parameters={"mode": "downsample"})])
        model.finalize()
    finally:
        torch.set_num_threads(threads)
    assert model.metrics is None
    assert not response.has_error()
    assert pb_utils.metric_values == {}


def test_a_counter_that_fails_leaves_the_response_as_it_was(caplog):
    class BrokenMetric:
        def increment(self, value: float) -> None:
            raise RuntimeError("metric invalidated")

    class BrokenFamily:
        COUNTER = 0

        def __init__(self, **kwargs) -> None:
            pass

        def Metric(self, labels):
            return BrokenMetric()

    pb_utils = fake_triton.make_pb_utils()
    pb_utils.MetricFamily = BrokenFamily
    metrics = PipelineMetrics.create(pb_utils)
    assert metrics is not None
    with caplog.at_level(logging.WARNING):
        (response,) = respond_to_each(
            ["ok"],
            lambda _: pb_utils.InferenceResponse(output_tensors=[]),
            pb_utils,
            "some_model",
            logging.getLogger("test"),
            on_outcome=metrics.count,
        )
    assert not response.has_error()
    assert "could not count a success request" in caplog.text


def work_values(pb_utils) -> dict[tuple[str, tuple], float]:
    """(family, sorted label items) -> value of the pipeline's work counters."""
    from magnet_triton.model_repository.pipeline_metrics import WORK_FAMILIES

    names = {name for name, _ in WORK_FAMILIES.values()}
    return {
        (name, tuple(sorted(labels))): value
        for (name, labels), value in pb_utils.metric_values.items()
        if name in names
    }


def test_the_work_counters_add_each_requests_patches_points_seconds_and_deadline_stops(served):
    model, pb_utils, _ = served
    before = work_values(pb_utils)
    # Listed from load at 0: TINY refines two scales.
    assert before[("magnet_pipeline_patches_refined_total", (("scale", "2"),))] == 0
    assert before[("magnet_pipeline_deadline_stops_total", ())] == 0
    magnet, hurried = model.execute(
        [
            request(image_input(), parameters={"mode": "magnet-fast", "n_patches": 2}),
            request(image_input(), parameters={"mode": "magnet-fast", "n_patches": 2, "deadline_ms": 1}),
        ]
    )
    assert not magnet.has_error() and not hurried.has_error()
    after = work_values(pb_utils)
    # magnet-fast keeps 2 patches of each refined scale (TINY: 4 and 16 in all), and picks n_points
    # (0.25) of each scale's pixels in proportion to the patches kept: 128x128/4 x 2/4, 256x256/4 x 2/16.
    assert after[("magnet_pipeline_patches_refined_total", (("scale", "1"),))] == 2
    assert after[("magnet_pipeline_patches_refined_total", (("scale", "2"),))] == 2
    assert after[("magnet_pipeline_points_refined_total", (("scale", "1"),))] == 128 * 128 // 4 * 2 // 4
    # At most that many at scale 2: magnet-fast drops the chosen points that fall outside the kept
    # patches (step 14), and with 2 of 16 patches some do.
    assert 0 < after[("magnet_pipeline_points_refined_total", (("scale", "2"),))] <= 256 * 256 // 4 * 2 // 16
    # The deadline of 1 ms passed during the coarse pass: one stop, nothing refined for it.
    assert after[("magnet_pipeline_deadline_stops_total", ())] == 1
    seconds = {
        labels[0][1]: v
        for (name, labels), v in after.items()
        if name == "magnet_pipeline_stage_seconds_total"
    }
    assert seconds["backbone"] > 0 and seconds["refiner"] > 0 and seconds["finish"] > 0
