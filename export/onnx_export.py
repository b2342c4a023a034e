"""Export a MagNet network to ONNX, shaped by its :class:`~magnet_triton.io_spec.ModelSpec`.

The network is wrapped so the graph ends with a softmax over the class axis: engines and the CPU
runners return probabilities, which is what the MagNet loop consumes (and what the refiner eats), and
TensorRT can fuse the softmax into the last kernels. The network code itself is never changed for
export.

Exporter choice: the legacy TorchScript exporter (``dynamo=False``). With torch 2.13 the default
``torch.export``-based exporter needs ``onnxscript`` (not a dependency here), and its graphs are shaped
by decomposition tables that change from release to release. The TorchScript exporter is deprecated but
still shipped; for these purely convolutional, control-flow-free networks it gives a stable, standard
op set (Conv with BatchNorm folded in eval mode, Resize, Softmax, MatMul), node names taken from module
paths (``/network/ocr_distri_head/object_context_block/MatMul``) that the TensorRT build matches to pin
layers to FP32, and a named dynamic batch axis from ``dynamic_axes``. Should it disappear, the exporter
is one call in :func:`_torch_export`.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from magnet_triton.errors import MagnetError

#: The ONNX metadata key that names the network a file holds (the registry name, ``hrnet18+ocr``).
NETWORK_METADATA_KEY = "magnet_triton.network"

if TYPE_CHECKING:
    import onnx
    import torch
    from torch import nn

    from magnet_triton.io_spec import ModelSpec

log = logging.getLogger(__name__)

#: TensorRT 10 and onnxruntime both read opset 17 (the first with LayerNormalization); older is refused.
MIN_OPSET = 17
DEFAULT_OPSET = 17


def probabilities_module(model: nn.Module) -> nn.Module:
    """``model`` followed by a softmax over dim 1: B x C x h x w logits -> probabilities, float32.

    The wrapper holds the network as ``network``, so exported node names read ``/network/...``.
    """
    import torch
    from torch import nn

    class _Probabilities(nn.Module):
        def __init__(self, network: nn.Module) -> None:
            super().__init__()
            self.network = network

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.network(x), dim=1)

    return _Probabilities(model)


def export_onnx(
    model: nn.Module,
    spec: ModelSpec,
    path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    example_batch: int = 2,
    cleanup: bool = True,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Export ``model`` (logits out) as an ONNX graph with ``spec``'s names and a dynamic batch axis.

    Args:
        model: a network mapping B x Cin x h x w float32 to B x C x h x w logits. Exported in eval mode;
            its training flag is restored afterwards.
        spec: a batched spec with one input and one output, static except for the batch
            (:func:`~magnet_triton.io_spec.backbone_spec` or :func:`~magnet_triton.io_spec.refiner_spec`).
        path: where to write the ``.onnx`` file (parent folders are made).
        opset: ONNX opset, >= :data:`MIN_OPSET`.
        example_batch: batch of the tracing input; > 1 so no size-1 axis gets baked in as a constant.
        cleanup: run the graphsurgeon clean-up of :mod:`graph_cleanup`.
        metadata: extra ``metadata_props`` (provenance: network name, checkpoint hash ...).

    Returns:
        The path written. The file passes ``onnx.checker.check_model(full_check=True)``.

    Raises:
        MagnetError: unsuitable spec or opset, or a graph whose output shape disagrees with ``spec``.
    """
    import onnx
    import torch

    _check_spec(spec)
    if opset < MIN_OPSET:
        raise MagnetError(f"opset {opset} is too old: TensorRT 10 export needs opset >= {MIN_OPSET}")
    path = Path(path)
    wrapper = probabilities_module(model)
    was_training = model.training
    wrapper.eval()
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(spec.inputs[0].shape(example_batch), generator=generator)
    try:
        proto = _torch_export(wrapper, example, spec, opset)
    finally:
        model.train(was_training)

    if cleanup:
        from magnet_triton.export.graph_cleanup import cleanup_graph

        proto = cleanup_graph(proto)
    else:
        # The clean-up infers shapes; without it the outputs keep the tracer's symbolic dims.
        proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    for key, value in {"magnet_triton.model": spec.name, **(metadata or {})}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    _check_io(proto, spec)
    onnx.checker.check_model(proto, full_check=True)
    _warn_tensorrt_problems(proto, spec)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        onnx.save_model(proto, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported %s to %s (%d nodes, opset %d)", spec.name, path, len(proto.graph.node), opset)
    return path


def _torch_export(wrapper: nn.Module, example: torch.Tensor, spec: ModelSpec, opset: int) -> onnx.ModelProto:
    import onnx
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The deprecation notice of the TorchScript exporter is expected (see the module docstring);
        # tracer warnings about Python ints in shape arithmetic are harmless for static patch sizes.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        with torch.no_grad():
            torch.onnx.export(
                wrapper,
                (example,),
                buffer,
                input_names=spec.input_names,
                output_names=spec.output_names,
                dynamic_axes=spec.dynamic_axes(),
                opset_version=opset,
                do_constant_folding=True,
                export_params=True,
                dynamo=False,
            )
    return onnx.load_model_from_string(buffer.getvalue())


def _check_spec(spec: ModelSpec) -> None:
    if not spec.batched or len(spec.inputs) != 1 or len(spec.outputs) != 1:
        raise MagnetError(
            f"model {spec.name} is not a network: ONNX export needs one input, one output and a batch axis"
        )
    for tensor in (*spec.inputs, *spec.outputs):
        if not tensor.is_static or tensor.dtype != "FP32":
            raise MagnetError(f"{spec.name}.{tensor.name}: export needs static FP32 dims, got {tensor}")


def graph_io_shapes(proto: onnx.ModelProto) -> dict[str, tuple[int | str, ...]]:
    """Graph input/output name -> shape, with named dims as their names (``"batch"``)."""
    shapes = {}
    for value in (*proto.graph.input, *proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = tuple(d.dim_param if d.dim_param else d.dim_value for d in dims)
    return shapes


def _check_io(proto: onnx.ModelProto, spec: ModelSpec) -> None:
    """The graph's inputs and outputs must be exactly the spec's: names, order, batch axis, dims."""
    from magnet_triton.io_spec import BATCH_AXIS

    names_in = [v.name for v in proto.graph.input]
    names_out = [v.name for v in proto.graph.output]
    if names_in != spec.input_names or names_out != spec.output_names:
        raise MagnetError(
            f"{spec.name}: graph I/O {names_in} -> {names_out} differs from the spec "
            f"{spec.input_names} -> {spec.output_names}"
        )
    shapes = graph_io_shapes(proto)
    for tensor in (*spec.inputs, *spec.outputs):
        want = (BATCH_AXIS, *tensor.dims)
        if shapes[tensor.name] != want:
            raise MagnetError(
                f"{spec.name}.{tensor.name}: the network produces shape {shapes[tensor.name]}, the spec "
                f"says {want}; does the network return logits at its input resolution?"
            )


def _warn_tensorrt_problems(proto: onnx.ModelProto, spec: ModelSpec) -> None:
    # Only a warning: the CPU target runs these files with onnxruntime and does not need TensorRT.
    from magnet_triton.export.supported_ops import tensorrt_problems

    for problem in tensorrt_problems(proto):
        log.warning("%s: TensorRT 10 would reject this graph: %s", spec.name, problem)
