"""The request-option table: each row's checks, and every consumer derived from the rows."""

from __future__ import annotations

import argparse
import dataclasses
import math

import numpy as np
import pytest

from magnet_triton import io_spec, request_options
from magnet_triton.errors import MagnetError
from magnet_triton.request_options import (
    MAX_N_PATCHES,
    MAX_N_POINTS,
    REQUEST_OPTIONS,
    RequestOption,
    add_option_arguments,
    apply_overrides,
    option_names,
    parse_overrides,
    request_option,
)
from magnet_triton.settings import MODES, PATCH_ORDERS, Settings, get_preset


def test_every_option_is_a_settings_field_with_an_upper_case_tensor():
    fields = {f.name for f in dataclasses.fields(Settings)}
    for option in REQUEST_OPTIONS:
        assert option.name in fields
        assert option.tensor == option.name.upper() and option.parameter == option.name
        assert option.flag == "--" + option.name.replace("_", "-")


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("mode", list(MODES), ["fast", "", "MAGNET"]),
        ("patch_order", list(PATCH_ORDERS), ["random"]),
        (
            "n_points",
            [1e-6, 0.5, 1.0, 2.0, 32768, MAX_N_POINTS],
            [0.0, -1.0, math.nan, math.inf, MAX_N_POINTS * 2],
        ),
        ("n_patches", [-1, 0, 1, 7, MAX_N_PATCHES, 3.0], [-2, MAX_N_PATCHES + 1, 1.5, math.nan]),
    ],
)
def test_each_row_accepts_its_range_and_refuses_the_rest_by_name(name, good, bad):
    option = request_option(name)
    for value in good:
        assert option.parse(value) == value
    for value in bad:
        with pytest.raises(MagnetError, match=name):
            option.parse(value)


def test_values_arrive_as_one_element_tensors_or_parameters_alike():
    assert parse_overrides({"MODE": np.array([b"downsample"], dtype=np.object_)}) == {"mode": "downsample"}
    assert parse_overrides({"n_patches": np.array([3], dtype=np.int32)}) == {"n_patches": 3}
    assert parse_overrides({"n_points": 0.25, "patch_order": None}) == {"n_points": 0.25}
    with pytest.raises(MagnetError, match="exactly one value"):
        parse_overrides({"N_POINTS": np.array([0.1, 0.2], dtype=np.float32)})
    with pytest.raises(MagnetError, match="not UTF-8"):
        parse_overrides({"MODE": np.array([b"\xff"], dtype=np.object_)})
    with pytest.raises(MagnetError, match=r"unknown override 'smooth'.*n_points"):
        parse_overrides({"smooth": 3})


def test_apply_overrides_changes_only_the_named_settings():
    base = get_preset("cityscapes")
    changed = apply_overrides(base, {"mode": "magnet-fast", "n_points": 0.5})
    assert (changed.mode, changed.n_points) == ("magnet-fast", 0.5)
    assert changed.scales == base.scales and changed.backbone == base.backbone


def test_the_pipeline_and_ensemble_take_one_optional_input_per_row():
    expected = [(o.tensor, o.dtype, (1,), True) for o in REQUEST_OPTIONS]
    for spec in (io_spec.pipeline_spec(), io_spec.ensemble_spec()):
        optional = [(t.name, t.dtype, t.dims, t.optional) for t in spec.inputs if t.optional]
        assert optional == expected


def test_encoded_tensors_have_the_dtype_the_config_declares():
    for option in REQUEST_OPTIONS:
        value = option.choices[0] if option.choices else 1
        array = option.encode(option.parse(value))
        assert array.shape == (1,)
        assert array.dtype == io_spec.pipeline_spec().input(option.tensor).numpy_dtype


def test_both_command_lines_have_one_flag_per_row_with_its_choices():
    from magnet_triton.cli import build_parser
    from magnet_triton.client.cli import build_parser as client_parser

    for parser, argv in (
        (build_parser(), ["export", "--preset", "deepglobe", "--out", "x"]),
        (client_parser(), ["segment", "a.png", "--out", "o"]),
    ):
        for option in REQUEST_OPTIONS:
            value = option.choices[-1] if option.choices else "1"
            args = parser.parse_args([*argv, option.flag, value])
            assert getattr(args, option.name) == (value if option.choices else float(value))
        if any(o.choices for o in REQUEST_OPTIONS):
            with pytest.raises(SystemExit):
                parser.parse_args([*argv, "--mode", "nope"])


def test_the_client_documents_every_option():
    from magnet_triton.client import MagnetClient

    for name in option_names():
        assert f"``{name}``" in (MagnetClient.segment.__doc__ or "")


def test_a_new_option_is_one_row(monkeypatch):
    """A row added to the table reaches io_spec, the configs, the server's parser, the client and the CLIs."""
    from magnet_triton.client.request import override_tensors
    from magnet_triton.export.repository import RepositoryOptions, model_configs

    row = RequestOption(
        "smooth_kernel",
        "INT32",
        help="odd median window",
        minimum=1,
        maximum=31,
        whole=True,
        range_text="1..31",
    )
    monkeypatch.setattr(request_options, "REQUEST_OPTIONS", (*REQUEST_OPTIONS, row))

    assert io_spec.pipeline_spec().input("SMOOTH_KERNEL").optional
    pipeline = model_configs(get_preset("deepglobe"), RepositoryOptions())[io_spec.PIPELINE_MODEL]
    assert "SMOOTH_KERNEL" in [t["name"] for t in pipeline["input"]]
    ensemble = model_configs(get_preset("deepglobe"), RepositoryOptions())[io_spec.ENSEMBLE_MODEL]
    steps = ensemble["ensemble_scheduling"]["step"]
    assert {"key": "SMOOTH_KERNEL", "value": "SMOOTH_KERNEL"} in steps[1]["input_map"]
    assert apply_overrides(get_preset("deepglobe"), {"SMOOTH_KERNEL": np.int32([7])}).smooth_kernel == 7
    (tensor,) = override_tensors({"smooth_kernel": 3})
    assert (tensor.name, tensor.datatype, tensor.array.tolist()) == ("SMOOTH_KERNEL", "INT32", [3])
    parser = argparse.ArgumentParser()
    add_option_arguments(parser)
    assert parser.parse_args(["--smooth-kernel", "9"]).smooth_kernel == 9
