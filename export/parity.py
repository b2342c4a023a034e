"""Parity of an exported network: onnxruntime against PyTorch, on inputs shaped like real ones.

Errors are measured on probabilities (the graphs end with a softmax), which is what the MagNet loop
consumes. Next to the ONNX-vs-PyTorch figures the report shows PyTorch FP32 against FP64 on the same
inputs: that is the float32 noise floor of the network, so a reader can tell an export bug (errors far
above it) from rounding (errors of its size).

Also the ``magnet-triton parity`` sub-command (module ``magnet_triton.export.parity``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from magnet_triton.errors import MagnetError

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParityBounds:
    """Largest acceptable differences between two FP32 runs of the same network (probabilities)."""

    max_abs: float = 2e-3
    mean_abs: float = 1e-5
    argmax_agreement: float = 0.9999


DEFAULT_BOUNDS = ParityBounds()


@dataclass(frozen=True)
class ParityReport:
    """ONNX (``backend``) against PyTorch FP32 on ``batch`` random inputs of ``input_size`` (w, h).

    ``max_abs``/``mean_abs`` are absolute probability differences over B x C x h x w;
    ``argmax_agreement`` is the share of the B x h x w pixels whose class agrees. ``fp64_*`` compare
    PyTorch FP32 with FP64 on the same inputs (None when not measured).
    """

    network: str
    num_classes: int
    onnx_path: str
    input_size: tuple[int, int]
    batch: int
    seed: int
    max_abs: float
    mean_abs: float
    argmax_agreement: float
    fp64_max_abs: float | None = None
    fp64_mean_abs: float | None = None
    backend: str = "onnxruntime"
    bounds: ParityBounds = field(default_factory=ParityBounds)

    @property
    def passed(self) -> bool:
        return not self.failures()

    def failures(self) -> list[str]:
        """One line per bound that is exceeded."""
        b = self.bounds
        out = []
        if not self.max_abs <= b.max_abs:  # written so that NaN fails
            out.append(f"max abs error {self.max_abs:.3g} > {b.max_abs:.3g}")
        if not self.mean_abs <= b.mean_abs:
            out.append(f"mean abs error {self.mean_abs:.3g} > {b.mean_abs:.3g}")
        if not self.argmax_agreement >= b.argmax_agreement:
            out.append(f"argmax agreement {self.argmax_agreement:.4%} < {b.argmax_agreement:.4%}")
        return out

    def table(self) -> str:
        """A small fixed-width table for logs and the command line."""
        w, h = self.input_size
        rows = [
            (
                "max abs error",
                f"{self.max_abs:.3e}",
                f"<= {self.bounds.max_abs:.1e}",
                _fmt(self.fp64_max_abs),
            ),
            (
                "mean abs error",
                f"{self.mean_abs:.3e}",
                f"<= {self.bounds.mean_abs:.1e}",
                _fmt(self.fp64_mean_abs),
            ),
            (
                "argmax agreement",
                f"{self.argmax_agreement:.4%}",
                f">= {self.bounds.argmax_agreement:.2%}",
                "",
            ),
        ]
        head = (
            f"parity {self.network} (C={self.num_classes}, {self.batch} x {w}x{h}, seed {self.seed}): "
            f"{self.backend} vs torch FP32 -> {'PASS' if self.passed else 'FAIL'}"
        )
        lines = [head, f"  {'':<18} {self.backend:>12} {'bound':>12} {'fp32 vs fp64':>14}"]
        lines += [f"  {name:<18} {value:>12} {bound:>12} {ref:>14}" for name, value, bound, ref in rows]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input_size"] = list(self.input_size)
        d["passed"] = self.passed
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParityReport:
        """Inverse of :meth:`to_dict` (``passed`` is recomputed)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["input_size"] = tuple(values["input_size"])
        values["bounds"] = ParityBounds(**values.get("bounds", {}))
        return cls(**values)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3e}"


# ---------------------------------------------------------------------- inputs and metrics
def make_inputs(
    network_name: str, num_classes: int, input_size: tuple[int, int], batch: int, seed: int
) -> np.ndarray:
    """Inputs like the ones the network sees in the pipeline, B x Cin x h x w float32.

    Backbones: a uniform random RGB image in [0, 1], normalised as the registry says (3 channels).
    Refiner: fine then coarse probabilities (2C channels), each a softmax of random logits, so the
    inputs sum to 1 per pixel as in the pipeline rather than being raw noise.
    """
    from magnet_triton.networks.registry import network_entry

    normalization = network_entry(network_name).normalization
    w, h = input_size
    rng = np.random.default_rng(seed)
    if normalization is None:
        # Logits of spread 3 give a mix of confident and uncertain pixels.
        logits = rng.normal(0.0, 3.0, size=(2, batch, num_classes, h, w))
        prob = np.exp(logits - logits.max(axis=2, keepdims=True))
        prob /= prob.sum(axis=2, keepdims=True)
        return np.concatenate([prob[0], prob[1]], axis=1).astype(np.float32)
    image = rng.uniform(0.0, 1.0, size=(batch, h, w, 3)).astype(np.float32)
    normalised = (image - normalization.mean_array) / normalization.std_array
    return np.ascontiguousarray(normalised.transpose(0, 3, 1, 2), dtype=np.float32)


