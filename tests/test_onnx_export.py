"""Export tier: every network to ONNX, checked against PyTorch in onnxruntime; clean-up; artifacts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from magnet_triton.errors import MagnetError
from magnet_triton.export.artifacts import build_artifacts, load_artifacts
from magnet_triton.export.graph_cleanup import cleanup_graph, dead_nodes, op_counts, unused_initializers
from magnet_triton.export.onnx_export import export_onnx, graph_io_shapes
from magnet_triton.export.parity import (
    make_inputs,
    parity_report,
    register,
    run_onnxruntime,
    torch_probabilities,
)
from magnet_triton.export.supported_ops import tensorrt_problems, unsupported_ops
from magnet_triton.io_spec import BATCH_AXIS, backbone_spec, refiner_spec
from magnet_triton.networks import NETWORK_NAMES, build_network
from magnet_triton.networks.weights import network_with_weights
from magnet_triton.settings import Settings, get_preset
from tests.reference_data import formula_weights, network_case, official_layouts

slow = pytest.mark.slow


def _export(tmp: Path, name: str, num_classes: int, input_size: tuple[int, int], seed: int = 0):
    settings = get_preset("cityscapes", input_size=input_size).with_overrides(num_classes=num_classes)
    spec = refiner_spec(settings, 8) if name == "refinement" else backbone_spec(settings, 8)
    model = network_with_weights(name, num_classes, random_seed=seed)
    path = export_onnx(model, spec, tmp / f"{name}.onnx")
    return path, spec, model


@pytest.fixture(scope="module")
def refiner19(tmp_path_factory):
    """The Cityscapes refiner (C=19, 256x128 patches) exported once for several tests."""
    return _export(tmp_path_factory.mktemp("refiner19"), "refinement", 19, (256, 128))


# ---------------------------------------------------------------------- parity per network
@pytest.mark.parametrize(("num_classes", "input_size"), [(19, (256, 128)), (7, (96, 80))])
def test_refiner_matches_pytorch_within_fp32_bounds(tmp_path, num_classes, input_size):
    path, _, model = _export(tmp_path, "refinement", num_classes, input_size)
    report = parity_report("refinement", num_classes, path, model, batch=2, seed=3)
    assert report.passed, report.table()
    assert report.input_size == input_size
    assert report.fp64_max_abs is not None


BACKBONES = [
    pytest.param("hrnet18+ocr", (64, 32), id="hrnet18+ocr-64x32"),
    pytest.param("fpn", (64, 64), id="fpn-64x64"),
    pytest.param("hrnet18+ocr", (256, 128), id="hrnet18+ocr-256x128", marks=slow),
    pytest.param("hrnet48+ocr", (64, 32), id="hrnet48+ocr-64x32", marks=slow),
    pytest.param("psp", (64, 64), id="psp-64x64", marks=slow),
    pytest.param("fpn", (508, 508), id="fpn-508x508", marks=slow),
]


@pytest.mark.parametrize(("name", "input_size"), BACKBONES)
def test_backbone_matches_pytorch_and_uses_only_tensorrt_ops(tmp_path, name, input_size):
    path, spec, model = _export(tmp_path, name, 19, input_size)
    proto = onnx.load(str(path))
    assert tensorrt_problems(proto) == []
    assert graph_io_shapes(proto) == {
        "PATCHES": (BATCH_AXIS, *spec.input("PATCHES").dims),
        "PROBABILITIES": (BATCH_AXIS, *spec.output("PROBABILITIES").dims),
    }
    assert dead_nodes(proto) == [] and "Identity" not in op_counts(proto)
    report = parity_report(name, 19, path, model, batch=1, fp64=False)
    assert report.passed, report.table()


def test_hrnet_ocr_resizes_use_align_corners(tmp_path):
    path, _, _ = _export(tmp_path, "hrnet18+ocr", 19, (64, 32))
    modes = {
        helper.get_attribute_value(a).decode()
        for n in onnx.load(str(path)).graph.node
        if n.op_type == "Resize"
        for a in n.attribute
        if a.name == "coordinate_transformation_mode"
    }
    assert modes == {"align_corners"}


# ---------------------------------------------------------------------- the authors' numbers
# hrnet48+ocr and psp take 20-30 s each to build and export on two cores.
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=slow) if n in ("hrnet48+ocr", "psp") else n for n in NETWORK_NAMES]
)
def test_each_exported_network_reproduces_the_authors_probabilities_in_float32(tmp_path, name):
    """The exported graph, run by onnxruntime in float32, against the authors' float64 logits
    (``tests/reference/network_outputs.npz``) through a float64 softmax.

    Bound: the export must be as close to the authors' numbers as PyTorch's own float32 run of the same
    network, within a factor 4 (measured 0.36-0.7 of it on each network), plus one float32 step at 1.
    A graph that drifts (another resize rule, a dropped layer, BN not folded right) is off by 1e-2 or
    more; float32 round-off alone is 2e-8 (refiner) to 2e-4 (hrnet48+ocr, logits up to 680).
    """
    layout = official_layouts()[name]
    case = network_case(name)
    model = build_network(name, layout["num_classes"])
    model.load_state_dict(formula_weights(layout["state_dict"]))
    model.eval()
    height, width = case.input.shape[2:]
    settings = get_preset("cityscapes", input_size=(width, height))
    settings = settings.with_overrides(num_classes=layout["num_classes"])
    spec = refiner_spec(settings, 1) if name == "refinement" else backbone_spec(settings, 1)
    path = export_onnx(model, spec, tmp_path / f"{name}.onnx")

    expected = torch.softmax(torch.from_numpy(case.logits), dim=1).numpy()
    exported = case.at_kept_pixels(run_onnxruntime(path, case.input))
    with torch.no_grad():
        pytorch_fp32 = case.at_kept_pixels(torch.softmax(model(torch.from_numpy(case.input)), 1).numpy())
    fp32_error = np.abs(pytorch_fp32 - expected).max()
    export_error = np.abs(exported - expected).max()
    assert export_error <= 4 * fp32_error + np.finfo(np.float32).eps, (export_error, fp32_error)


# ---------------------------------------------------------------------- graph shape and names
def test_names_and_dims_come_from_the_spec(refiner19):
    path, spec, _ = refiner19
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == spec.input_names == ["FINE_AND_COARSE"]
    assert [o.name for o in proto.graph.output] == spec.output_names == ["PROBABILITIES"]
    assert graph_io_shapes(proto) == {
        "FINE_AND_COARSE": ("batch", 38, 128, 256),
        "PROBABILITIES": ("batch", 19, 128, 256),
    }
    assert proto.opset_import[0].version >= 17
    assert {p.key: p.value for p in proto.metadata_props}["magnet_triton.model"] == "magnet_refiner"


def test_dynamic_batch_runs_batch_one_and_three_on_one_file(refiner19):
    path, _, model = refiner19
    for batch in (1, 3):
        x = make_inputs("refinement", 19, (256, 128), batch, seed=batch)
        got = run_onnxruntime(path, x)
        assert got.shape == (batch, 19, 128, 256)
        np.testing.assert_allclose(got, torch_probabilities(model, x), atol=2e-3)


def test_graph_ends_with_softmax_so_outputs_are_probabilities(refiner19):
    path, _, _ = refiner19
    x = make_inputs("refinement", 19, (256, 128), 1, seed=0)
    np.testing.assert_allclose(run_onnxruntime(path, x).sum(axis=1), 1.0, atol=1e-5)
    assert onnx.load(str(path)).graph.node[-1].op_type == "Softmax"


def test_exported_refiner_is_clean_and_tensorrt_compatible(refiner19):
    proto = onnx.load(str(refiner19[0]))
    assert dead_nodes(proto) == [] and unused_initializers(proto) == []
    assert "Identity" not in op_counts(proto)
    assert unsupported_ops(proto) == set() and tensorrt_problems(proto) == []


def test_export_leaves_the_model_in_its_training_mode(tmp_path):
    model = network_with_weights("refinement", 3, random_seed=0).train()
    export_onnx(model, refiner_spec(_tiny_settings(), 2), tmp_path / "r.onnx")
    assert model.training


def test_export_refuses_an_unbatched_spec_and_old_opsets(tmp_path):
    from magnet_triton.io_spec import pipeline_spec

    model = network_with_weights("refinement", 3, random_seed=0)
    with pytest.raises(MagnetError, match="not a network"):
        export_onnx(model, pipeline_spec(_tiny_settings()), tmp_path / "p.onnx")
    with pytest.raises(MagnetError, match="opset"):
        export_onnx(model, refiner_spec(_tiny_settings(), 2), tmp_path / "r.onnx", opset=13)


def test_export_refuses_a_network_whose_output_size_differs_from_the_spec(tmp_path):
    class HalfSize(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(6, 3, 3, stride=2, padding=1)

        def forward(self, x):
            return self.conv(x)

    with pytest.raises(MagnetError, match="input resolution"):
        export_onnx(HalfSize(), refiner_spec(_tiny_settings(), 2), tmp_path / "h.onnx")
    assert not (tmp_path / "h.onnx").exists()


# ---------------------------------------------------------------------- clean-up on hand-made graphs
def _graph_with_litter() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 4])
    nodes = [
        helper.make_node("Identity", ["X"], ["x1"], name="id_in"),
        helper.make_node("Cast", ["x1"], ["x2"], to=TensorProto.FLOAT, name="noop_cast"),
        helper.make_node("Relu", ["x2"], ["r"], name="relu"),
        helper.make_node("Sigmoid", ["x2"], ["dead"], name="dead_sigmoid"),
        helper.make_node("Identity", ["r"], ["Y"], name="id_out"),
    ]
    graph = helper.make_graph(nodes, "litter", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_cleanup_removes_identities_noop_casts_and_dead_nodes_but_keeps_io_names():
    model = _graph_with_litter()
    assert dead_nodes(model) == ["dead_sigmoid"]
    clean = cleanup_graph(model)
    onnx.checker.check_model(clean, full_check=True)
    assert [n.op_type for n in clean.graph.node] == ["Relu"]
    assert clean.graph.node[0].input == ["X"] and clean.graph.node[0].output == ["Y"]
    assert graph_io_shapes(clean) == {"X": ("batch", 4), "Y": ("batch", 4)}
    assert clean.ir_version == model.ir_version


def test_cleanup_keeps_a_real_cast():
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("Y", TensorProto.INT32, [2])
    graph = helper.make_graph([helper.make_node("Cast", ["X"], ["Y"], to=TensorProto.INT32)], "g", [x], [y])
    clean = cleanup_graph(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert [n.op_type for n in clean.graph.node] == ["Cast"]


# ---------------------------------------------------------------------- TensorRT op checks
def _resize_model(coord: str, mode: str) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 1, 8, 8])
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    node = helper.make_node(
        "Resize", ["X", "", "scales"], ["Y"], name="r", coordinate_transformation_mode=coord, mode=mode
    )
    graph = helper.make_graph([node], "g", [x], [y], initializer=[scales])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("coord", ["align_corners", "half_pixel", "pytorch_half_pixel", "asymmetric"])
def test_resize_modes_tensorrt_implements_pass(coord):
    assert tensorrt_problems(_resize_model(coord, "linear")) == []


def test_resize_modes_tensorrt_lacks_are_reported():
    assert "tf_crop_and_resize" in tensorrt_problems(_resize_model("tf_crop_and_resize", "linear"))[0]
    assert "cubic" in tensorrt_problems(_resize_model("half_pixel", "cubic"))[0]


def test_unsupported_and_foreign_domain_ops_are_named():
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [4])
    nodes = [
        helper.make_node("Unique", ["X"], ["u"]),
        helper.make_node("Custom", ["X"], ["c"], domain="com.example"),
    ]
    graph = helper.make_graph(
        nodes, "g", [x], [helper.make_tensor_value_info("u", TensorProto.FLOAT, [None])]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert unsupported_ops(model) == {"Unique", "com.example::Custom"}


def test_float64_is_reported():
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("Y", TensorProto.DOUBLE, [2])
    graph = helper.make_graph([helper.make_node("Cast", ["X"], ["Y"], to=TensorProto.DOUBLE)], "g", [x], [y])
    problems = tensorrt_problems(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert any("float64" in p for p in problems)


# ---------------------------------------------------------------------- parity command
def _parity_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["parity", *argv])


def test_parity_command_passes_with_the_export_weights_and_writes_json(refiner19, tmp_path, capsys):
    out = tmp_path / "parity.json"
    argv = ["--onnx", str(refiner19[0]), "--network", "refinement", "--num-classes", "19"]
    args = _parity_args([*argv, "--random-weights", "0", "--batch", "1", "--json", str(out)])
    assert args.func(args) == 0
    assert "PASS" in capsys.readouterr().out
    assert json.loads(out.read_text())["passed"] is True


def test_parity_command_exits_1_when_weights_differ(refiner19):
    argv = ["--onnx", str(refiner19[0]), "--network", "refinement", "--num-classes", "19"]
    args = _parity_args([*argv, "--random-weights", "1", "--batch", "1"])
    assert args.func(args) == 1


def test_parity_refuses_an_input_size_the_graph_does_not_have(refiner19):
    path, _, model = refiner19
    with pytest.raises(MagnetError, match="differs from the exported graph"):
        parity_report("refinement", 19, path, model, input_size=(128, 64))


def test_refiner_inputs_are_pairs_of_probability_maps():
    x = make_inputs("refinement", 5, (8, 4), 2, seed=0)
    assert x.shape == (2, 10, 4, 8) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, :5].sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(x[:, 5:].sum(axis=1), 1.0, atol=1e-5)


def test_backbone_inputs_are_normalised_images():
    x = make_inputs("fpn", 7, (16, 8), 1, seed=0)
    assert x.shape == (1, 3, 8, 16)
    lo = (0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    hi = (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    assert np.all(x.min(axis=(0, 2, 3)) >= lo - 1e-6) and np.all(x.max(axis=(0, 2, 3)) <= hi + 1e-6)


# ---------------------------------------------------------------------- artifacts
def _tiny_settings(backbone: str = "fpn", n_refiners: int = 3) -> Settings:
    return Settings(
        scales=((64, 32), (128, 64), (256, 128), (512, 256)),
        crop_size=(64, 32),
        input_size=(64, 32),
        num_classes=3,
        backbone=backbone,
        n_refiners=n_refiners,
        n_points=0.5,
    )


def test_artifacts_with_random_weights_export_one_refiner_per_version(tmp_path):
    lines: list[str] = []
    out = tmp_path / "out"
    art = build_artifacts(
        _tiny_settings(),
        backbone_checkpoint=None,
        refiner_checkpoints=[],
        random_seed=5,
        out_dir=out,
        target="cpu",
        precision="fp32",
        max_batch=4,
        progress=lines.append,
    )
    assert art.backbone_onnx == out / "onnx" / "backbone.onnx" and art.backbone_onnx.is_file()
    assert [p.name for p in art.refiner_onnx] == ["refiner_1.onnx", "refiner_2.onnx", "refiner_3.onnx"]
    assert len({p.read_bytes() for p in art.refiner_onnx}) == 3  # distinct seeds, distinct weights
    assert art.backbone_engine is None and art.refiner_engines == []
    assert art.provenance["random_weights"] is True
    assert art.provenance["networks"]["refiner_2"] == {"weights": "random", "seed": 7}
    assert all(r.passed for r in art.parity.values()) and set(art.parity) >= {"backbone", "refiner_3"}
    assert any("exporting ONNX" in line for line in lines)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left behind
    again = load_artifacts(out)
    assert again.to_dict() == art.to_dict()


def test_one_shared_refiner_checkpoint_serves_every_version(tmp_path):
    from magnet_triton.networks.checkpoint import random_state_dict, save_checkpoint

    ckpt = tmp_path / "refiner.pth"
    save_checkpoint(random_state_dict("refinement", 3, 11), ckpt, prefix=True)
    art = build_artifacts(
        _tiny_settings(),
        backbone_checkpoint=None,
        refiner_checkpoints=[ckpt],
        random_seed=1,
        out_dir=tmp_path / "out",
        max_batch=2,
    )
    assert len({p.read_bytes() for p in art.refiner_onnx}) == 1 and len(art.refiner_onnx) == 3
    entry = art.provenance["networks"]["refiner_3"]
    assert entry["weights"] == "checkpoint" and len(entry["sha256"]) == 64
    assert art.provenance["networks"]["backbone"]["weights"] == "random"


def test_refiner_checkpoint_count_must_match_the_transitions(tmp_path):
    files = [tmp_path / "a.pth", tmp_path / "b.pth"]
    with pytest.raises(MagnetError, match=r"2 refiner checkpoints.*3 refiner"):
        build_artifacts(
            _tiny_settings(),
            backbone_checkpoint=None,
            refiner_checkpoints=files,
            random_seed=0,
            out_dir=tmp_path / "o",
        )


def test_missing_weights_and_bad_targets_are_refused(tmp_path):
    kwargs = {"backbone_checkpoint": None, "refiner_checkpoints": [], "out_dir": tmp_path / "o"}
    with pytest.raises(MagnetError, match="backbone checkpoint"):
        build_artifacts(_tiny_settings(), random_seed=None, **kwargs)
    with pytest.raises(MagnetError, match="target"):
        build_artifacts(_tiny_settings(), random_seed=0, target="tpu", **kwargs)
    with pytest.raises(MagnetError, match="fp16"):
        build_artifacts(_tiny_settings(), random_seed=0, precision="fp16", **kwargs)


def test_gpu_target_without_tensorrt_says_how_to_install_it(tmp_path):
    pytest.importorskip("torch")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    with pytest.raises(MagnetError, match=r"pip install tensorrt.*--target cpu"):
        build_artifacts(
            _tiny_settings(),
            backbone_checkpoint=None,
            refiner_checkpoints=[],
            random_seed=0,
            out_dir=tmp_path / "o",
            target="gpu",
        )


def test_unwritable_out_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(MagnetError, match="cannot write"):
        build_artifacts(
            _tiny_settings(),
            backbone_checkpoint=None,
            refiner_checkpoints=[],
            random_seed=0,
            out_dir=blocker / "out",
        )


def test_a_folder_of_other_files_is_not_replaced(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(MagnetError, match="not empty"):
        build_artifacts(
            _tiny_settings(), backbone_checkpoint=None, refiner_checkpoints=[], random_seed=0, out_dir=out
        )
    assert (out / "precious.txt").read_text() == "keep me"


def test_a_failed_build_leaves_nothing_that_looks_complete(tmp_path):
    bad = tmp_path / "backbone.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(MagnetError, match="cannot read checkpoint"):
        build_artifacts(
            _tiny_settings(),
            backbone_checkpoint=bad,
            refiner_checkpoints=[],
            random_seed=0,
            out_dir=tmp_path / "out",
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backbone.pth"]


def test_export_modules_import_without_torch_onnx_or_tensorrt():
    import subprocess
    import sys

    code = (
        "import sys, argparse\n"
        "import magnet_triton.export.artifacts, magnet_triton.export.tensorrt_build\n"
        "import magnet_triton.export.onnx_export, magnet_triton.export.graph_cleanup\n"
        "import magnet_triton.export.supported_ops, magnet_triton.export.parity as p\n"
        "p.register(argparse.ArgumentParser().add_subparsers())\n"
        "heavy = {'torch', 'onnx', 'onnxruntime', 'tensorrt', 'onnx_graphsurgeon'} & set(sys.modules)\n"
        "sys.exit(f'imported {sorted(heavy)}' if heavy else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_gpu_artifacts_build_one_engine_per_distinct_refiner_and_record_parity(tmp_path, monkeypatch):
    """The GPU orchestration with TensorRT replaced by stand-ins (the real build is in test_tensorrt_build)."""
    from magnet_triton.export import engine_record as er
    from magnet_triton.export import tensorrt_build as tb
    from magnet_triton.export.parity import ParityReport
    from magnet_triton.networks.checkpoint import random_state_dict, save_checkpoint

    built: list[str] = []

    def fake_build(onnx_path, engine_path, spec, **kwargs):
        built.append(Path(engine_path).name)
        Path(engine_path).parent.mkdir(parents=True, exist_ok=True)
        Path(engine_path).write_bytes(Path(onnx_path).read_bytes()[:64])
        record = er.EngineRecord(
            engine=Path(engine_path).name,
            model=spec.name,
            tensorrt_version="10.3.0",
            gpu_name="GPU",
            compute_capability="9.0",
            precision=kwargs["precision"],
            profile={},
            onnx_path=str(onnx_path),
            onnx_sha256=er.file_sha256(onnx_path),
            build_time_s=1.0,
            built_at="now",
            parity=kwargs.get("parity"),
        )
        er.write_record(record, engine_path)
        return record

    def fake_compare(engine_path, onnx_path, *, batch, **_):
        return ParityReport(
            "x", 3, str(onnx_path), (64, 32), batch, 0, 1e-6, 1e-8, 1.0, backend="tensorrt-fp16"
        )

    monkeypatch.setattr(
        tb, "current_environment", lambda device=0: er.BuildEnvironment("10.3.0", "GPU", "9.0")
    )
    monkeypatch.setattr(tb, "build_engine", fake_build)
    monkeypatch.setattr(tb, "compare_engine_with_onnxruntime", fake_compare)
    ckpt = tmp_path / "refiner.pth"
    save_checkpoint(random_state_dict("refinement", 3, 2), ckpt)
    art = build_artifacts(
        _tiny_settings(),
        backbone_checkpoint=None,
        refiner_checkpoints=[ckpt],
        random_seed=0,
        out_dir=tmp_path / "out",
        target="gpu",
        precision="fp16",
        max_batch=4,
    )
    assert built == ["backbone.plan", "refiner_1.plan"]  # the shared refiner is built once
    assert [p.name for p in art.refiner_engines] == ["refiner_1.plan", "refiner_2.plan", "refiner_3.plan"]
    assert all(p.is_file() for p in [art.backbone_engine, *art.refiner_engines])
    record = er.read_record(art.refiner_engines[2])
    assert record.engine == "refiner_3.plan" and record.onnx_path == "onnx/refiner_1.onnx"
    assert set(record.parity) == {"onnxruntime_vs_torch", "tensorrt_vs_onnxruntime"}
    assert {"backbone_tensorrt", "refiner_1_tensorrt"} <= set(art.parity)
    assert load_artifacts(tmp_path / "out").refiner_engines == art.refiner_engines


def test_parity_command_measures_an_openvino_model_at_its_precision(refiner19, tmp_path, capsys):
    pytest.importorskip(
        "openvino", reason="openvino is not installed (pip install 'magnet-triton[openvino]')"
    )
    from magnet_triton import openvino_engine

    xml = openvino_engine.save_ir(openvino_engine.convert_onnx(refiner19[0]), tmp_path / "refiner.xml")
    argv = ["--onnx", str(refiner19[0]), "--network", "refinement", "--num-classes", "19", "--batch", "1"]
    args = _parity_args([*argv, "--random-weights", "0", "--openvino", str(xml)])
    assert args.func(args) == 0
    assert "openvino-fp32 vs torch FP32 -> PASS" in capsys.readouterr().out
    args = _parity_args([*argv, "--random-weights", "1", "--openvino", str(xml)])
    assert args.func(args) == 1  # other weights: the FP32 bounds fail
    args = _parity_args([*argv, "--random-weights", "0", "--precision", "int8"])
    with pytest.raises(MagnetError, match="--precision is for --openvino"):
        args.func(args)


def test_engines_are_compared_on_inputs_of_the_network_the_graph_names(tmp_path):
    """The engine checks (TensorRT, OpenVINO) read the network from the graph's metadata, so a
    backbone gets normalised RGB patches (the registry's normalisation), not a made-up kind."""
    from magnet_triton.export.onnx_export import NETWORK_METADATA_KEY
    from magnet_triton.export.parity import DEFAULT_BOUNDS, compare_with_onnxruntime

    settings = get_preset("cityscapes", input_size=(64, 64)).with_overrides(num_classes=7)
    model = network_with_weights("fpn", 7, random_seed=0)
    named = export_onnx(
        model, backbone_spec(settings, 2), tmp_path / "b.onnx", metadata={NETWORK_METADATA_KEY: "fpn"}
    )
    same = compare_with_onnxruntime(
        named, lambda x: run_onnxruntime(named, x), backend="itself", bounds=DEFAULT_BOUNDS
    )
    assert same.network == "fpn" and same.max_abs == 0.0 and same.passed
    shifted = compare_with_onnxruntime(
        named, lambda x: run_onnxruntime(named, x) + 0.01, backend="off", bounds=DEFAULT_BOUNDS
    )
    assert not shifted.passed and shifted.max_abs == pytest.approx(0.01, rel=1e-3)
    anonymous = export_onnx(model, backbone_spec(settings, 2), tmp_path / "a.onnx")
    with pytest.raises(MagnetError, match="name its network"):
        compare_with_onnxruntime(anonymous, lambda x: x, backend="x", bounds=DEFAULT_BOUNDS)
