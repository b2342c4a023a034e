"""onnx-graphsurgeon clean-up of exported graphs, and the checks that it did its job.

The TorchScript exporter leaves things TensorRT and onnxruntime do not need: ``Identity`` nodes that
alias de-duplicated weights (freshly initialised BatchNorms share all-ones tensors), casts to the type a
tensor already has, shape arithmetic on static dimensions, and nodes whose results nobody reads.
Removing them gives smaller graphs, fewer TensorRT layers to time, and clean layer names for pinning
precision.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx
    import onnx_graphsurgeon as gs

log = logging.getLogger(__name__)

#: Ops that only forward their input (when the cast target equals the input type, for Cast).
_PASS_THROUGH = ("Identity", "Cast", "Dropout")


def cleanup_graph(model: onnx.ModelProto, *, fold_constants: bool = True) -> onnx.ModelProto:
    """Return a cleaned copy of ``model``: pass-through nodes removed, constants folded, dead nodes
    dropped, nodes in topological order. Graph input/output names, shapes and dtypes are kept.

    The IR version of the input is kept too: graphsurgeon would otherwise stamp the newest one that the
    installed ``onnx`` knows, which an older TensorRT parser may not accept.
    """
    import onnx
    import onnx_graphsurgeon as gs

    ir_version = model.ir_version
    # Shape inference gives tensors their dtypes, which tells a no-op Cast from a real one. With data
    # propagation it also follows the Shape->Gather->Concat chains that the tracer emits for
    # ``F.interpolate(size=x.shape[2:])``, so the graph outputs get their static C x h x w dims.
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    graph = gs.import_onnx(inferred)
    before = len(graph.nodes)

    removed = _remove_pass_through(graph)
    graph.cleanup(remove_unused_graph_inputs=False)
    if fold_constants:
        _quiet_onnxruntime()
        # fold_shapes turns Shape->Gather->... chains on static dims into constants; the batch axis
        # stays dynamic because its dim_param is not a number.
        graph.fold_constants(fold_shapes=True, error_ok=False)
        graph.cleanup(remove_unused_graph_inputs=False)
        removed += _remove_pass_through(graph)  # folding can leave new no-op casts behind
        graph.cleanup(remove_unused_graph_inputs=False)
    graph.toposort()
    out = onnx.shape_inference.infer_shapes(gs.export_onnx(graph), data_prop=True)
    out.ir_version = ir_version
    del out.metadata_props[:]
    out.metadata_props.extend(model.metadata_props)
    out.producer_name, out.producer_version = model.producer_name, model.producer_version
    log.debug(
        "graph clean-up: %d -> %d nodes (%d pass-through removed)", before, len(out.graph.node), removed
    )
    return out


def _quiet_onnxruntime() -> None:
    # Constant folding runs subgraphs in onnxruntime, whose optimiser warns once per node it cannot
    # simplify (hundreds of lines for HRNet); those warnings say nothing about the exported model.
    try:
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)
    except ImportError:  # graphsurgeon then folds without onnxruntime or reports why it cannot
        pass


def _is_pass_through(node: gs.Node) -> bool:
    if node.op == "Identity":
        return True
    if node.op == "Dropout":
        # Inference-mode Dropout (no training_mode input, or a mask output nobody reads) is an identity.
        return len(node.inputs) == 1 and (len(node.outputs) == 1 or not node.outputs[1].outputs)
    if node.op == "Cast":
        import onnx

        src = node.inputs[0]
        to = node.attrs.get("to")
        if src.dtype is None or to is None:
            return False
        try:
            target = onnx.helper.tensor_dtype_to_np_dtype(int(to))
        except (KeyError, TypeError, ValueError):
            return False
        return src.dtype == target
    return False


def _remove_pass_through(graph: gs.Graph) -> int:
    """Bypass Identity, inference Dropout and same-type Cast nodes; returns how many were removed."""
    import onnx_graphsurgeon as gs

    removed = 0
    for node in list(graph.nodes):
        if node.op not in _PASS_THROUGH or not _is_pass_through(node):
            continue
        src, dst = node.inputs[0], node.outputs[0]
        if dst in graph.outputs:
            # A graph output keeps its name: the producer of ``src`` writes ``dst`` directly. That is
            # impossible when ``src`` is itself a graph input/output or a constant, so keep those nodes.
            if isinstance(src, gs.Constant) or src in graph.inputs or src in graph.outputs:
                continue
            producers = list(src.inputs)
            consumers = [n for n in src.outputs if n is not node]
            node.inputs.clear()
            node.outputs.clear()
            for producer in producers:
                producer.outputs[producer.outputs.index(src)] = dst
            for consumer in consumers:
                _replace_input(consumer, src, dst)
        else:
            consumers = list(dst.outputs)
            node.inputs.clear()
            node.outputs.clear()
            for consumer in consumers:
                _replace_input(consumer, dst, src)
        removed += 1
    return removed


def _replace_input(node: gs.Node, old: gs.Tensor, new: gs.Tensor) -> None:
    for i, tensor in enumerate(node.inputs):
        if tensor is old:
            node.inputs[i] = new


# ---------------------------------------------------------------------- checks used by tests and export
def op_counts(model: onnx.ModelProto) -> Counter[str]:
    """How many nodes of each op type the main graph has."""
    return Counter(node.op_type for node in model.graph.node)


def dead_nodes(model: onnx.ModelProto) -> list[str]:
    """Names (or op types) of nodes none of whose outputs reach a consumer or a graph output."""
    used = {name for node in model.graph.node for name in node.input}
    used |= {o.name for o in model.graph.output}
    return [
        node.name or node.op_type
        for node in model.graph.node
        if not any(out and out in used for out in node.output)
    ]


def unused_initializers(model: onnx.ModelProto) -> list[str]:
    """Initializers that no node reads."""
    used = {name for node in model.graph.node for name in node.input}
    return [init.name for init in model.graph.initializer if init.name not in used]
