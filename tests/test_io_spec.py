"""The declarative model interfaces: names, dtypes, dims and the values derived from them."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from magnet_triton import io_spec
from magnet_triton.errors import MagnetError
from magnet_triton.io_spec import (
    BATCH_AXIS,
    ModelSpec,
    TensorSpec,
    backbone_spec,
    decode_spec,
    ensemble_spec,
    pipeline_spec,
    refiner_number,
    refiner_spec,
)
from magnet_triton.settings import get_preset


@pytest.fixture(params=["cityscapes", "deepglobe"])
def settings(request):
    return get_preset(request.param)


def test_backbone_takes_normalised_patches_and_returns_class_probabilities(settings):
    spec = backbone_spec(settings, 32)
    iw, ih = settings.input_size
    assert spec.name == io_spec.BACKBONE_MODEL == "magnet_backbone"
    assert spec.max_batch_size == 32
    assert [(t.name, t.dtype, t.dims) for t in spec.inputs] == [("PATCHES", "FP32", (3, ih, iw))]
    assert [(t.name, t.dtype, t.dims) for t in spec.outputs] == [
        ("PROBABILITIES", "FP32", (settings.num_classes, ih, iw))
    ]


def test_refiner_takes_fine_then_coarse_probabilities(settings):
    spec = refiner_spec(settings, 8)
    iw, ih = settings.input_size
    c = settings.num_classes
    assert spec.name == "magnet_refiner"
    assert spec.input("FINE_AND_COARSE").dims == (2 * c, ih, iw)
    assert spec.output("PROBABILITIES").dims == (c, ih, iw)


def test_refiner_numbers_start_at_one():
    assert [refiner_number(i) for i in range(3)] == [1, 2, 3]


def test_cityscapes_dims_are_height_before_width():
    spec = backbone_spec(get_preset("cityscapes"), 1)
    assert spec.input("PATCHES").dims == (3, 128, 256)
    assert spec.output("PROBABILITIES").dims == (19, 128, 256)


def test_pipeline_has_one_image_and_four_optional_overrides():
    spec = pipeline_spec(get_preset("cityscapes"))
    assert spec.name == "magnet_pipeline" and spec.max_batch_size == 0
    required = [(t.name, t.dtype, t.dims) for t in spec.inputs if not t.optional]
    optional = [(t.name, t.dtype, t.dims) for t in spec.inputs if t.optional]
    assert required == [("IMAGE", "UINT8", (-1, -1, 3))]
    assert optional == [
        ("MODE", "BYTES", (1,)),
        ("N_POINTS", "FP32", (1,)),
        ("N_PATCHES", "INT32", (1,)),
        ("PATCH_ORDER", "BYTES", (1,)),
    ]
    assert [(t.name, t.dtype, t.dims) for t in spec.outputs] == [
        ("SEGMENTATION", "UINT8", (-1, -1)),
        ("COARSE_SEGMENTATION", "UINT8", (-1, -1)),
        ("CONFIDENCE", "FP32", (-1, -1)),
        ("SCALES_DONE", "INT32", (1,)),
    ]


def test_decode_turns_bytes_into_an_rgb_image():
    spec = decode_spec()
    assert spec.name == "magnet_decode" and spec.max_batch_size == 0
    assert spec.input("IMAGE_BYTES").dtype == "BYTES" and spec.input("IMAGE_BYTES").dims == (1,)
    assert spec.output("IMAGE").dims == (-1, -1, 3)


def test_ensemble_takes_bytes_plus_the_pipeline_overrides_and_returns_its_outputs():
    settings = get_preset("cityscapes")
    spec = ensemble_spec(settings)
    pipeline = pipeline_spec(settings)
    assert spec.name == "magnet" and spec.max_batch_size == 0
    assert spec.input_names == ["IMAGE_BYTES", "MODE", "N_POINTS", "N_PATCHES", "PATCH_ORDER"]
    assert not spec.input("IMAGE_BYTES").optional
    assert all(t.optional for t in spec.inputs[1:])
    assert spec.outputs == pipeline.outputs


@pytest.mark.parametrize(
    ("dtype", "numpy_dtype", "config_dtype"),
    [
        ("FP32", np.float32, "TYPE_FP32"),
        ("FP16", np.float16, "TYPE_FP16"),
        ("UINT8", np.uint8, "TYPE_UINT8"),
        ("INT32", np.int32, "TYPE_INT32"),
        ("BYTES", np.object_, "TYPE_STRING"),
    ],
)
def test_dtype_helpers_map_triton_names(dtype, numpy_dtype, config_dtype):
    t = TensorSpec("X", dtype, (1,))
    assert t.numpy_dtype == np.dtype(numpy_dtype)
    assert t.config_dtype == config_dtype


def test_unknown_dtype_and_zero_dims_are_refused():
    with pytest.raises(MagnetError, match="unknown dtype"):
        TensorSpec("X", "FLOAT", (1,))
    with pytest.raises(MagnetError, match="dims"):
        TensorSpec("X", "FP32", (0, 3))


def test_specs_are_frozen_and_hashable():
    spec = backbone_spec(get_preset("cityscapes"), 4)
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]
    assert spec == backbone_spec(get_preset("cityscapes"), 4)
    assert hash(spec) == hash(backbone_spec(get_preset("cityscapes"), 4))


def test_repeated_tensor_names_are_refused():
    t = TensorSpec("X", "FP32", (1,))
    with pytest.raises(MagnetError, match="repeat"):
        ModelSpec("m", (t,), (t,), max_batch_size=1)


def test_network_batch_must_be_positive():
    with pytest.raises(MagnetError, match="max_batch_size"):
        backbone_spec(get_preset("cityscapes"), 0)


def test_dynamic_axes_name_the_batch_of_every_network_tensor():
    spec = refiner_spec(get_preset("cityscapes"), 4)
    assert spec.dynamic_axes() == {"FINE_AND_COARSE": {0: BATCH_AXIS}, "PROBABILITIES": {0: BATCH_AXIS}}
    assert pipeline_spec(get_preset("cityscapes")).dynamic_axes() == {}


def test_batch_profile_spans_one_to_max_batch_size():
    spec = backbone_spec(get_preset("cityscapes"), 16)
    assert spec.batch_profile() == {"PATCHES": ((1, 3, 128, 256), (16, 3, 128, 256), (16, 3, 128, 256))}
    assert spec.batch_profile(2, 4, 8)["PATCHES"] == ((2, 3, 128, 256), (4, 3, 128, 256), (8, 3, 128, 256))


def test_batch_profile_refuses_disorder_and_unbatched_models():
    spec = backbone_spec(get_preset("cityscapes"), 16)
    with pytest.raises(MagnetError, match="min <= opt <= max"):
        spec.batch_profile(4, 2, 8)
    with pytest.raises(MagnetError, match="exceeds"):
        spec.batch_profile(1, 1, 32)
    with pytest.raises(MagnetError, match="no batch axis"):
        pipeline_spec(get_preset("cityscapes")).batch_profile()


def test_unknown_tensor_lookup_names_the_known_ones():
    with pytest.raises(MagnetError, match="PATCHES"):
        backbone_spec(get_preset("cityscapes"), 1).input("IMAGE")


def test_all_specs_lists_every_model_once():
    names = [
        s.name for s in io_spec.all_specs(get_preset("deepglobe"), backbone_max_batch=8, refiner_max_batch=4)
    ]
    assert names == ["magnet_backbone", "magnet_refiner", "magnet_pipeline", "magnet_decode", "magnet"]


def test_importing_io_spec_does_not_import_torch():
    code = "import sys, magnet_triton.io_spec; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_model_names_put_a_prefix_before_every_model_and_number_the_refiners():
    from magnet_triton.io_spec import DEFAULT_NAMES, ModelNames

    assert (DEFAULT_NAMES.ensemble, DEFAULT_NAMES.pipeline, DEFAULT_NAMES.refiner(0)) == (
        "magnet",
        "magnet_pipeline",
        "magnet_refiner_1",
    )
    names = ModelNames("cityscapes")
    assert names.networks(3) == [
        "cityscapes_magnet_backbone",
        "cityscapes_magnet_refiner_1",
        "cityscapes_magnet_refiner_2",
        "cityscapes_magnet_refiner_3",
    ]
    assert (names.decode, names.progressive) == (
        "cityscapes_magnet_decode",
        "cityscapes_magnet_pipeline_progressive",
    )
    # Every entry point reads back to its preset's names; anything else is refused with the expected forms.
    for model in (names.ensemble, names.pipeline, names.progressive):
        assert ModelNames.of_entry_point(model) == names
    assert ModelNames.of_entry_point("magnet_pipeline") == DEFAULT_NAMES
    with pytest.raises(
        MagnetError, match=r"'magnet_backbone' is not a MagNet entry point.*cityscapes_magnet"
    ):
        ModelNames.of_entry_point("magnet_backbone")
    with pytest.raises(MagnetError, match="no '_'"):
        ModelNames("city_scapes")
    with pytest.raises(MagnetError, match="refiner index must be >= 0"):
        names.refiner(-1)


def test_network_models_are_told_from_the_others_whatever_their_prefix():
    from magnet_triton.io_spec import ModelNames, is_network_model

    for names in (ModelNames(), ModelNames("inria")):
        assert all(is_network_model(n) for n in names.networks(2))
        assert not any(is_network_model(n) for n in (names.ensemble, names.pipeline, names.decode))
