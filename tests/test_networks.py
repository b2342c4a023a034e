"""The networks: the authors' checkpoint layout, strict loading, forward shapes and conventions.

The layout facts come from ``tests/reference/official_state_dict.json`` (key names, shapes and the
number of values in each authors' state dict), the arithmetic from ``tests/reference/network_outputs.npz``
(the authors' logits on seeded inputs, a subset of the full file; see ``tests/reference/README.md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from magnet_triton.errors import MagnetError
from magnet_triton.networks import NETWORK_NAMES, build_network
from magnet_triton.networks.checkpoint import (
    apply_state_dict,
    load_checkpoint,
    random_state_dict,
    save_checkpoint,
)
from magnet_triton.networks.ocr import spatial_gather
from magnet_triton.networks.psp import AdaptiveAvgPool
from tests.reference_data import formula_weights, network_case, official_layouts

# Small inputs each architecture accepts: (B, h, w). HRNet keeps full resolution in its stem, so its
# cost grows fast with size; the ResNets need multiples of 32.
SMALL_INPUT = {
    "refinement": (2, 16, 8),
    "hrnet18+ocr": (1, 32, 16),
    "hrnet48+ocr": (1, 16, 16),
    "fpn": (1, 64, 32),
    "psp": (1, 64, 32),
}


def _input_channels(name: str, num_classes: int) -> int:
    return 2 * num_classes if name == "refinement" else 3


@pytest.fixture(scope="module")
def official() -> dict[str, Any]:
    return official_layouts()


@pytest.fixture(scope="module")
def official_models(official: dict[str, Any]) -> dict[str, torch.nn.Module]:
    """Each network built once with the class count of the authors' checkpoint (building psp takes ~1 s)."""
    return {name: build_network(name, official[name]["num_classes"]) for name in NETWORK_NAMES}


