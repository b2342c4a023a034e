"""The one declarative description of every Triton model's inputs and outputs.

ONNX export (input/output names, the dynamic batch axis), TensorRT optimisation profiles, the
``config.pbtxt`` generator and the client all derive from these objects, so a name or a shape is
written down exactly once. Only numpy is imported here: the client installs without torch.

Dims never include the batch dimension. Models with ``max_batch_size > 0`` (the two networks) get a
leading batch dimension from Triton, which the ONNX files name :data:`BATCH_AXIS`; models with
``max_batch_size == 0`` (pipeline, decode, ensemble) take the dims as written. ``-1`` marks a dimension
whose size is only known per request (the image height and width).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from magnet_triton import request_options
from magnet_triton.errors import MagnetError
from magnet_triton.request_options import request_option

if TYPE_CHECKING:
    from magnet_triton.settings import Settings

# ---------------------------------------------------------------------- model names
BACKBONE_MODEL = "magnet_backbone"
REFINER_MODEL = "magnet_refiner"
PIPELINE_MODEL = "magnet_pipeline"
DECODE_MODEL = "magnet_decode"
ENSEMBLE_MODEL = "magnet"
#: The decoupled pipeline (``export --progressive``): one response per stage over a gRPC stream.
PROGRESSIVE_MODEL = "magnet_pipeline_progressive"

_PREFIX_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]*")

#: The pixel limit of the pipeline and the decode step when their config states none (``export``
#: always writes one, ``max_image_pixels``): the final C x H x W float32 maps must fit in memory
#: several times over (19 classes x 16 MP x 4 bytes = 1.2 GB per map).
DEFAULT_MAX_IMAGE_PIXELS = 16 * 1024 * 1024
#: The pipeline's config parameter that holds the limit (and says it in its refusals).
MAX_IMAGE_PIXELS_PARAMETER = "max_image_pixels"


@dataclass(frozen=True)
class ModelNames:
    """The served names of one preset's models: the names above, behind ``<prefix>_`` when a repository
    holds several presets (``--name-prefix cityscapes``: ``cityscapes_magnet``, ``cityscapes_magnet_pipeline``).

    Each refiner is a model of its own, ``<prefix>_magnet_refiner_<k>`` (k = 1..n), so that its Triton
    versions are versions of *that* network (version 2 is new weights, rolled out beside version 1) and
    not an index into the checkpoint set. The prefix has no ``_`` of its own, so a served name reads back
    to one prefix.
    """

    prefix: str = ""

    def __post_init__(self) -> None:
        if self.prefix and not _PREFIX_PATTERN.fullmatch(self.prefix):
            raise MagnetError(
                f"name prefix {self.prefix!r}: use lower-case letters, digits and '-' (no '_'), "
                "starting with a letter or digit"
            )

    def _named(self, base: str) -> str:
        return f"{self.prefix}_{base}" if self.prefix else base

    @property
    def ensemble(self) -> str:
        return self._named(ENSEMBLE_MODEL)

    @property
    def pipeline(self) -> str:
        return self._named(PIPELINE_MODEL)

    @property
    def progressive(self) -> str:
        return self._named(PROGRESSIVE_MODEL)

    @property
    def decode(self) -> str:
        return self._named(DECODE_MODEL)

    @property
    def backbone(self) -> str:
        return self._named(BACKBONE_MODEL)

    def refiner(self, refiner_index: int) -> str:
        """The model of the refiner with 0-based ``refiner_index``."""
        if refiner_index < 0:
            raise MagnetError(f"refiner index must be >= 0, got {refiner_index}")
        return f"{self._named(REFINER_MODEL)}_{refiner_number(refiner_index)}"

    def refiners(self, n_refiners: int) -> list[str]:
        return [self.refiner(i) for i in range(n_refiners)]

    def networks(self, n_refiners: int) -> list[str]:
        """The network models: the backbone, then the refiners in order."""
        return [self.backbone, *self.refiners(n_refiners)]

    @classmethod
    def of_entry_point(cls, model: str) -> ModelNames:
        """The names of the preset whose ensemble, pipeline or progressive pipeline is ``model``.

        Raises:
            MagnetError: ``model`` is none of those names.
        """
        for base in (ENSEMBLE_MODEL, PIPELINE_MODEL, PROGRESSIVE_MODEL):
            if model == base:
                return cls()
            if model.endswith("_" + base):
                prefix = model[: -len(base) - 1]
                if _PREFIX_PATTERN.fullmatch(prefix):
                    return cls(prefix)
        raise MagnetError(
            f"model {model!r} is not a MagNet entry point: expected {ENSEMBLE_MODEL!r}, {PIPELINE_MODEL!r} "
            f"or one of them behind a preset prefix (e.g. 'cityscapes_{ENSEMBLE_MODEL}')"
        )


#: The names of a single-preset repository.
DEFAULT_NAMES = ModelNames()


def is_network_model(model: str) -> bool:
    """Whether ``model`` is a backbone or refiner model (any prefix): the models whose time is network
    time, not the pipeline's own."""
    return model.endswith("_" + BACKBONE_MODEL) or model == BACKBONE_MODEL or f"{REFINER_MODEL}_" in model


