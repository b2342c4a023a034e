"""The Kubernetes manifests (deploy/kubernetes): each overlay renders with ``kubectl kustomize`` and every
rendered object passes the Kubernetes API's JSON schemas, checked offline by ``kubernetes-validate``
(PyPI; it ships the schemas of each Kubernetes release, and strict mode refuses unknown fields).

What the schemas cannot check: the KServe ``InferenceService`` is a custom resource (no schema ships for
it), so its Pod-shaped parts are validated as a Pod; the HPA's metric name is only a string to the schema,
so it is checked against the Prometheus adapter rule that makes it.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install -e '.[dev]')")
kv = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed (pip install -e '.[dev]')"
)

KUBERNETES = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
#: The API release the objects are checked against: every field used is in 1.25 and later.
API_VERSION = "1.30"
OVERLAYS = ("cpu", "gpu")


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip(
            "kubectl is not installed (Debian: apt-get install kubernetes-client); it renders kustomize"
        )
    return found


def render(overlay: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [kubectl(), "kustomize", str(KUBERNETES / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def validate(obj: dict[str, Any]) -> None:
    """Strict schema validation; the error names the object and the field."""
    try:
        kv.validate(obj, API_VERSION, strict=True)
    except kv.ValidationError as e:
        raise AssertionError(
            f"{obj['kind']}/{obj['metadata'].get('name')}: {e.message} at {list(e.path)}"
        ) from e


def by_kind(objects: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    kinds: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        kinds.setdefault(obj["kind"], []).append(obj)
    return kinds


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = by_kind(objects)["Deployment"]
    (triton,) = deployment["spec"]["template"]["spec"]["containers"]
    return triton


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_passes_the_kubernetes_schemas(overlay):
    objects = render(overlay)
    assert sorted(o["kind"] for o in objects) == sorted(
        [
            "Deployment",
            "Service",
            "Service",
            "PersistentVolumeClaim",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
        ]
    )
    for obj in objects:
        validate(obj)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_deployment_probes_triton_health_and_gives_the_stubs_a_memory_backed_dev_shm(overlay):
    objects = render(overlay)
    triton = container(objects)
    assert triton["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert triton["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert "--http" in triton["args"] and "--host=0.0.0.0" in triton["args"]
    (deployment,) = by_kind(objects)["Deployment"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in triton["volumeMounts"]}
    shm = volumes[mounts["/dev/shm"]]["emptyDir"]
    assert shm["medium"] == "Memory" and shm["sizeLimit"]
    assert volumes[mounts["/models"]]["persistentVolumeClaim"]["readOnly"] is True
    assert {"cpu", "memory"} <= set(triton["resources"]["requests"])


def test_the_gpu_overlay_asks_for_a_gpu_and_the_cpu_one_does_not():
    assert container(render("gpu"))["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in container(render("cpu"))["resources"]["limits"]
    assert container(render("cpu"))["image"] != container(render("gpu"))["image"]


def test_the_services_expose_grpc_and_http_and_a_headless_one_allows_client_side_balancing():
    services = {s["metadata"]["name"]: s["spec"] for s in by_kind(render("cpu"))["Service"]}
    ports = {p["name"]: p["port"] for p in services["magnet-triton"]["ports"]}
    assert ports["grpc"] == 8001 and ports["http"] == 8000
    assert services["magnet-triton-grpc"]["clusterIP"] == "None"


def test_the_hpa_scales_on_the_metric_the_prometheus_adapter_rule_makes():
    (hpa,) = by_kind(render("cpu"))["HorizontalPodAutoscaler"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    (adapter,) = list(
        yaml.safe_load_all((KUBERNETES / "prometheus-adapter" / "adapter-config.yaml").read_text())
    )
    validate(adapter)
    rules = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    assert metric["pods"]["metric"]["name"] in {r["name"]["as"] for r in rules}
    for rule in rules:
        assert "magnet_pipeline" in rule["metricsQuery"] and "<<.LabelMatchers>>" in rule["metricsQuery"]


def test_the_validator_refuses_a_broken_object():
    """Proof that the checks above can fail: a wrong type and an unknown field are refused."""
    (deployment,) = by_kind(render("cpu"))["Deployment"]
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eight thousand"
    misspelt = copy.deepcopy(deployment)
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"port": 8000}}
    for broken in (wrong_type, misspelt):
        with pytest.raises(kv.ValidationError):
            kv.validate(broken, API_VERSION, strict=True)


def test_the_kserve_inference_service_is_checked_where_schemas_exist():
    (service,) = list(yaml.safe_load_all((KUBERNETES / "kserve" / "inferenceservice.yaml").read_text()))
    assert (service["apiVersion"], service["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    # No schema ships for KServe's custom resource: say so rather than pass it unchecked.
    with pytest.raises(kv.SchemaNotFoundError):
        kv.validate(service, API_VERSION, strict=True)
    predictor = service["spec"]["predictor"]
    model = dict(predictor["model"])
    assert model["modelFormat"]["name"] == "triton" and model["storageUri"].startswith(("s3://", "gs://"))
    # The model spec is a Container plus KServe's fields, the predictor a PodSpec plus its own: validate
    # the Kubernetes parts as a Pod.
    for kserve_field in ("modelFormat", "runtime", "protocolVersion", "storageUri"):
        model.pop(kserve_field)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "magnet-predictor"},
        "spec": {"containers": [{"name": "kserve-container", **model}], "volumes": predictor["volumes"]},
    }
    validate(pod)
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
