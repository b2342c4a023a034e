"""A fake ``triton_python_backend_utils``: the served models run in the test process, with no tritonserver.

Only what ``model_repository/*.py`` use is here, with the real module's names and call shapes, so a model
that works against this fake calls the real one the same way. BLS calls (``InferenceRequest.exec``) go to
a callable the test gives, which plays the composing models. Install it for one test with::

    pb_utils = fake_triton.install(monkeypatch, bls=lambda request: ...)

Custom metrics (``MetricFamily``) keep their values in the module's ``metric_values``, keyed by family
name and labels, as Triton shares one series among every instance that makes it.

What the fake does not model: GPU memory (DLPack goes through torch, on whatever device the tensor is),
shared memory, decoupled models, and Triton's own checks of inputs against the config (dtypes, dims,
optional inputs), which happen before ``execute`` in the real server.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, ClassVar

import numpy as np


class TritonError:
    """An error for a response: ``message()`` and ``code()``; codes as in Triton 23.09+ (the default is INTERNAL)."""

    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        self._message = str(message)
        self._code = code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code

    def __repr__(self) -> str:
        return f"TritonError({self._message!r}, code={self._code})"


class TritonModelException(Exception):
    """What the real module raises from a failed ``exec`` in some versions; here for models that catch it."""


class Tensor:
    """A named tensor: a numpy array on the CPU, or a torch tensor that came in over DLPack.

    The array is copied on the way in, as Triton copies it into its own memory, so a model that keeps
    writing to its array after building the tensor cannot change what was sent.
    """

    def __init__(self, name: str, array: np.ndarray) -> None:
        if not isinstance(array, np.ndarray):
            raise TypeError(f"Tensor {name!r} wants a numpy array, got {type(array).__name__}")
        self._name = name
        self._array: np.ndarray | None = np.array(array, copy=True, order="C")
        self._torch: Any = None

    @staticmethod
    def from_dlpack(name: str, capsule: Any) -> Tensor:
        import torch

        tensor = Tensor.__new__(Tensor)
        tensor._name = name
        tensor._array = None
        # Cloned for the same reason numpy arrays are copied.
        tensor._torch = torch.utils.dlpack.from_dlpack(capsule).clone()
        return tensor

    def name(self) -> str:
        return self._name

    def is_cpu(self) -> bool:
        return self._array is not None or self._torch.device.type == "cpu"

    def as_numpy(self) -> np.ndarray:
        if self._array is not None:
            return self._array
        if not self.is_cpu():
            # The real module refuses too: a GPU tensor has no numpy view.
            raise TritonModelException(f"tensor {self._name} is in GPU memory and cannot be read as numpy")
        return self._torch.numpy()

    def to_dlpack(self) -> Any:
        import torch

        if self._torch is not None:
            return torch.utils.dlpack.to_dlpack(self._torch)
        return torch.utils.dlpack.to_dlpack(torch.from_numpy(self._array))

    def __repr__(self) -> str:
        shape = self._array.shape if self._array is not None else tuple(self._torch.shape)
        return f"Tensor({self._name!r}, shape={shape})"


class InferenceResponse:
    """Output tensors, or an error."""

    def __init__(self, output_tensors: Sequence[Tensor] = (), error: TritonError | None = None) -> None:
        self._outputs = list(output_tensors)
        self._error = error

    def output_tensors(self) -> list[Tensor]:
        return self._outputs

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def __repr__(self) -> str:
        if self._error is not None:
            return f"InferenceResponse(error={self._error!r})"
        return f"InferenceResponse({self._outputs!r})"


class InferenceRequest:
    """A request: what ``execute`` gets from Triton, and what a model builds for a BLS call.

    ``parameters`` may be a dict or a JSON string; ``parameters()`` returns JSON, as the real one does.
    ``exec()`` needs a module from :func:`make_pb_utils` with a ``bls`` callable.
    """

    def __init__(
        self,
        model_name: str = "",
        inputs: Sequence[Tensor] = (),
        requested_output_names: Sequence[str] = (),
        model_version: int = -1,
        parameters: dict[str, Any] | str | None = None,
        timeout: int = 0,
    ) -> None:
        self.model_name = model_name
        self.model_version = int(model_version)
        self.timeout = timeout
        self._inputs = list(inputs)
        self._requested = list(requested_output_names)
        if parameters is None:
            parameters = {}
        self._parameters = parameters if isinstance(parameters, str) else json.dumps(parameters)
        #: Set to make ``is_cancelled()`` say yes after that many calls (None: never).
        self.cancel_after_calls: int | None = None
        self.cancel_checks = 0

    def is_cancelled(self) -> bool:
        self.cancel_checks += 1
        return self.cancel_after_calls is not None and self.cancel_checks > self.cancel_after_calls

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def requested_output_names(self) -> list[str]:
        return self._requested

    def parameters(self) -> str:
        return self._parameters

    def exec(self, decoupled: bool = False) -> InferenceResponse:
        raise TritonModelException("this fake module has no BLS handler (give make_pb_utils a bls callable)")


def _by_name(tensors: Sequence[Tensor], name: str) -> Tensor | None:
    return next((t for t in tensors if t.name() == name), None)


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    """The request's input ``name``, or None when it was not sent (an optional input)."""
    return _by_name(request.inputs(), name)