# ---------------------------------------------------------------------- tensor names
PATCHES = "PATCHES"
FINE_AND_COARSE = "FINE_AND_COARSE"
PROBABILITIES = "PROBABILITIES"
IMAGE = "IMAGE"
IMAGE_BYTES = "IMAGE_BYTES"
# The optional inputs of the per-request options are named by their rows in request_options; these
# aliases are for code that addresses one of them by name.
MODE = request_option("mode").tensor
N_POINTS = request_option("n_points").tensor
N_PATCHES = request_option("n_patches").tensor
PATCH_ORDER = request_option("patch_order").tensor
SEGMENTATION = "SEGMENTATION"
COARSE_SEGMENTATION = "COARSE_SEGMENTATION"
CONFIDENCE = "CONFIDENCE"
SCALES_DONE = "SCALES_DONE"

#: Name of the dynamic batch axis in the ONNX files and the TensorRT profiles.
BATCH_AXIS = "batch"
#: The request parameter that gives ``magnet_pipeline`` a time budget in milliseconds, counted from when
#: it starts the request: past it, the refinement stops before its next scale and the map refined so far
#: is the answer (``SCALES_DONE`` says how far it got). ``magnet-client`` sends its timeout as this too,
#: since a deadline that passes on an ensemble request does not cancel its steps (Triton 24.10).
DEADLINE_PARAMETER = "deadline_ms"
#: The request parameter that names the outputs a client wants, comma-separated (``SEGMENTATION,CONFIDENCE``).
#: An ensemble asks its steps for every output it maps, whatever its own client asked, so behind the
#: ``magnet`` ensemble ``magnet_pipeline`` cannot tell from the requested outputs alone which maps it may
#: skip; the client library sends this with every request (absent: every output).
OUTPUTS_PARAMETER = "outputs"

#: Triton dtype name -> numpy dtype. BYTES travels as numpy ``object`` arrays of ``bytes``.
_NUMPY_DTYPES: dict[str, np.dtype] = {
    "FP32": np.dtype(np.float32),
    "FP16": np.dtype(np.float16),
    "UINT8": np.dtype(np.uint8),
    "INT32": np.dtype(np.int32),
    "BYTES": np.dtype(np.object_),
}
TRITON_DTYPES: tuple[str, ...] = tuple(_NUMPY_DTYPES)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a Triton model.

    Attributes:
        name: tensor name, as in ``config.pbtxt``, the ONNX graph and gRPC requests.
        dtype: Triton dtype name, one of :data:`TRITON_DTYPES` ("FP32", "FP16", "UINT8", "INT32", "BYTES").
        dims: shape without the batch dimension; -1 marks a per-request size.
        optional: an input a request may leave out (Triton ``optional: true``).
        description: what the tensor holds, with units; ends up in generated docs and comments.
    """

    name: str
    dtype: str
    dims: tuple[int, ...]
    optional: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if self.dtype not in _NUMPY_DTYPES:
            raise MagnetError(f"tensor {self.name}: unknown dtype {self.dtype!r}; use one of {TRITON_DTYPES}")
        dims = tuple(int(d) for d in self.dims)
        if any(d == 0 or d < -1 for d in dims):
            raise MagnetError(f"tensor {self.name}: dims must be positive or -1, got {dims}")
        object.__setattr__(self, "dims", dims)

    @property
    def numpy_dtype(self) -> np.dtype:
        """The numpy dtype of this tensor's data (``object`` for BYTES)."""
        return _NUMPY_DTYPES[self.dtype]

    @property
    def config_dtype(self) -> str:
        """The dtype as ``config.pbtxt`` spells it, e.g. ``TYPE_FP32`` (``TYPE_STRING`` for BYTES)."""
        return "TYPE_STRING" if self.dtype == "BYTES" else f"TYPE_{self.dtype}"

    @property
    def is_static(self) -> bool:
        """True when every dim (batch aside) is fixed."""
        return all(d > 0 for d in self.dims)

    def shape(self, batch: int | None = None) -> tuple[int, ...]:
        """The full shape: ``(batch, *dims)`` when ``batch`` is given, else ``dims``."""
        return self.dims if batch is None else (int(batch), *self.dims)


