"""A real inference on every served model, the check behind supervision and ``magnet-triton probe``.

Triton's own readiness says a model is loaded, not that it answers: a model whose Python-backend stub
was killed stays "ready" while every request to it fails. A probe sends each ready model version the
smallest request it accepts and reports the ones that fail or do not answer in time:

- a network (``max_batch_size`` > 0, static dims): one batch of zeros, read from its config, so it
  fits whatever shapes the engine was built for;
- ``magnet_pipeline``: a 32 x 32 black image at mode ``downsample`` (one backbone call);
- ``magnet_decode``: a 2 x 2 PNG;
- the ensemble: not sent, its steps are probed one by one;
- a decoupled model (``magnet_pipeline_progressive``): not sent (plain calls are refused; its stubs are
  watched, and its code is the pipeline's, which is probed).
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from magnet_triton import io_spec

#: The pipeline probe's image (H x W): anything the pipeline accepts costs the same backbone call.
PROBE_IMAGE_SIZE = (32, 32)
#: Triton's data types, as the model config spells them, to numpy.
_NUMPY_TYPES = {
    "TYPE_FP32": np.float32,
    "TYPE_FP16": np.float16,
    "TYPE_UINT8": np.uint8,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
}


@dataclass(frozen=True)
class ProbeResult:
    """One model version's answer to its probe."""

    model: str
    version: str
    ok: bool
    seconds: float
    error: str = ""
    #: True when it failed by not answering within the timeout (it may only be busy).
    timed_out: bool = False

    def __str__(self) -> str:
        what = "ok" if self.ok else ("no answer" if self.timed_out else "FAILED")
        detail = f": {self.error}" if self.error else ""
        return f"{self.model} v{self.version}: {what} in {self.seconds:.2f} s{detail}"


def _png(size: tuple[int, int] = (2, 2)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size).save(buffer, format="PNG")
    return buffer.getvalue()


def probe_inputs(config: Mapping[str, Any], grpc: Any) -> list[Any] | None:
    """The probe's ``InferInput`` list for a model of this config (JSON form), or None: not probed."""
    if config.get("platform") == "ensemble":
        return None
    if config.get("model_transaction_policy", {}).get("decoupled"):
        return None  # answers only over a stream; its stubs are watched, and it runs the pipeline's code
    # By their inputs, not their names: a preset prefix (``cityscapes_magnet_pipeline``) changes names.
    input_names = {spec.get("name") for spec in config.get("input", [])}
    batched = int(config.get("max_batch_size", 0)) > 0
    if io_spec.IMAGE in input_names and not batched:  # the pipeline
        image = grpc.InferInput(io_spec.IMAGE, [*PROBE_IMAGE_SIZE, 3], "UINT8")
        image.set_data_from_numpy(np.zeros((*PROBE_IMAGE_SIZE, 3), np.uint8))
        mode = grpc.InferInput(io_spec.MODE, [1], "BYTES")
        mode.set_data_from_numpy(np.array([b"downsample"], dtype=np.object_))
        return [image, mode]
    if io_spec.IMAGE_BYTES in input_names:  # the decode step
        data = grpc.InferInput(io_spec.IMAGE_BYTES, [1], "BYTES")
        data.set_data_from_numpy(np.array([_png()], dtype=np.object_))
        return [data]
    batch = [1] if batched else []
    inputs = []
    for spec in config.get("input", []):
        if spec.get("optional"):
            continue
        dims = [int(d) for d in spec.get("dims", [])]
        dtype = _NUMPY_TYPES.get(spec.get("data_type", ""))
        if dtype is None or any(d < 0 for d in dims):
            return None  # not a model of ours: no probe we could size
        shape = [*batch, *dims]
        tensor = grpc.InferInput(spec["name"], shape, spec["data_type"].removeprefix("TYPE_"))
        tensor.set_data_from_numpy(np.zeros(shape, dtype))
        inputs.append(tensor)
    return inputs


def probe_server(
    client: Any, *, timeout_s: float = 30.0, headers: Mapping[str, str] | None = None
) -> list[ProbeResult]:
    """Probe every ready model version on the server behind ``client`` (``tritonclient.grpc``).

    Raises:
        tritonclient.utils.InferenceServerException: the server itself does not answer.
    """
    import tritonclient.grpc as grpc
    from tritonclient.utils import InferenceServerException

    headers = dict(headers or {})
    # The statistics list every loaded model version and, unlike the repository index, are not
    # behind the admin key (a Kubernetes probe has no key).
    stats = client.get_inference_statistics(headers=headers, as_json=True).get("model_stats", [])
    results = []
    for entry in stats:
        model, version = entry["name"], entry.get("version", "")
        if not client.is_model_ready(model, version, headers=headers):
            continue
        config = client.get_model_config(model, version, headers=headers, as_json=True)["config"]
        inputs = probe_inputs(config, grpc)
        if inputs is None:
            continue
        started = time.monotonic()
        try:
            client.infer(model, inputs, model_version=version, headers=headers, client_timeout=timeout_s)
            results.append(ProbeResult(model, version, True, time.monotonic() - started))
        except InferenceServerException as e:
            timed_out = "DEADLINE_EXCEEDED" in str(e.status())
            results.append(
                ProbeResult(model, version, False, time.monotonic() - started, e.message(), timed_out)
            )
    return results