def probability_errors(test: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Max and mean absolute difference and argmax (dim 1) agreement of two B x C x h x w arrays."""
    if test.shape != reference.shape:
        raise MagnetError(f"outputs differ in shape: {test.shape} vs {reference.shape}")
    diff = np.abs(test.astype(np.float64) - reference.astype(np.float64))
    agree = np.argmax(test, axis=1) == np.argmax(reference, axis=1)
    return {
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "argmax_agreement": float(agree.mean()),
    }


def run_onnxruntime(onnx_path: str | os.PathLike[str], inputs: np.ndarray) -> np.ndarray:
    """Run the single-input graph at ``onnx_path`` on the CPU; returns its first output."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: inputs})[0]


def onnx_input_size(onnx_path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(w, h) of the graph's first input when both are static, else None."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 4 or not (dims[2].dim_value and dims[3].dim_value):
        return None
    return (dims[3].dim_value, dims[2].dim_value)


def torch_probabilities(model: nn.Module, inputs: np.ndarray, *, double: bool = False) -> np.ndarray:
    """softmax(model(inputs)) over dim 1 in eval mode, FP32 or (on a copy of the model) FP64."""
    import torch

    from magnet_triton.export.onnx_export import probabilities_module

    net = copy.deepcopy(model).double() if double else model
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            x = torch.from_numpy(inputs)
            x = x.double() if double else x
            return probabilities_module(net)(x).float().numpy()
    finally:
        net.train(was_training)


def parity_report(
    network_name: str,
    num_classes: int,
    onnx_path: str | os.PathLike[str],
    model: nn.Module,
    *,
    input_size: tuple[int, int] | None = None,
    batch: int = 2,
    seed: int = 0,
    fp64: bool = True,
    bounds: ParityBounds = DEFAULT_BOUNDS,
    engine: tuple[str, Callable[[np.ndarray], np.ndarray]] | None = None,
) -> ParityReport:
    """Compare onnxruntime on ``onnx_path`` (or ``engine``) with PyTorch ``model`` (logits out) on fresh inputs.

    Args:
        network_name: ``refinement`` or a backbone name; picks the kind of input (see :func:`make_inputs`).
        num_classes: C.
        onnx_path: graph exported by :func:`~magnet_triton.export.onnx_export.export_onnx`.
        model: the network the graph came from, with the same weights.
        input_size: (w, h); defaults to the graph's static input size.
        batch: inputs per run.
        seed: seed of the random inputs.
        fp64: also measure PyTorch FP32 against FP64 (doubles the PyTorch time).
        bounds: acceptance bounds.
        engine: ``(name, run)`` to measure instead of onnxruntime: ``run`` maps B x Cin x h x w float32
            inputs to B x C x h x w probabilities (an OpenVINO model at some precision, say); the
            report's ``backend`` is ``name``.
    """
    static = onnx_input_size(onnx_path)
    if input_size is None:
        if static is None:
            raise MagnetError(f"{onnx_path} has a dynamic height/width: give --input-size WxH")
        input_size = static
    elif static is not None and tuple(input_size) != static:
        raise MagnetError(
            f"input size {input_size[0]}x{input_size[1]} differs from the exported graph's "
            f"{static[0]}x{static[1]}; export at that size or leave the size out"
        )
    if batch < 1:
        raise MagnetError(f"batch must be >= 1, got {batch}")
    inputs = make_inputs(network_name, num_classes, tuple(input_size), batch, seed)

    reference = torch_probabilities(model, inputs)
    if reference.shape[1] != num_classes:
        raise MagnetError(f"the model returns {reference.shape[1]} classes, not {num_classes}")
    backend, run = engine or ("onnxruntime", lambda x: run_onnxruntime(onnx_path, x))
    errors = probability_errors(run(inputs), reference)
    fp64_errors = {}
    if fp64:
        fp64_errors = probability_errors(reference, torch_probabilities(model, inputs, double=True))
    report = ParityReport(
        network=network_name,
        num_classes=num_classes,
        onnx_path=str(onnx_path),
        input_size=(int(input_size[0]), int(input_size[1])),
        batch=batch,
        seed=seed,
        fp64_max_abs=fp64_errors.get("max_abs"),
        fp64_mean_abs=fp64_errors.get("mean_abs"),
        bounds=bounds,
        backend=backend,
        **errors,
    )
    log.debug("%s", report.table())
    return report


def compare_with_onnxruntime(
    onnx_path: str | os.PathLike[str],
    run: Callable[[np.ndarray], np.ndarray],
    *,
    backend: str,
    bounds: ParityBounds,
    batch: int = 2,
    seed: int = 0,
) -> ParityReport:
    """An engine built from ``onnx_path`` (``run``: B x Cin x h x w float32 -> probabilities) against
    onnxruntime on that graph, on the realistic inputs of :func:`make_inputs`.

    The network comes from the graph's ``magnet_triton.network`` metadata (a graph without it is the
    refiner when its input is ``FINE_AND_COARSE``), the size and class count from its static dims.
    onnxruntime stands in for PyTorch FP32, which the export has already held it to.
    """
    import onnx

    from magnet_triton.export.onnx_export import NETWORK_METADATA_KEY
    from magnet_triton.io_spec import FINE_AND_COARSE
    from magnet_triton.networks.registry import REFINER_NETWORK

    proto = onnx.load(str(onnx_path), load_external_data=False)
    size = onnx_input_size(onnx_path)
    num_classes = proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    network = {p.key: p.value for p in proto.metadata_props}.get(NETWORK_METADATA_KEY)
    if network is None and proto.graph.input[0].name == FINE_AND_COARSE:
        network = REFINER_NETWORK
    if size is None or not num_classes or network is None:
        raise MagnetError(f"{onnx_path} must have static C x h x w dims and name its network to compare")
    inputs = make_inputs(network, num_classes, size, batch, seed)
    errors = probability_errors(np.asarray(run(inputs)), run_onnxruntime(onnx_path, inputs))
    return ParityReport(
        network=network,
        num_classes=num_classes,
        onnx_path=str(onnx_path),
        input_size=size,
        batch=batch,
        seed=seed,
        backend=backend,
        bounds=bounds,
        **errors,
    )


# ---------------------------------------------------------------------- command line
def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH such as 256x128, got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return (w, h)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``magnet-triton parity`` to the command line."""
    from magnet_triton.networks.registry import NETWORK_NAMES

    p = subparsers.add_parser(
        "parity",
        help="check an exported ONNX network against PyTorch with onnxruntime",
        description="Run an exported network in onnxruntime and in PyTorch on the same random, realistic "
        "inputs; print the errors on the probabilities; exit 1 when they exceed the FP32 bounds.",
    )
    p.add_argument("--onnx", type=Path, required=True, metavar="FILE", help="exported .onnx file")
    p.add_argument("--network", required=True, choices=NETWORK_NAMES, help="network the file holds")
    p.add_argument("--num-classes", type=int, required=True, metavar="C", help="number of classes")
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument(
        "--checkpoint", type=Path, metavar="FILE", help="the weights the file was exported with"
    )
    weights.add_argument("--random-weights", type=int, metavar="SEED", help="seeded random weights instead")
    p.add_argument("--input-size", type=_parse_size, metavar="WxH", help="default: the graph's input size")
    p.add_argument("--batch", type=int, default=2, metavar="N", help="inputs per run (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the report as JSON")
    p.add_argument(
        "--openvino",
        type=Path,
        metavar="XML",
        help="measure this OpenVINO IR (exported from --onnx, maybe INT8) instead of onnxruntime",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "int8"),
        default="fp32",
        help="with --openvino: the precision it runs at; the bounds are that precision's",
    )
    p.set_defaults(func=_run_parity)


def _run_parity(args: argparse.Namespace) -> int:
    from magnet_triton.networks.weights import network_with_weights

    if not args.onnx.is_file():
        raise MagnetError(f"no ONNX file at {args.onnx}")
    model = network_with_weights(
        args.network, args.num_classes, checkpoint=args.checkpoint, random_seed=args.random_weights
    )
    engine, bounds = None, DEFAULT_BOUNDS
    if args.openvino is not None:
        from magnet_triton import openvino_engine

        if not args.openvino.is_file():
            raise MagnetError(f"no OpenVINO IR at {args.openvino}")
        compiled = openvino_engine.compile_model(args.openvino, args.precision, len(os.sched_getaffinity(0)))
        engine = (f"openvino-{args.precision}", lambda x: np.asarray(compiled(x)[0]))
        bounds = openvino_engine.parity_bounds(args.precision)
    elif args.precision != "fp32":
        raise MagnetError("--precision is for --openvino: onnxruntime runs the ONNX file in FP32")
    report = parity_report(
        args.network,
        args.num_classes,
        args.onnx,
        model,
        input_size=args.input_size,
        batch=args.batch,
        seed=args.seed,
        bounds=bounds,
        engine=engine,
    )
    print(report.table())
    for failure in report.failures():
        print(f"  FAIL: {failure}")
    if args.json:
        try:
            args.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        except OSError as e:
            raise MagnetError(f"cannot write {args.json}: {e}") from e
    return 0 if report.passed else 1