@dataclass(frozen=True)
class ModelSpec:
    """The interface of one Triton model.

    Attributes:
        name: the model's name in the repository.
        inputs, outputs: its tensors, in the order the ONNX graph and config list them.
        max_batch_size: Triton's ``max_batch_size``; 0 means the dims are the full shapes.
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        if self.max_batch_size < 0:
            raise MagnetError(f"model {self.name}: max_batch_size must be >= 0, got {self.max_batch_size}")
        names = [t.name for t in (*self.inputs, *self.outputs)]
        if len(set(names)) != len(names):
            raise MagnetError(f"model {self.name}: tensor names repeat: {names}")

    @property
    def batched(self) -> bool:
        return self.max_batch_size > 0

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def input(self, name: str) -> TensorSpec:
        return _find(self, self.inputs, name, "input")

    def output(self, name: str) -> TensorSpec:
        return _find(self, self.outputs, name, "output")

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``torch.onnx.export`` dynamic axes: axis 0 of every tensor is :data:`BATCH_AXIS` (batched models)."""
        if not self.batched:
            return {}
        return {t.name: {0: BATCH_AXIS} for t in (*self.inputs, *self.outputs)}

    def batch_profile(
        self, min_batch: int = 1, opt_batch: int | None = None, max_batch: int | None = None
    ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """TensorRT optimisation profile: input name -> (min, opt, max) shapes with the batch axis.

        ``max_batch`` defaults to ``max_batch_size`` and ``opt_batch`` to ``max_batch``. Needs a batched
        model whose inputs are otherwise static (the networks are).
        """
        if not self.batched:
            raise MagnetError(f"model {self.name} has no batch axis; it has no TensorRT profile")
        max_batch = self.max_batch_size if max_batch is None else int(max_batch)
        opt_batch = max_batch if opt_batch is None else int(opt_batch)
        if not 1 <= min_batch <= opt_batch <= max_batch:
            raise MagnetError(
                f"batch profile must satisfy 1 <= min <= opt <= max, got {min_batch}, {opt_batch}, {max_batch}"
            )
        if max_batch > self.max_batch_size:
            raise MagnetError(
                f"max batch {max_batch} exceeds the model's max_batch_size {self.max_batch_size}"
            )
        profile = {}
        for t in self.inputs:
            if not t.is_static:
                raise MagnetError(f"input {t.name} of {self.name} has dynamic dims {t.dims}")
            profile[t.name] = (t.shape(min_batch), t.shape(opt_batch), t.shape(max_batch))
        return profile


def _find(model: ModelSpec, tensors: tuple[TensorSpec, ...], name: str, kind: str) -> TensorSpec:
    for t in tensors:
        if t.name == name:
            return t
    raise MagnetError(f"model {model.name} has no {kind} {name!r}; it has {[t.name for t in tensors]}")


# ---------------------------------------------------------------------- the models
def _patch_dims(settings: Settings, channels: int) -> tuple[int, int, int]:
    iw, ih = settings.input_size
    return (channels, ih, iw)


def _check_batch(max_batch_size: int) -> int:
    if isinstance(max_batch_size, bool) or int(max_batch_size) != max_batch_size or max_batch_size < 1:
        raise MagnetError(f"max_batch_size of a network must be a whole number >= 1, got {max_batch_size!r}")
    return int(max_batch_size)


def backbone_spec(settings: Settings, max_batch_size: int) -> ModelSpec:
    """The backbone: normalised patches in, class probabilities out (softmax inside the graph)."""
    c = settings.num_classes
    return ModelSpec(
        name=BACKBONE_MODEL,
        inputs=(
            TensorSpec(
                PATCHES,
                "FP32",
                _patch_dims(settings, 3),
                description="B x 3 x ih x iw RGB patches, /255 then ImageNet mean/std normalised",
            ),
        ),
        outputs=(
            TensorSpec(
                PROBABILITIES, "FP32", _patch_dims(settings, c), description="B x C x ih x iw softmax over C"
            ),
        ),
        max_batch_size=_check_batch(max_batch_size),
    )


def refiner_spec(settings: Settings, max_batch_size: int) -> ModelSpec:
    """The refiner: fine then coarse probabilities in, merged probabilities out.

    Every refiner of a checkpoint set is a model of its own (:meth:`ModelNames.refiner`) with this spec.
    """
    c = settings.num_classes
    return ModelSpec(
        name=REFINER_MODEL,
        inputs=(
            TensorSpec(
                FINE_AND_COARSE,
                "FP32",
                _patch_dims(settings, 2 * c),
                description="B x 2C x ih x iw: fine probabilities (channels 0..C-1), then coarse",
            ),
        ),
        outputs=(
            TensorSpec(
                PROBABILITIES, "FP32", _patch_dims(settings, c), description="B x C x ih x iw softmax over C"
            ),
        ),
        max_batch_size=_check_batch(max_batch_size),
    )


def refiner_number(refiner_index: int) -> int:
    """The 1-based number of the refiner with 0-based ``refiner_index``: in its model's name
    (``magnet_refiner_<number>``) and its exported files (``refiner_<number>.onnx``)."""
    return int(refiner_index) + 1


def _override_inputs() -> tuple[TensorSpec, ...]:
    """One optional 1-element input per row of :data:`~magnet_triton.request_options.REQUEST_OPTIONS`."""
    return tuple(
        TensorSpec(o.tensor, o.dtype, (1,), optional=True, description=o.help)
        for o in request_options.REQUEST_OPTIONS
    )


def _segmentation_outputs() -> tuple[TensorSpec, ...]:
    return (
        TensorSpec(SEGMENTATION, "UINT8", (-1, -1), description="H0 x W0 class map of the final scale"),
        TensorSpec(
            COARSE_SEGMENTATION, "UINT8", (-1, -1), description="H0 x W0 class map of the coarse pass"
        ),
        TensorSpec(
            CONFIDENCE,
            "FP32",
            (-1, -1),
            description="H0 x W0 top-1 minus top-2 class probability of the final scale, in [0, 1]",
        ),
        TensorSpec(
            SCALES_DONE,
            "INT32",
            (1,),
            description="scales the map went through, the coarse pass included: fewer than the preset's "
            "when deadline_ms ended the refinement early",
        ),
    )


def pipeline_spec(settings: Settings | None = None) -> ModelSpec:
    """The BLS pipeline: one decoded RGB image in, class maps out. ``settings`` fixes nothing here yet,
    but is taken so every constructor has the same shape and future settings-dependent dims fit; the
    client, which does not know the served preset, leaves it out."""
    del settings
    return ModelSpec(
        name=PIPELINE_MODEL,
        inputs=(
            TensorSpec(IMAGE, "UINT8", (-1, -1, 3), description="H0 x W0 x 3 RGB image"),
            *_override_inputs(),
        ),
        outputs=_segmentation_outputs(),
        max_batch_size=0,
    )


def progressive_spec(settings: Settings | None = None) -> ModelSpec:
    """The pipeline's decoupled twin: the same inputs; one response per stage, each the class map so far
    and the scales it went through (the last response is the pipeline's own answer)."""
    pipeline = pipeline_spec(settings)
    return ModelSpec(
        name=PROGRESSIVE_MODEL,
        inputs=pipeline.inputs,
        outputs=(pipeline.output(SEGMENTATION), pipeline.output(SCALES_DONE)),
        max_batch_size=0,
    )


def decode_spec() -> ModelSpec:
    """PNG/JPEG bytes in, H0 x W0 x 3 uint8 RGB out."""
    return ModelSpec(
        name=DECODE_MODEL,
        inputs=(TensorSpec(IMAGE_BYTES, "BYTES", (1,), description="one PNG or JPEG file"),),
        outputs=(TensorSpec(IMAGE, "UINT8", (-1, -1, 3), description="H0 x W0 x 3 RGB image"),),
        max_batch_size=0,
    )


def ensemble_spec(settings: Settings | None = None) -> ModelSpec:
    """The public entry point: encoded image bytes (and the pipeline's optional overrides) in."""
    pipeline = pipeline_spec(settings)
    return ModelSpec(
        name=ENSEMBLE_MODEL,
        inputs=(decode_spec().input(IMAGE_BYTES), *(t for t in pipeline.inputs if t.name != IMAGE)),
        outputs=pipeline.outputs,
        max_batch_size=0,
    )


def all_specs(settings: Settings, *, backbone_max_batch: int, refiner_max_batch: int) -> list[ModelSpec]:
    """Every model of the repository, networks first."""
    return [
        backbone_spec(settings, backbone_max_batch),
        refiner_spec(settings, refiner_max_batch),
        pipeline_spec(settings),
        decode_spec(),
        ensemble_spec(settings),
    ]
