"""The network registry: one entry per network, and every list of networks derived from it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from magnet_triton import settings as settings_module
from magnet_triton.errors import MagnetError
from magnet_triton.networks.registry import (
    BACKBONE,
    BACKBONES,
    IMAGENET,
    NETWORK_NAMES,
    NETWORKS,
    REFINER,
    REFINER_NETWORK,
    NetworkEntry,
    network_entry,
)
from magnet_triton.settings import get_preset


def test_every_list_of_networks_is_the_registry():
    assert tuple(NETWORKS) == NETWORK_NAMES
    assert set(BACKBONES) == {n for n, e in NETWORKS.items() if e.role == BACKBONE}
    assert settings_module.BACKBONES == BACKBONES
    assert NETWORKS[REFINER_NETWORK].role == REFINER
    assert REFINER_NETWORK not in BACKBONES


def test_a_preset_accepts_every_registered_backbone_and_refuses_the_refiner():
    for name in BACKBONES:
        assert get_preset("cityscapes").with_overrides(backbone=name).backbone == name
    with pytest.raises(MagnetError, match="unknown backbone 'refinement'"):
        get_preset("cityscapes").with_overrides(backbone=REFINER_NETWORK)


def test_an_unknown_network_is_refused_listing_the_registered_ones():
    with pytest.raises(MagnetError, match=r"unknown network 'unet'.*hrnet18\+ocr.*fpn"):
        network_entry("unet")


def test_entries_that_contradict_their_role_are_refused():
    fpn = NETWORKS["fpn"]
    with pytest.raises(MagnetError, match="needs the normalisation"):
        dataclasses.replace(fpn, normalization=None)
    with pytest.raises(MagnetError, match="not normalised"):
        dataclasses.replace(NETWORKS[REFINER_NETWORK], normalization=IMAGENET)
    with pytest.raises(MagnetError, match="role"):
        dataclasses.replace(fpn, role="decoder")


def test_imagenet_normalisation_is_the_published_statistics():
    # torchvision's ImageNet statistics, which every MagNet backbone was trained with.
    np.testing.assert_array_equal(IMAGENET.mean_array, np.float32([0.485, 0.456, 0.406]))
    np.testing.assert_array_equal(IMAGENET.std_array, np.float32([0.229, 0.224, 0.225]))
    assert all(NETWORKS[b].normalization is IMAGENET for b in BACKBONES)


def test_patches_are_normalised_with_the_backbones_entry():
    from magnet_triton.networks.registry import Normalization
    from magnet_triton.ops.patches import cut_patches

    image = np.full((8, 8, 3), 51, dtype=np.uint8)  # 51 / 255 = 0.2
    custom = Normalization(mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.25))
    patch = cut_patches(image, [(0, 0, 8, 8)], (8, 8), custom).numpy()
    np.testing.assert_allclose(patch[0, :, 0, 0], [(0.2 - 0.1) / 0.5, 0.0, (0.2 - 0.3) / 0.25], atol=1e-6)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "hrnet48+ocr" else n for n in NETWORK_NAMES]
)
def test_each_entry_names_real_classifier_and_residual_layers_of_its_network(name):
    torch = pytest.importorskip("torch")
    from magnet_triton.networks.checkpoint import residual_end_norms

    entry = network_entry(name)
    model = entry.build(5)
    for layer in entry.classifier_layers:
        module = model.get_submodule(layer)
        assert isinstance(module, torch.nn.Conv2d) and module.out_channels == 5, layer
    norms = residual_end_norms(model)
    assert norms, "every MagNet network adds residual or fuse paths"
    assert all(isinstance(model.get_submodule(n), torch.nn.BatchNorm2d) for n in norms)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == entry.input_channels(5)


def test_seeded_random_weights_centre_the_classifiers_the_registry_names():
    pytest.importorskip("torch")
    from magnet_triton.networks.checkpoint import random_state_dict

    state = random_state_dict("fpn", 4, seed=3)
    for layer in NETWORKS["fpn"].classifier_layers:
        weight = state[f"{layer}.weight"].double().numpy()
        # Zero mean over the input channels and taps, per class (an independent numpy reduction).
        assert np.abs(weight.mean(axis=(1, 2, 3))).max() < 1e-7


def test_a_new_backbone_is_one_entry(monkeypatch):
    """Registering a network makes it buildable and a valid preset backbone, with no other change."""
    pytest.importorskip("torch")
    from magnet_triton.networks import build_network, registry

    entry = NetworkEntry(
        name="fpn-copy",
        role=BACKBONE,
        builder="magnet_triton.networks.fpn:ResNetFPN",
        classifier_layers=("classify",),
        description="a test double of the FPN entry",
    )
    monkeypatch.setattr(registry, "NETWORKS", {**NETWORKS, entry.name: entry})
    from magnet_triton.networks.checkpoint import random_state_dict

    model = build_network("fpn-copy", 3)
    assert type(model).__name__ == "ResNetFPN"
    # Seeded weights (classifier centring, residual scaling) need nothing beyond the entry either.
    state = random_state_dict("fpn-copy", 3, seed=0)
    assert state.keys() == model.state_dict().keys()


def test_fp16_engines_pin_the_layers_the_onnx_files_network_needs(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from magnet_triton.export.onnx_export import NETWORK_METADATA_KEY
    from magnet_triton.export.tensorrt_build import registry_fp32_layers

    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"], axis=1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
    )
    model = helper.make_model(graph)
    path = tmp_path / "named.onnx"
    helper.set_model_props(model, {NETWORK_METADATA_KEY: "hrnet18+ocr"})
    onnx.save(model, path)
    assert registry_fp32_layers(path) == NETWORKS["hrnet18+ocr"].fp32_layers
    assert any("object_context_block" in p for p in registry_fp32_layers(path))

    anonymous = tmp_path / "anonymous.onnx"
    onnx.save(helper.make_model(graph), anonymous)
    with pytest.raises(MagnetError, match="does not say which network"):
        registry_fp32_layers(anonymous)
