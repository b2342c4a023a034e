"""The runtime table: engines per device kind, and the configs and files each implies."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from magnet_triton import io_spec, runtimes
from magnet_triton.errors import MagnetError
from magnet_triton.export.repository import RepositoryOptions, model_configs, write_repository
from magnet_triton.runtimes import DEVICE_KINDS, RUNTIMES, Runtime, engines_for, get_runtime
from magnet_triton.settings import get_preset

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def test_each_target_defaults_to_its_first_engine():
    assert get_runtime("cpu").name == "cpu/onnxruntime"
    assert get_runtime("gpu").name == "gpu/tensorrt"
    for target in DEVICE_KINDS:
        assert get_runtime(target).engine == engines_for(target)[0]


def test_unknown_targets_and_engines_are_refused_listing_the_choices():
    with pytest.raises(MagnetError, match=r"unknown target 'tpu'.*cpu.*gpu"):
        get_runtime("tpu")
    with pytest.raises(MagnetError, match=r"unknown engine 'tensorrt' for target cpu.*onnxruntime"):
        get_runtime("cpu", "tensorrt")
    with pytest.raises(MagnetError, match="unknown engine"):
        RepositoryOptions(target="gpu", engine="onnxruntime")


def test_a_runtime_has_a_native_platform_or_backend_or_a_runner_exactly_one():
    cpu = get_runtime("cpu")
    message = "give one of a Triton platform, a native backend or a Python-backend runner"
    with pytest.raises(MagnetError, match=message):
        dataclasses.replace(cpu, platform="onnxruntime_onnx")
    with pytest.raises(MagnetError, match=message):
        dataclasses.replace(cpu, backend="onnxruntime")
    with pytest.raises(MagnetError, match=message):
        dataclasses.replace(cpu, runner=None)
    with pytest.raises(MagnetError, match="unknown device kind"):
        dataclasses.replace(cpu, device="tpu")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is new in Python 3.11")
def test_each_runtimes_extra_exists_and_installs_its_requirements():
    import tomllib

    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]

    def closure(extra: str) -> str:
        # An extra may pull in another one ("magnet-triton[cpu]"): follow those.
        text = []
        for requirement in extras[extra]:
            if requirement.startswith("magnet-triton["):
                text.append(closure(requirement[len("magnet-triton[") : -1]))
            text.append(requirement)
        return " ".join(text)

    for runtime in RUNTIMES:
        assert runtime.extra in extras, runtime.name
        for module in runtime.requirements:
            assert module in closure(runtime.extra), (runtime.name, module)


@pytest.mark.parametrize("runtime", RUNTIMES, ids=lambda r: r.name)
def test_network_configs_follow_the_runtime_entry(runtime):
    options = RepositoryOptions(target=runtime.device, engine=runtime.engine, onnx_threads=3)
    configs = model_configs(get_preset("deepglobe"), options)
    kind = DEVICE_KINDS[runtime.device].instance_kind
    for name in io_spec.DEFAULT_NAMES.networks(get_preset("deepglobe").n_refiners):
        config = configs[name]
        assert config["instance_group"][0]["kind"] == kind
        if runtime.platform is not None:
            assert config["platform"] == runtime.platform and "backend" not in config
            assert config["default_model_filename"] == runtime.model_file
        elif runtime.backend is not None:
            # Triton's own backend reads the file named here and its own parameter spellings.
            assert config["backend"] == runtime.backend and "platform" not in config
            assert config["default_model_filename"] == runtime.model_file
            params = {p["key"]: p["value"]["string_value"] for p in config["parameters"]}
            assert "3" in params.values()  # onnx_threads=3 reaches the backend's thread setting
        else:
            assert config["backend"] == "python" and "platform" not in config
            params = {p["key"]: p["value"]["string_value"] for p in config["parameters"]}
            assert params[runtime.file_parameter] == runtime.model_file
            for key, attr in runtime.option_parameters.items():
                value = getattr(options, attr)
                # protobuf text and the runners spell booleans in lower case
                assert params[key] == (str(value).lower() if isinstance(value, bool) else str(value))
    pipeline = configs[io_spec.PIPELINE_MODEL]
    assert pipeline["instance_group"][0]["kind"] == kind
    params = {p["key"]: p["value"]["string_value"] for p in pipeline["parameters"]}
    for key, value in DEVICE_KINDS[runtime.device].pipeline_parameters.items():
        assert params[key] == value


def test_a_new_runtime_is_one_entry(monkeypatch, tmp_path):
    """A runner-based engine added to the table gets its configs and version folders, no other change."""
    extra = Runtime(
        engine="stand-in",
        device="cpu",
        artifact="onnx",
        model_file="weights.bin",
        runner="tests.not_a_real_runner",
        file_parameter="weights_file",
        option_parameters={"threads": "onnx_threads"},
        extra="cpu",
        description="a test double",
    )
    monkeypatch.setattr(runtimes, "RUNTIMES", (*RUNTIMES, extra))
    options = RepositoryOptions(target="cpu", engine="stand-in")
    settings = get_preset("deepglobe")
    backbone = model_configs(settings, options)[io_spec.BACKBONE_MODEL]
    assert backbone["backend"] == "python" and backbone["instance_group"][0]["kind"] == "KIND_CPU"
    assert {p["key"] for p in backbone["parameters"]} == {"weights_file", "threads"}

    blob = tmp_path / "blob"
    blob.write_bytes(b"w")
    repo = tmp_path / "repo"
    write_repository(repo, settings, options, backbone_model=blob, refiner_models=[blob], provenance={})
    version = repo / io_spec.BACKBONE_MODEL / "1"
    assert sorted(p.name for p in version.iterdir()) == ["model.py", "weights.bin"]
    assert "tests.not_a_real_runner" in (version / "model.py").read_text()


def test_native_backend_repositories_are_refused_by_a_server_without_that_backend(tmp_path):
    from magnet_triton.server.install import ServerInstall
    from magnet_triton.server.process import check_backends

    backends = tmp_path / "backends"
    (backends / "python").mkdir(parents=True)
    install = ServerInstall(Path("tritonserver"), backends, None, (), bundled=True)
    repository = tmp_path / "repo"
    repository.mkdir()
    (repository / "magnet_repository.json").write_text('{"runtime": "cpu/triton-openvino"}')
    with pytest.raises(
        MagnetError, match=r"Triton's openvino backend.*its backends: \['python'\].*--engine openvino"
    ):
        check_backends(repository, install)
    (backends / "openvino").mkdir()
    check_backends(repository, install)  # the backend is there: nothing to refuse
    (repository / "magnet_repository.json").write_text('{"runtime": "cpu/openvino"}')
    (backends / "openvino").rmdir()
    check_backends(repository, install)  # a Python-backend runner needs only python


def test_the_instance_share_of_the_cores_divides_them_among_instances(monkeypatch):
    import json
    import os

    from magnet_triton.model_repository.config_params import instance_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    args = {"model_config": json.dumps({"instance_group": [{"count": 3, "kind": "KIND_CPU"}]})}
    assert instance_threads(args, "0") == 8 // 3
    assert instance_threads(args, None) == 8 // 3
    assert instance_threads(args, "5") == 5  # configured: as given
    many = {"model_config": json.dumps({"instance_group": [{"count": 16}]})}
    assert instance_threads(many, "0") == 1  # never 0 threads


@pytest.mark.server
def test_the_bundled_server_refuses_a_native_backend_repository_before_starting(tmp_path):
    from magnet_triton.server import TritonServer, find_tritonserver
    from tests.tiny_repository import skip_without_tritonserver

    skip_without_tritonserver()
    install = find_tritonserver()
    if install.backend_dir is None or (install.backend_dir / "onnxruntime").is_dir():
        pytest.skip("this tritonserver has an onnxruntime backend (or hides its backends)")
    (tmp_path / "magnet_repository.json").write_text('{"runtime": "cpu/triton-onnxruntime"}')
    with pytest.raises(MagnetError, match=r"onnxruntime backend.*NGC tritonserver container"):
        TritonServer(tmp_path).start()
