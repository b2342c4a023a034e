"""The model-repository generator: configs derived from io_spec, valid for Triton, equal to reviewed goldens."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from magnet_triton import io_spec
from magnet_triton.errors import MagnetError
from magnet_triton.export.repository import (
    RepositoryOptions,
    model_configs,
    read_manifest,
    read_manifests,
    to_pbtxt,
    write_repository,
)
from magnet_triton.settings import get_preset

GOLDEN = Path(__file__).parent / "golden"
#: golden folder -> (preset, RepositoryOptions fields)
CASES = {
    "cityscapes_cpu": ("cityscapes", {"target": "cpu"}),
    "deepglobe_gpu": ("deepglobe", {"target": "gpu"}),
    "cityscapes_gpu_torch": (
        "cityscapes",
        {"target": "gpu", "engine": "torch", "precision": "fp16", "cuda_graphs": True},
    ),
    "cityscapes_cpu_openvino_int8": ("cityscapes", {"engine": "openvino", "precision": "int8"}),
    # Triton's own backends (the NGC container): no Python runner, their parameter spellings.
    "cityscapes_cpu_triton_onnxruntime": ("cityscapes", {"engine": "triton-onnxruntime", "onnx_threads": 2}),
    "deepglobe_cpu_triton_openvino_bf16": ("deepglobe", {"engine": "triton-openvino", "precision": "bf16"}),
}


def parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


@pytest.mark.parametrize("case", sorted(CASES))
def test_configs_equal_the_reviewed_golden_files(case):
    preset, fields = CASES[case]
    configs = model_configs(get_preset(preset), RepositoryOptions(**fields))
    for name, config in configs.items():
        golden = GOLDEN / case / f"{name}.pbtxt"
        assert to_pbtxt(config) == golden.read_text(), f"{golden} differs; review the change and update it"


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_config_is_a_valid_triton_model_config_matching_io_spec(case):
    preset, fields = CASES[case]
    settings = get_preset(preset)
    configs = model_configs(settings, RepositoryOptions(**fields, max_batch=8))
    specs = {s.name: s for s in io_spec.all_specs(settings, backbone_max_batch=8, refiner_max_batch=8)}
    for name, config in configs.items():
        parsed = parse(to_pbtxt(config))
        # Every refiner model (magnet_refiner_1..n) has the one refiner spec.
        spec = specs[io_spec.REFINER_MODEL if name.startswith(io_spec.REFINER_MODEL + "_") else name]
        assert parsed.name == name and parsed.max_batch_size == spec.max_batch_size
        assert [(t.name, list(t.dims), t.optional) for t in parsed.input] == [
            (t.name, list(t.dims), t.optional) for t in spec.inputs
        ]
        assert [t.name for t in parsed.output] == spec.output_names
        dtype = model_config_pb2.DataType.Name
        assert [dtype(t.data_type) for t in parsed.input] == [t.config_dtype for t in spec.inputs]


def test_network_configs_batch_dynamically_and_serve_every_version_folder():
    configs = model_configs(get_preset("cityscapes"), RepositoryOptions(max_batch=8, max_queue_delay_us=500))
    names = io_spec.DEFAULT_NAMES
    # One model per refiner of the preset, each a network of its own.
    assert [n for n in configs if n.startswith(io_spec.REFINER_MODEL)] == [
        "magnet_refiner_1",
        "magnet_refiner_2",
        "magnet_refiner_3",
    ]
    refiner = parse(to_pbtxt(configs[names.refiner(2)]))
    assert list(refiner.dynamic_batching.preferred_batch_size) == [2, 4, 8]
    assert refiner.dynamic_batching.max_queue_delay_microseconds == 500
    backbone = parse(to_pbtxt(configs[names.backbone]))
    # Warm-up at the largest batch, so the memory the instance keeps is there (and measured) at ready.
    assert backbone.model_warmup[0].batch_size == backbone.max_batch_size == 8
    # Version 2 rolls out beside version 1: both are loaded, so a pinned pipeline keeps its version.
    assert refiner.version_policy.HasField("all") and backbone.version_policy.HasField("all")
    pipeline = parse(to_pbtxt(configs[names.pipeline])).parameters
    assert (pipeline["name_prefix"].string_value, pipeline["network_version"].string_value) == ("", "latest")


def test_the_pipeline_config_carries_the_settings_and_limits():
    settings = get_preset("cityscapes-fast")
    configs = model_configs(settings, RepositoryOptions(max_image_pixels=1000, pipeline_instances=3))
    pipeline = parse(to_pbtxt(configs[io_spec.PIPELINE_MODEL]))
    assert json.loads(pipeline.parameters["settings"].string_value) == settings.to_dict()
    assert pipeline.parameters["max_image_pixels"].string_value == "1000"
    assert pipeline.instance_group[0].count == 3


def test_the_pipeline_queue_holds_four_requests_per_instance_by_default_and_never_times_out():
    policy = parse(
        to_pbtxt(
            model_configs(get_preset("cityscapes"), RepositoryOptions(pipeline_instances=3))[
                io_spec.PIPELINE_MODEL
            ]
        )
    ).dynamic_batching.default_queue_policy
    assert policy.max_queue_size == 12
    assert policy.timeout_action == model_config_pb2.ModelQueuePolicy.REJECT
    assert policy.default_timeout_microseconds == 0 and not policy.allow_timeout_override


def test_the_pipeline_queue_takes_its_size_and_timeout_from_the_options():
    options = RepositoryOptions(max_queue_size=5, queue_timeout_ms=2500)
    pipeline = parse(to_pbtxt(model_configs(get_preset("deepglobe"), options)[io_spec.PIPELINE_MODEL]))
    policy = pipeline.dynamic_batching.default_queue_policy
    assert (policy.max_queue_size, policy.default_timeout_microseconds) == (5, 2_500_000)
    assert policy.allow_timeout_override  # clients may ask for less (Triton never lets them ask for more)
    assert pipeline.max_batch_size == 0 and not pipeline.dynamic_batching.preferred_batch_size
    unlimited = RepositoryOptions(max_queue_size=0)
    assert model_configs(get_preset("deepglobe"), unlimited)[io_spec.PIPELINE_MODEL]["dynamic_batching"] == {
        "default_queue_policy": {"timeout_action": "REJECT", "max_queue_size": 0}
    }


def test_the_ensemble_wires_decode_into_the_pipeline():
    ensemble = parse(
        to_pbtxt(model_configs(get_preset("deepglobe"), RepositoryOptions())[io_spec.ENSEMBLE_MODEL])
    )
    first, second = ensemble.ensemble_scheduling.step
    assert (first.model_name, second.model_name) == (io_spec.DECODE_MODEL, io_spec.PIPELINE_MODEL)
    assert first.output_map[io_spec.IMAGE] == second.input_map[io_spec.IMAGE]
    assert set(second.input_map) == {
        io_spec.IMAGE,
        io_spec.MODE,
        io_spec.N_POINTS,
        io_spec.N_PATCHES,
        io_spec.PATCH_ORDER,
    }


def test_pbtxt_strings_are_escaped():
    text = to_pbtxt({"name": 'quote " and \\ backslash'})
    assert parse(text).name == 'quote " and \\ backslash'


def _fake_onnx(tmp_path, content: bytes = b"onnx"):
    onnx = tmp_path / f"fake-{content.decode()}.onnx"
    onnx.write_bytes(content)
    return onnx


def test_write_repository_lays_out_one_model_per_refiner_and_refuses_a_non_empty_folder(tmp_path):
    settings = get_preset("cityscapes")
    onnx = _fake_onnx(tmp_path)
    repo = tmp_path / "repo"
    version = write_repository(
        repo,
        settings,
        RepositoryOptions(),
        backbone_model=onnx,
        refiner_models=[onnx] * 3,
        provenance={"networks": "test"},
    )
    assert version == 1
    for k in (1, 2, 3):
        model = repo / f"magnet_refiner_{k}"
        assert sorted(p.name for p in model.iterdir()) == ["1", "config.pbtxt"]
        assert "onnx_runner_model" in (model / "1" / "model.py").read_text()
    assert not (repo / io_spec.REFINER_MODEL).exists()
    assert not list(repo.glob(".*")) and not list(tmp_path.glob(".repo*"))  # no staging left behind
    with pytest.raises(MagnetError, match="not empty"):
        write_repository(
            repo, settings, RepositoryOptions(), backbone_model=onnx, refiner_models=[onnx] * 3, provenance={}
        )
    with pytest.raises(MagnetError, match="refiner models"):
        write_repository(
            tmp_path / "r2",
            settings,
            RepositoryOptions(),
            backbone_model=onnx,
            refiner_models=[onnx],
            provenance={},
        )


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_into_adds_a_prefixed_preset_beside_the_others_without_touching_them(tmp_path):
    onnx = _fake_onnx(tmp_path)
    repo = tmp_path / "repo"
    write_repository(
        repo, get_preset("cityscapes"), RepositoryOptions(), backbone_model=onnx, refiner_models=[onnx] * 3,
        provenance={},
    )  # fmt: skip
    before = _tree(repo)
    deepglobe = RepositoryOptions(name_prefix="deepglobe")
    added = write_repository(
        repo, get_preset("deepglobe"), deepglobe, backbone_model=onnx, refiner_models=[onnx], provenance={},
        into=True,
    )  # fmt: skip
    assert added == 1
    after = _tree(repo)
    assert {k: v for k, v in after.items() if k in before} == before  # the first preset untouched
    new_models = sorted({k.split("/")[0] for k in after if k not in before})
    assert new_models == sorted(
        [
            "deepglobe_magnet",
            "deepglobe_magnet_backbone",
            "deepglobe_magnet_decode",
            "deepglobe_magnet_pipeline",
            "deepglobe_magnet_refiner_1",
            "magnet_repository.deepglobe.json",
        ]
    )
    ensemble = parse((repo / "deepglobe_magnet" / "config.pbtxt").read_text())
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == [
        "deepglobe_magnet_decode",
        "deepglobe_magnet_pipeline",
    ]
    pipeline = parse((repo / "deepglobe_magnet_pipeline" / "config.pbtxt").read_text())
    assert pipeline.parameters["name_prefix"].string_value == "deepglobe"
    assert set(read_manifests(repo)) == {"", "deepglobe"}
    assert read_manifests(repo)["deepglobe"]["settings"]["name"] == "deepglobe"


def test_into_an_existing_preset_adds_the_next_version_of_every_network(tmp_path):
    settings = get_preset("deepglobe")
    repo = tmp_path / "repo"
    v1, v2 = _fake_onnx(tmp_path, b"v1"), _fake_onnx(tmp_path, b"v2")
    write_repository(
        repo, settings, RepositoryOptions(), backbone_model=v1, refiner_models=[v1], provenance={}
    )
    configs = {p: p.read_text() for p in repo.glob("*/config.pbtxt")}
    version = write_repository(
        repo, settings, RepositoryOptions(), backbone_model=v2, refiner_models=[v2], provenance={"w": 2},
        into=True,
    )  # fmt: skip
    assert version == 2
    for model in ("magnet_backbone", "magnet_refiner_1"):
        assert (repo / model / "1" / "model.onnx").read_bytes() == b"v1"
        assert (repo / model / "2" / "model.onnx").read_bytes() == b"v2"
        assert not list((repo / model).glob(".partial-*"))
    assert {p: p.read_text() for p in repo.glob("*/config.pbtxt")} == configs  # configs left as they were
    assert read_manifest(repo)["network_versions"] == {"2": {"w": 2}}
    # The new networks must fit the pipeline already there.
    with pytest.raises(MagnetError, match=r"same preset, settings, runtime and precision.*--name-prefix"):
        write_repository(
            repo, get_preset("cityscapes"), RepositoryOptions(), backbone_model=v2, refiner_models=[v2] * 3,
            provenance={}, into=True,
        )  # fmt: skip
    # Serving options the configs there do not have would be dropped: refused, naming them.
    with pytest.raises(MagnetError, match=r"other serving options \(max_batch: 8 there, 4 asked\)"):
        write_repository(
            repo, settings, RepositoryOptions(max_batch=4), backbone_model=v2, refiner_models=[v2],
            provenance={}, into=True,
        )  # fmt: skip
    with pytest.raises(MagnetError, match="no such model repository"):
        write_repository(
            tmp_path / "missing", settings, RepositoryOptions(), backbone_model=v2, refiner_models=[v2],
            provenance={}, into=True,
        )  # fmt: skip


def test_gpu_repository_ships_compiled_kernels_where_nvcc_exists(tmp_path):
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not installed: the GPU repository then relies on the serving machine")
    plan = tmp_path / "fake.plan"
    plan.write_bytes(b"plan")
    repo = tmp_path / "repo"
    write_repository(
        repo,
        get_preset("deepglobe"),
        RepositoryOptions(target="gpu"),
        backbone_model=plan,
        refiner_models=[plan],
        provenance={},
    )
    kernels = repo / io_spec.PIPELINE_MODEL / "1" / "kernels"
    manifest = json.loads((kernels / "manifest.json").read_text())
    assert {"sm_80", "sm_86", "sm_89", "sm_90"} <= set(manifest["archs"])
    assert list(kernels.glob("*.fatbin"))
    assert (repo / io_spec.BACKBONE_MODEL / "1" / "model.plan").exists()
    assert not (repo / io_spec.BACKBONE_MODEL / "1" / "model.py").exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"target": "tpu"}, "unknown target"),
        ({"max_batch": 0}, "max_batch"),
        ({"onnx_threads": -1}, ">= 0"),
        ({"pipeline_threads": -2}, "pipeline_threads"),
        ({"precision": "fp16"}, r"cpu/onnxruntime runs \['fp32'\].*gpu/tensorrt"),
        ({"target": "gpu", "cuda_graphs": True}, "CUDA graphs.*gpu/torch"),
        ({"engine": "tensorrt"}, "unknown engine 'tensorrt' for target cpu"),
        ({"max_queue_size": -1}, r"max_queue_size must be >= 0 \(0: no limit\), got -1"),
        ({"queue_timeout_ms": -5}, "queue_timeout_ms must be >= 0, got -5"),
        ({"name_prefix": "city_scapes"}, "name prefix 'city_scapes'.*no '_'"),
        ({"network_version": -1}, "network_version must be >= 0"),
    ],
)
def test_bad_repository_options_are_refused(changes, message):
    with pytest.raises(MagnetError, match=message):
        RepositoryOptions(**changes)


def test_the_progressive_pipeline_is_the_pipeline_decoupled_and_only_when_asked():
    settings = get_preset("cityscapes")
    assert io_spec.PROGRESSIVE_MODEL not in model_configs(settings, RepositoryOptions())
    configs = model_configs(settings, RepositoryOptions(progressive=True))
    progressive = parse(to_pbtxt(configs[io_spec.PROGRESSIVE_MODEL]))
    pipeline = parse(to_pbtxt(configs[io_spec.PIPELINE_MODEL]))
    assert progressive.model_transaction_policy.decoupled and not pipeline.model_transaction_policy.decoupled
    assert [o.name for o in progressive.output] == [io_spec.SEGMENTATION, io_spec.SCALES_DONE]
    assert [i.name for i in progressive.input] == [i.name for i in pipeline.input]
    assert dict(progressive.parameters) == dict(pipeline.parameters)  # the same settings and limits
    assert progressive.instance_group[0].count == 1
