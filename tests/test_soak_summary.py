"""The soak benchmark's verdicts (benchmarks/soak.py), on outcomes written out by hand: what counts as
expected during a fault, what as unexpected, and the RSS trend after warm-up."""

from __future__ import annotations

import random

import pytest

from benchmarks.soak import FAULT_GRACE_S, FaultRecord, Outcome, Soak, summarize
from magnet_triton.sample import png_declaring


def soak_with(outcomes, faults=(), memory=()):
    soak = Soak("h:1", 1, b"", 1, 100.0, 0.0, 0.0, 0.0, 1.0, random.Random(0))
    soak.outcomes, soak.faults, soak.memory = list(outcomes), list(faults), list(memory)
    return soak


def test_a_good_request_failing_inside_a_fault_window_is_expected_and_outside_it_is_not():
    fault = FaultRecord("magnet_backbone", 1, killed_at=10.0, not_ready_at=10.5, ready_again_at=13.0)
    summary = summarize(
        soak_with(
            [
                Outcome("good", "g", 9.0, 11.0, "StatusCode.UNAVAILABLE"),  # in flight at the kill
                Outcome("good", "g", 13.0 + FAULT_GRACE_S - 0.1, 20.0, "StatusCode.UNAVAILABLE"),
                Outcome("good", "g", 30.0, 31.0, "StatusCode.UNAVAILABLE"),  # long after recovery
                Outcome("good", "g", 30.0, 32.0, "ok"),
            ],
            [fault],
        )
    )
    assert summary["counts"] == {"good: failed in a fault window": 2, "good: UNEXPECTED": 1, "good: ok": 1}
    assert list(summary["unexpected"].values()) == [1]
    assert summary["faults"][0]["not_ready_after_s"] == pytest.approx(0.5)
    assert summary["faults"][0]["recovered_after_s"] == pytest.approx(3.0)


def test_a_bad_input_must_be_refused_invalid_argument_and_nothing_else():
    summary = summarize(
        soak_with(
            [
                Outcome("bad", "corrupt bytes", 1.0, 1.1, "StatusCode.INVALID_ARGUMENT"),
                Outcome("bad", "corrupt bytes", 2.0, 2.1, "StatusCode.INTERNAL", "boom"),
                Outcome("bad", "corrupt bytes", 3.0, 3.1, "ok"),
            ]
        )
    )
    assert summary["counts"] == {"bad: refused INVALID_ARGUMENT": 1, "bad: UNEXPECTED": 2}
    assert summary["unexpected"] == {
        "bad corrupt bytes: StatusCode.INTERNAL boom": 1,
        "bad corrupt bytes: ok ": 1,
    }


def test_a_full_queue_is_load_shed_and_reported_apart_from_unexpected_failures():
    full = "in ensemble 'magnet', Exceeds maximum queue size"
    summary = summarize(soak_with([Outcome("good", "g", 1.0, 1.1, "StatusCode.UNAVAILABLE", full)]))
    assert summary["counts"] == {"good: shed: queue full": 1}
    assert summary["unexpected"] == {}


def test_the_rss_growth_is_that_of_the_high_water_mark_after_warm_up():
    # Duration 100 s: warm-up is the first 20 s, whose growth does not count; the peak of 20-40 s
    # (1000, not the 700 between requests) against the peak of 80 s on (1010, not the last 600).
    samples = [(0, 100), (10, 900), (20, 700), (30, 1000), (50, 1500), (80, 800), (85, 1010), (95, 600)]
    memory = [{"t": t, "rss_mib": rss, "shm_mib": 0.0} for t, rss in samples]
    rss = summarize(soak_with([], memory=memory))["rss_mib"]
    assert (rss["peak_after_warmup"], rss["peak_at_end"]) == (1000, 1010)
    assert rss["growth_after_warmup"] == pytest.approx(0.01)


def test_the_declared_size_png_is_a_valid_header_of_that_size():
    import io

    from PIL import Image

    with Image.open(io.BytesIO(png_declaring(9000, 8000))) as image:
        assert image.size == (9000, 8000)


def test_the_pss_trends_and_each_roles_peaks_are_reported_beside_the_rss():
    # Duration 100 s: the second fifth is 20-40 s, the last 80 s on. The pipeline's PSS peak grew from
    # 300 to 330 MiB, the backbone's stayed at 500; private memory is PSS less the shared part.
    samples = [
        (30, {"magnet_pipeline": 300.0, "magnet_backbone": 500.0}, 100.0),
        (35, {"magnet_pipeline": 250.0, "magnet_backbone": 480.0}, 100.0),
        (85, {"magnet_pipeline": 330.0, "magnet_backbone": 500.0}, 160.0),
    ]
    memory = [
        {"t": t, "rss_mib": 2000.0, "pss_mib": sum(r.values()), "private_mib": sum(r.values()) - shm,
         "shm_mib": shm, "by_role_mib": r}
        for t, r, shm in samples
    ]  # fmt: skip
    summary = summarize(soak_with([], memory=memory))
    assert summary["pss_mib"]["growth_after_warmup"] == pytest.approx(30 / 800)
    assert summary["private_mib"]["peak_after_warmup"] == 700.0
    assert summary["private_mib"]["peak_at_end"] == 670.0
    assert summary["by_role_peak_mib"] == {
        "magnet_backbone": (500.0, 500.0),
        "magnet_pipeline": (300.0, 330.0),
    }


def test_the_median_level_ignores_overlapping_requests_and_reload_dips_but_not_a_shift():
    # Duration 100 s. Second fifth (20-40 s): level 1000 with one overlap spike to 1400. Last fifth (80 s
    # on): level 1000 with a spike to 1500 and a reload dip to 300. The high-water mark says +7 %; the
    # median (1000 -> 1000) says nothing grew.
    flat = [(20, 1000), (25, 1400), (30, 1000), (35, 1000), (80, 1000), (85, 1500), (90, 300), (95, 1000)]
    memory = [{"t": t, "rss_mib": v, "pss_mib": v, "private_mib": v, "shm_mib": 0.0} for t, v in flat]
    pss = summarize(soak_with([], memory=memory))["pss_mib"]
    assert pss["growth_after_warmup"] == pytest.approx(100 / 1400)
    assert (pss["median_after_warmup"], pss["median_at_end"]) == (1000, 1000)
    assert pss["median_growth_after_warmup"] == 0
    # A leak moves every sample of the last fifth up by 50: the median follows it.
    leaked = [(t, v + 50 if t >= 80 else v) for t, v in flat]
    memory = [{"t": t, "rss_mib": v, "pss_mib": v, "private_mib": v, "shm_mib": 0.0} for t, v in leaked]
    pss = summarize(soak_with([], memory=memory))["pss_mib"]
    assert pss["median_growth_after_warmup"] == pytest.approx(0.05)
