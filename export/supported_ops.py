"""Which ONNX graphs TensorRT 10's ONNX parser can build, checked before spending GPU time on it.

The op list follows onnx-tensorrt's ``docs/operators.md`` for the TensorRT 10 releases (default ONNX
domain, opsets 9 to 20). It is deliberately an allow-list: an op missing here makes the build fail
early on a CPU machine with a message naming it, instead of on the GPU host with a parser error.
Attribute limits that matter for MagNet's networks are checked too (Resize modes, no float64).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

#: Ops of the default ONNX domain that the TensorRT 10 parser imports.
# fmt: off
TENSORRT_SUPPORTED_OPS: frozenset[str] = frozenset((
    "Abs", "Acos", "Acosh", "Add", "AffineGrid", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan",
    "Atanh", "AveragePool", "BatchNormalization", "BlackmanWindow", "Cast", "CastLike", "Ceil", "Celu",
    "Clip", "Compress", "Concat", "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh",
    "CumSum", "DeformConv", "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu",
    "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten", "Floor", "Gather", "GatherElements",
    "GatherND", "Gelu", "Gemm", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater",
    "GreaterOrEqual", "GridSample", "GroupNormalization", "GRU", "HammingWindow", "HannWindow",
    "HardSigmoid", "HardSwish", "Hardmax", "Identity", "If", "InstanceNormalization", "IsInf", "IsNaN",
    "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop",
    "LpNormalization", "LpPool", "LRN", "LSTM", "MatMul", "Max", "MaxPool", "Mean",
    "MeanVarianceNormalization", "Min", "Mish", "Mod", "Mul", "Neg", "NonMaxSuppression", "NonZero",
    "Not", "OneHot", "Or", "Pad", "Pow", "PRelu", "QuantizeLinear", "RandomNormal", "RandomNormalLike",
    "RandomUniform", "RandomUniformLike", "Range", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum",
    "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
    "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence", "RNN", "RoiAlign", "Round",
    "Scan", "Scatter", "ScatterElements", "ScatterND", "Selu", "Shape", "Shrink", "Sigmoid", "Sign",
    "Sin", "Sinh", "Size", "Slice", "Softmax", "Softplus", "Softsign", "SpaceToDepth", "Split", "Sqrt",
    "Squeeze", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu", "Tile", "TopK", "Transpose", "Trilu",
    "Unsqueeze", "Upsample", "Where", "Xor",
))
# fmt: on

#: Resize coordinate modes the parser maps onto IResizeLayer (``tf_crop_and_resize`` is not one).
RESIZE_COORDINATE_MODES = frozenset({"align_corners", "half_pixel", "pytorch_half_pixel", "asymmetric"})
#: Resize interpolation modes MagNet's networks may use (cubic exists in TensorRT, but none needs it).
RESIZE_MODES = frozenset({"nearest", "linear"})

_DEFAULT_DOMAINS = ("", "ai.onnx")


def unsupported_ops(onnx_model: onnx.ModelProto) -> set[str]:
    """Op types in the graph (subgraphs included) that TensorRT 10's parser does not import.

    Ops of another domain come back as ``domain::Op``: they would need a TensorRT plugin.
    """
    found = set()
    for node in _all_nodes(onnx_model.graph):
        if node.domain not in _DEFAULT_DOMAINS:
            found.add(f"{node.domain}::{node.op_type}")
        elif node.op_type not in TENSORRT_SUPPORTED_OPS:
            found.add(node.op_type)
    return found


def tensorrt_problems(onnx_model: onnx.ModelProto) -> list[str]:
    """Everything in ``onnx_model`` that a TensorRT 10 build would reject or silently change.

    Returns readable lines (empty when the graph is fine): unsupported ops, Resize nodes with a
    coordinate or interpolation mode TensorRT does not implement or with antialiasing, and float64
    tensors (TensorRT has no double type).
    """
    import onnx

    problems = [f"unsupported op {op}" for op in sorted(unsupported_ops(onnx_model))]
    for node in _all_nodes(onnx_model.graph):
        if node.op_type != "Resize":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        coord = _text(attrs.get("coordinate_transformation_mode", b"half_pixel"))
        mode = _text(attrs.get("mode", b"nearest"))
        where = f"Resize {node.name or '(unnamed)'}"
        if coord not in RESIZE_COORDINATE_MODES:
            problems.append(f"{where}: coordinate_transformation_mode {coord!r} is not supported")
        if mode not in RESIZE_MODES:
            problems.append(f"{where}: mode {mode!r} is not supported (use nearest or linear)")
        if int(attrs.get("antialias", 0)):
            problems.append(f"{where}: antialias=1 is not supported")
    double = onnx.TensorProto.DOUBLE
    for init in onnx_model.graph.initializer:
        if init.data_type == double:
            problems.append(f"initializer {init.name} is float64")
    for value in (*onnx_model.graph.input, *onnx_model.graph.output, *onnx_model.graph.value_info):
        if value.type.tensor_type.elem_type == double:
            problems.append(f"tensor {value.name} is float64")
    for node in _all_nodes(onnx_model.graph):
        if node.op_type == "Cast":
            to = next((a.i for a in node.attribute if a.name == "to"), None)
            if to == double:
                problems.append(f"Cast {node.name or '(unnamed)'} casts to float64")
    return problems


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _all_nodes(graph: onnx.GraphProto):
    """Nodes of ``graph`` and of every subgraph (If/Loop/Scan bodies), depth first."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g.node:
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)