def _synthetic_official_checkpoint(official: dict[str, Any], name: str) -> dict[str, torch.Tensor]:
    """Random tensors with exactly the key names and shapes of the authors' checkpoint."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in official[name]["state_dict"].items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7, dtype=torch.int64)
        else:
            state[key] = torch.rand(shape, generator=generator) + 0.5  # positive: valid as running_var
    return state


# --- layout -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NETWORK_NAMES)
def test_state_dict_matches_official_layout(official, official_models, name):
    ours = {k: list(v.shape) for k, v in official_models[name].state_dict().items()}
    theirs = official[name]["state_dict"]
    assert sorted(set(theirs) - set(ours)) == [], "keys in the authors' checkpoint but not in ours"
    assert sorted(set(ours) - set(theirs)) == [], "keys in ours but not in the authors' checkpoint"
    assert {k: s for k, s in ours.items() if s != theirs[k]} == {}


@pytest.mark.parametrize("name", NETWORK_NAMES)
def test_parameter_count_matches_official(official, official_models, name):
    # The JSON's count is every value of the state dict: parameters and BN buffers alike.
    state = official_models[name].state_dict()
    assert sum(v.numel() for v in state.values()) == official[name]["parameters"]


def test_refiner_input_is_fine_then_coarse_probabilities():
    refiner = build_network("refinement", 19)
    assert refiner.conv1.in_channels == 38
    assert refiner.bn0.momentum == pytest.approx(0.01)
    assert refiner.bn0.eps == pytest.approx(1e-5)


CLASS_DEPENDENT_KEYS = {
    "refinement": {
        "bn0.weight",
        "bn0.bias",
        "bn0.running_mean",
        "bn0.running_var",
        "conv1.weight",
        "seg_conv.weight",
    },
    "hrnet18+ocr": {"cls_head.weight", "cls_head.bias", "aux_head.3.weight", "aux_head.3.bias"},
    "hrnet48+ocr": {"cls_head.weight", "cls_head.bias", "aux_head.3.weight", "aux_head.3.bias"},
    "fpn": {"classify.weight", "classify.bias"},
    "psp": {"final.weight", "final.bias", "classifier.weight", "classifier.bias"},
}


@pytest.mark.parametrize("name", NETWORK_NAMES)
def test_other_class_counts_change_only_the_class_layers(official, name):
    five = {k: list(v.shape) for k, v in build_network(name, 5).state_dict().items()}
    theirs = official[name]["state_dict"]
    assert set(five) == set(theirs)
    assert {k for k in five if five[k] != theirs[k]} == CLASS_DEPENDENT_KEYS[name]


# --- build_network ----------------------------------------------------------------------------------


def test_unknown_network_name_lists_the_valid_ones():
    with pytest.raises(MagnetError) as info:
        build_network("unet", 19)
    for name in NETWORK_NAMES:
        assert name in str(info.value)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_class_count_below_one_is_rejected(bad):
    with pytest.raises(MagnetError, match="num_classes"):
        build_network("refinement", bad)


# --- loading checkpoints ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    # hrnet48+ocr writes and reads a 280 MB file: about 5 s on 2 cores.
    [pytest.param(n, marks=pytest.mark.slow) if n == "hrnet48+ocr" else n for n in NETWORK_NAMES],
)
def test_loads_authors_checkpoint_in_every_form(official, official_models, tmp_path, name):
    state = _synthetic_official_checkpoint(official, name)
    model = official_models[name]
    key = next(k for k in state if k.endswith("weight"))
    # Big networks: one file with both prefix and wrapper; the small ones try every combination.
    forms = (
        [(True, True)]
        if name in ("hrnet48+ocr", "psp")
        else [(False, False), (True, False), (False, True), (True, True)]
    )
    for prefix, wrap in forms:
        path = tmp_path / f"{name}-{prefix}-{wrap}.pth"
        save_checkpoint(state, path, prefix=prefix, wrap=wrap)
        with torch.no_grad():
            model.state_dict()[key].zero_()
        load_checkpoint(model, path)
        assert torch.equal(model.state_dict()[key], state[key]), (prefix, wrap)
        path.unlink()


def test_already_loaded_dict_can_be_applied(official):
    refiner = build_network("refinement", 19)
    state = _synthetic_official_checkpoint(official, "refinement")
    apply_state_dict(refiner, {"state_dict": {f"model.{k}": v for k, v in state.items()}})
    assert torch.equal(refiner.seg_conv.weight, state["seg_conv.weight"])


def _refiner_file(tmp_path: Path, state: dict[str, torch.Tensor], name: str = "refiner.pth") -> Path:
    path = tmp_path / name
    save_checkpoint(state, path)
    return path


def test_checkpoint_missing_a_key_is_rejected_naming_it(official, tmp_path):
    state = _synthetic_official_checkpoint(official, "refinement")
    del state["residual.1.bn2.running_var"]
    path = _refiner_file(tmp_path, state)
    with pytest.raises(MagnetError) as info:
        load_checkpoint(build_network("refinement", 19), path)
    message = str(info.value)
    assert str(path) in message
    assert "missing keys (1): residual.1.bn2.running_var" in message


def test_checkpoint_with_an_extra_key_is_rejected_naming_it(official, tmp_path):
    state = _synthetic_official_checkpoint(official, "refinement")
    state["seg_conv.bias"] = torch.zeros(19)
    path = _refiner_file(tmp_path, state)
    with pytest.raises(MagnetError, match=r"unexpected keys \(1\): seg_conv\.bias"):
        load_checkpoint(build_network("refinement", 19), path)


def test_checkpoint_with_a_wrong_shape_is_rejected_with_both_shapes(official, tmp_path):
    state = _synthetic_official_checkpoint(official, "refinement")
    state["conv2.weight"] = torch.zeros(64, 64, 1, 1)
    path = _refiner_file(tmp_path, state)
    with pytest.raises(MagnetError) as info:
        load_checkpoint(build_network("refinement", 19), path)
    assert "conv2.weight (checkpoint [64, 64, 1, 1], network [64, 64, 3, 3])" in str(info.value)


def test_checkpoint_for_another_class_count_is_rejected(tmp_path):
    path = _refiner_file(tmp_path, random_state_dict("refinement", 7, seed=0))
    with pytest.raises(MagnetError) as info:
        load_checkpoint(build_network("refinement", 19), path)
    message = str(info.value)
    assert "seg_conv.weight (checkpoint [7, 128, 1, 1], network [19, 128, 1, 1])" in message
    assert "bn0.weight" in message
    assert "number of classes" in message


def test_long_key_lists_are_truncated_with_a_count(tmp_path):
    path = _refiner_file(tmp_path, {"something.else": torch.zeros(1)})
    with pytest.raises(MagnetError) as info:
        load_checkpoint(build_network("refinement", 19), path)
    message = str(info.value)
    assert "missing keys (60): bn0.weight" in message
    assert "(50 more)" in message
    assert "residual.1.conv3.weight" not in message


def test_missing_checkpoint_file_is_a_magnet_error(tmp_path):
    path = tmp_path / "nowhere.pth"
    with pytest.raises(MagnetError, match="not found") as info:
        load_checkpoint(build_network("refinement", 19), path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"", b"definitely not a checkpoint" * 10])
def test_corrupt_checkpoint_file_is_a_magnet_error(tmp_path, content):
    path = tmp_path / "corrupt.pth"
    path.write_bytes(content)
    with pytest.raises(MagnetError, match="cannot read checkpoint") as info:
        load_checkpoint(build_network("refinement", 19), path)
    assert str(path) in str(info.value)
    assert info.value.__cause__ is not None


def test_truncated_checkpoint_file_is_a_magnet_error(tmp_path):
    path = _refiner_file(tmp_path, random_state_dict("refinement", 19, seed=0))
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(MagnetError, match="cannot read checkpoint"):
        load_checkpoint(build_network("refinement", 19), path)


class _PickledObject:
    """Not a tensor or container: torch.load(weights_only=True) refuses files holding one."""


def test_checkpoint_holding_arbitrary_objects_is_refused_in_one_short_message(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": {}, "trainer": _PickledObject()}, path)
    with pytest.raises(MagnetError, match="holds Python objects besides tensors") as info:
        load_checkpoint(build_network("refinement", 19), path)
    assert str(path) in str(info.value) and len(str(info.value)) < 400


def test_checkpoint_that_is_not_a_dict_is_a_magnet_error(tmp_path):
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(MagnetError, match="expected a state dict"):
        load_checkpoint(build_network("refinement", 19), path)


def test_checkpoint_with_non_tensor_values_is_a_magnet_error(tmp_path):
    path = tmp_path / "numbers.pth"
    torch.save({"bn0.weight": 3}, path)
    with pytest.raises(MagnetError, match=r"'bn0\.weight' is a int, not a tensor"):
        load_checkpoint(build_network("refinement", 19), path)


# --- random weights ---------------------------------------------------------------------------------


def test_random_weights_are_deterministic_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = random_state_dict("refinement", 19, seed=4)
    assert torch.equal(torch.rand(3), expected_next)
    second = random_state_dict("refinement", 19, seed=4)
    other = random_state_dict("refinement", 19, seed=5)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["conv1.weight"], other["conv1.weight"])


@pytest.mark.parametrize(
    ("name", "num_classes"),
    [("refinement", 19), ("hrnet18+ocr", 19), ("hrnet48+ocr", 19), ("fpn", 7), ("psp", 4)],
)
def test_random_weights_give_varied_finite_predictions(name, num_classes):
    model = build_network(name, num_classes)
    model.load_state_dict(random_state_dict(name, num_classes, seed=0))
    model.eval()
    generator = torch.Generator().manual_seed(1)
    _, h, w = SMALL_INPUT[name]
    if name == "refinement":
        # Realistic input: two probability maps (fine, then coarse).
        x = torch.softmax(3 * torch.randn(1, 2, num_classes, 32, 32, generator=generator), dim=2)
        x = x.reshape(1, 2 * num_classes, 32, 32)
    else:
        x = torch.randn(1, 3, max(h, 32), max(w, 32), generator=generator)
    with torch.no_grad():
        logits = model(x)
    assert torch.isfinite(logits).all()
    assert logits.abs().max() < 1e3
    assert logits.std(dim=(2, 3)).mean() > 0.01, "logits barely vary across pixels"
    assert logits.argmax(1).unique().numel() >= 2, "one class everywhere"


# --- forward ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [19, 5])
@pytest.mark.parametrize("name", NETWORK_NAMES)
def test_forward_returns_logits_at_input_resolution(name, num_classes):
    torch.manual_seed(0)
    model = build_network(name, num_classes).eval()
    b, h, w = SMALL_INPUT[name]
    x = torch.randn(b, _input_channels(name, num_classes), h, w)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (b, num_classes, h, w)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def _interpolation_calls(monkeypatch, name: str) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    original = F.interpolate

    def recording(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append({"mode": kwargs.get("mode"), "align_corners": kwargs.get("align_corners")})
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "interpolate", recording)
    model = build_network(name, 3).eval()
    _, h, w = SMALL_INPUT[name]
    with torch.no_grad():
        model(torch.randn(1, 3, h, w))
    return calls


@pytest.mark.parametrize("name", ["hrnet18+ocr", "hrnet48+ocr"])
def test_hrnet_interpolates_with_align_corners(monkeypatch, name):
    calls = _interpolation_calls(monkeypatch, name)
    assert len(calls) > 10  # fuse layers, the branch concat and the two heads
    assert all(c == {"mode": "bilinear", "align_corners": True} for c in calls)


@pytest.mark.parametrize("name", ["fpn", "psp"])
def test_resnet_networks_interpolate_with_half_pixel_centres(monkeypatch, name):
    calls = _interpolation_calls(monkeypatch, name)
    assert len(calls) >= 5
    assert all(c == {"mode": "bilinear", "align_corners": False} for c in calls)


def test_hrnet_stem_keeps_full_resolution():
    model = build_network("hrnet18+ocr", 19)
    assert model.conv1.stride == (1, 1) and model.conv2.stride == (1, 1)
    with torch.no_grad():
        features = model.eval().forward_features(torch.randn(1, 3, 16, 8))
    assert features.shape == (1, 18 + 36 + 72 + 144, 16, 8)


def test_refiner_matches_a_functional_recomputation():
    torch.manual_seed(0)
    refiner = build_network("refinement", 4)
    refiner.load_state_dict(random_state_dict("refinement", 4, seed=3))
    refiner.eval()
    p = {k: v for k, v in refiner.state_dict().items()}
    x = torch.rand(2, 8, 12, 10)

    def bn(t: torch.Tensor, n: str) -> torch.Tensor:
        return (t - p[f"{n}.running_mean"][:, None, None]) / torch.sqrt(
            p[f"{n}.running_var"][:, None, None] + 1e-5
        ) * p[f"{n}.weight"][:, None, None] + p[f"{n}.bias"][:, None, None]

    def bottleneck(t: torch.Tensor, n: str, project: bool) -> torch.Tensor:
        y = F.relu(bn(F.conv2d(t, p[f"{n}.conv1.weight"]), f"{n}.bn1"))
        y = F.relu(bn(F.conv2d(y, p[f"{n}.conv2.weight"], padding=1), f"{n}.bn2"))
        y = bn(F.conv2d(y, p[f"{n}.conv3.weight"]), f"{n}.bn3")
        shortcut = bn(F.conv2d(t, p[f"{n}.downsample.0.weight"]), f"{n}.downsample.1") if project else t
        return F.relu(y + shortcut)

    y = bn(x, "bn0")
    y = F.relu(bn(F.conv2d(y, p["conv1.weight"], padding=1), "bn1"))
    y = F.relu(bn(F.conv2d(y, p["conv2.weight"], padding=1), "bn2"))
    y = bottleneck(y, "residual.0", project=True)
    y = bottleneck(y, "residual.1", project=False)
    expected = F.conv2d(y, p["seg_conv.weight"])
    with torch.no_grad():
        torch.testing.assert_close(refiner(x), expected, rtol=1e-4, atol=1e-4)


# --- the authors' arithmetic -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "hrnet48+ocr" else n for n in NETWORK_NAMES]
)
def test_each_network_reproduces_the_authors_logits_in_float64(official, name):
    case = network_case(name)
    model = build_network(name, official[name]["num_classes"])
    model.load_state_dict(formula_weights(official[name]["state_dict"]))
    model = model.double().eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(case.input).double()).numpy()
    assert logits.shape[:2] == case.logits.shape[:2]
    logits = case.at_kept_pixels(logits)
    # The same computation agrees to float64 round-off, ~1e-12 of the largest logit; a different
    # architecture (psp dilated to stride 8, say) is off by tenths.
    assert np.abs(logits - case.logits).max() <= 1e-9 * np.abs(case.logits).max()


@pytest.mark.slow
def test_psp_takes_the_authors_gleason_patch_size_at_output_stride_32():
    """625 x 625, the patch and input size of the authors' published Gleason command: not a multiple of
    32, so each stride-2 step rounds up (625 -> 313 -> 157 -> 79 -> 40 -> 20)."""
    model = build_network("psp", 4).eval()
    x = torch.randn(1, 3, 625, 625, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = model.feats(x)[3]
        logits = model(x)
    assert features.shape[2:] == (20, 20)
    assert logits.shape == (1, 4, 625, 625) and torch.isfinite(logits).all()


# --- building blocks --------------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "w"), [(8, 8), (7, 13), (64, 64), (1, 1), (5, 2)])
@pytest.mark.parametrize("bins", [1, 2, 3, 6])
def test_matrix_adaptive_pooling_equals_torch(h, w, bins):
    x = torch.randn(2, 3, h, w)
    torch.testing.assert_close(AdaptiveAvgPool(bins)(x), F.adaptive_avg_pool2d(x, bins))


def test_ocr_spatial_gather_softmax_runs_over_pixels():
    features = torch.randn(2, 5, 4, 3)
    flat_logits = torch.zeros(2, 3, 4, 3)
    flat_logits[:, 1, 0, 0] = 100.0  # class 1 looks only at pixel (0, 0)
    gathered = spatial_gather(features, flat_logits)
    assert gathered.shape == (2, 5, 3, 1)
    torch.testing.assert_close(gathered[:, :, 0, 0], features.mean(dim=(2, 3)))
    torch.testing.assert_close(gathered[:, :, 1, 0], features[:, :, 0, 0])