def get_output_tensor_by_name(response: InferenceResponse, name: str) -> Tensor | None:
    """The response's output ``name``, or None."""
    return _by_name(response.output_tensors(), name)


class Metric:
    """One labelled series of a :class:`MetricFamily`: ``increment`` and ``value`` as the real one."""

    def __init__(
        self, values: dict[tuple[str, frozenset], float], key: tuple[str, frozenset], kind: int
    ) -> None:
        self._values, self._key, self._kind = values, key, kind
        values.setdefault(key, 0.0)

    def increment(self, value: float) -> None:
        if self._kind == MetricFamily.COUNTER and value < 0:
            # As Triton: a counter only goes up.
            raise TritonModelException("COUNTER can only be incremented monotonically by non-negative values")
        self._values[self._key] += value

    def value(self) -> float:
        return self._values[self._key]


class MetricFamily:
    """``MetricFamily(name=..., description=..., kind=...)``; ``Metric(labels={...})`` makes a series."""

    COUNTER, GAUGE, HISTOGRAM = 0, 1, 2
    #: Set by make_pb_utils: the module's shared store of values.
    _values: ClassVar[dict[tuple[str, frozenset], float]] = {}

    def __init__(self, name: str, description: str, kind: int) -> None:
        if kind not in (self.COUNTER, self.GAUGE):
            raise TritonModelException(f"the fake has counters and gauges only, not kind {kind}")
        self.name, self.description, self.kind = name, description, kind

    def Metric(self, labels: dict[str, str] | None = None) -> Metric:
        key = (self.name, frozenset((labels or {}).items()))
        return Metric(self._values, key, self.kind)


def make_pb_utils(bls: Callable[[InferenceRequest], InferenceResponse] | None = None) -> ModuleType:
    """A fresh ``triton_python_backend_utils`` module whose BLS requests ``exec`` by calling ``bls``.

    Fresh per call, so no test sees another's BLS handler.
    """
    module = ModuleType("triton_python_backend_utils")
    module.__doc__ = __doc__
    module.in_flight = module.max_in_flight = 0  # BLS calls sent with async_exec, now and at most
    #: (family name, frozenset of label items) -> value, of every metric made through this module.
    module.metric_values = {}
    module.MetricFamily = type("MetricFamily", (MetricFamily,), {"_values": module.metric_values})

    class BoundInferenceRequest(InferenceRequest):
        def exec(self, decoupled: bool = False) -> InferenceResponse:
            if decoupled:
                raise NotImplementedError("the fake has no decoupled BLS calls")
            if bls is None:
                return super().exec()
            return bls(self)

        def async_exec(self, decoupled: bool = False) -> Any:
            # As the real one: it needs a running loop when called, and returns an awaitable.
            loop = asyncio.get_running_loop()
            return loop.create_task(self._in_flight(decoupled))

        async def _in_flight(self, decoupled: bool) -> InferenceResponse:
            module.in_flight += 1
            module.max_in_flight = max(module.max_in_flight, module.in_flight)
            try:
                await asyncio.sleep(0)  # yield, so that calls sent together are in flight together
                return self.exec(decoupled)
            finally:
                module.in_flight -= 1

    BoundInferenceRequest.__name__ = BoundInferenceRequest.__qualname__ = "InferenceRequest"
    module.InferenceRequest = BoundInferenceRequest
    for value in (TritonError, TritonModelException, Tensor, InferenceResponse):
        setattr(module, value.__name__, value)
    module.get_input_tensor_by_name = get_input_tensor_by_name
    module.get_output_tensor_by_name = get_output_tensor_by_name
    return module


def install(
    monkeypatch: Any, bls: Callable[[InferenceRequest], InferenceResponse] | None = None
) -> ModuleType:
    """Put a fresh fake in ``sys.modules`` for this test (pytest's ``monkeypatch`` takes it out again)."""
    module = make_pb_utils(bls)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", module)
    return module
