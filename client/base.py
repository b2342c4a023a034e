"""What the sync and the asyncio client share: options, channel setup, request inputs, shared memory.

Only the calls differ between the two (``client.infer(...)`` against ``await client.infer(...)``), so
everything else lives here once.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from magnet_triton import io_spec
from magnet_triton.client.errors import (
    BadRequestError,
    MagnetClientError,
    ServerError,
    SharedMemoryError,
    status_name,
)
from magnet_triton.client.request import (
    ImageInput,
    Request,
    Tensor,
    Transport,
    check_outputs,
    override_tensors,
    prepare,
)
from magnet_triton.client.retry import RetryPolicy
from magnet_triton.client.shm import CudaRegion, Region, SystemRegion
from magnet_triton.errors import MagnetError
from magnet_triton.io_spec import DEADLINE_PARAMETER, OUTPUTS_PARAMETER

log = logging.getLogger("magnet_triton.client")

DEFAULT_URL = "127.0.0.1:8001"
#: Triton's gRPC limit (INT32_MAX); the grpc default of 4 MiB would refuse any real image.
MAX_GRPC_MESSAGE_BYTES = 2**31 - 1
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[^:/\s]+):(\d{1,5})$")


def normalize_url(url: str) -> str:
    """``host:port`` as tritonclient.grpc takes it; ``grpc://`` is dropped, an HTTP URL is refused."""
    if not isinstance(url, str):
        raise BadRequestError(f"url must be a 'host:port' string, got {url!r}")
    text = url.strip()
    if text.startswith("grpc://"):
        text = text[len("grpc://") :]
    if text.startswith(("http://", "https://")):
        raise BadRequestError(
            f"url {url!r} looks like an HTTP address; this client speaks gRPC: give host:port of Triton's "
            "gRPC endpoint (8001 by default), without a scheme"
        )
    match = _HOST_PORT.match(text.rstrip("/"))
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise BadRequestError(f"url must be host:port (Triton's gRPC port is 8001 by default), got {url!r}")
    return text.rstrip("/")


@dataclass(frozen=True)
class ClientOptions:
    """Validated options of :class:`MagnetClient` and :class:`AsyncMagnetClient` (see their docstrings)."""

    url: str
    timeout_s: float | None
    retry: RetryPolicy
    ssl: bool = False
    root_certificates_path: str | None = None
    private_key_path: str | None = None
    certificate_chain_path: str | None = None
    cuda_device_id: int = 0
    collect_server_timings: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)
    deadline_s: float | None = None
    model: str = io_spec.ENSEMBLE_MODEL
    model_version: int | None = None
    priority: int = 0
    server_timeout_s: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", normalize_url(self.url))
        try:
            self.names  # noqa: B018 -- an entry point that is not one of ours fails here
        except MagnetError as e:
            raise BadRequestError(str(e)) from None
        for name, value in (("model_version", self.model_version), ("priority", self.priority)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise BadRequestError(f"{name} must be a whole number >= 0, got {value!r}")
        for name in ("timeout_s", "deadline_s", "server_timeout_s"):
            t = getattr(self, name)
            if t is not None and (
                isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0
            ):
                raise BadRequestError(
                    f"{name} must be a number of seconds > 0 (or None: no limit), got {t!r}"
                )
        if (
            isinstance(self.cuda_device_id, bool)
            or not isinstance(self.cuda_device_id, int)
            or self.cuda_device_id < 0
        ):
            raise BadRequestError(f"cuda_device_id must be a GPU index >= 0, got {self.cuda_device_id!r}")
        object.__setattr__(self, "headers", dict(self.headers or {}))

    def channel_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``tritonclient.grpc[.aio].InferenceServerClient`` (after the url)."""
        # Passing channel_args replaces tritonclient's own channel options, so its defaults (message
        # size limits and keepalive) are repeated here next to the reconnect backoff.
        channel_args = [
            ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 2**31 - 1),
            ("grpc.keepalive_timeout_ms", 20000),
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.http2.max_pings_without_data", 2),
            *self.retry.channel_args(),
        ]
        return {
            "ssl": self.ssl,
            "root_certificates": self.root_certificates_path,
            "private_key": self.private_key_path,
            "certificate_chain": self.certificate_chain_path,
            "channel_args": channel_args,
        }

    @property
    def names(self) -> io_spec.ModelNames:
        """The served names of the preset behind :attr:`model` (its prefix, if any)."""
        return io_spec.ModelNames.of_entry_point(self.model)

    def call_kwargs(self) -> dict[str, Any]:
        """Per-call keyword arguments of every tritonclient call."""
        return {"headers": self.headers or None, "client_timeout": self.timeout_s}

    def request_kwargs(self) -> dict[str, Any]:
        """What a segmentation request carries besides its tensors: the version asked for, the
        priority (Triton's scheduler: 1 is the highest, 0 the model's default) and the server-side
        timeout (microseconds; past it a queued request is answered UNAVAILABLE instead of run)."""
        kwargs: dict[str, Any] = {}
        if self.model_version:
            kwargs["model_version"] = str(self.model_version)
        if self.priority:
            kwargs["priority"] = self.priority
        if self.server_timeout_s is not None:
            kwargs["timeout"] = max(1, math.ceil(self.server_timeout_s * 1e6))
        return kwargs

    def infer_kwargs(self, outputs: Sequence[str] | None = None) -> dict[str, Any]:
        """Keyword arguments of a segmentation call: :meth:`call_kwargs`, and the request's parameters:
        ``deadline_ms``, from ``deadline_s`` (past it the pipeline answers with the map refined so far),
        else the timeout, so an abandoned request stops refining even behind the ensemble (Triton 24.10
        does not pass a cancelled ensemble request on to its steps); and ``outputs`` (the names in
        ``outputs``, None: every one), since the ensemble asks the pipeline for every map it maps."""
        kwargs = {**self.call_kwargs(), **self.request_kwargs()}
        parameters: dict[str, Any] = {}
        budgets = [t for t in (self.deadline_s, self.timeout_s) if t is not None]
        if budgets:
            parameters[DEADLINE_PARAMETER] = max(1, math.ceil(min(budgets) * 1000))
        if outputs is not None:
            parameters[OUTPUTS_PARAMETER] = ",".join(outputs)
        if parameters:
            kwargs["parameters"] = parameters
        return kwargs


def make_options(url: str, **kwargs: Any) -> ClientOptions:
    """:class:`ClientOptions` from the clients' keyword arguments."""
    retry = RetryPolicy(
        retries=kwargs.pop("retries"),
        backoff_s=kwargs.pop("retry_backoff_s"),
        max_backoff_s=kwargs.pop("retry_max_backoff_s"),
    )
    return ClientOptions(url=url, retry=retry, **kwargs)


@dataclass(frozen=True)
class SegmentOptions:
    """The per-call options of ``segment``, checked once (also for a whole ``segment_many``)."""

    overrides: tuple[Tensor, ...]
    transport: Transport
    outputs: tuple[str, ...] | None = None


def segment_options(
    *,
    via_shared_memory: bool = False,
    via_cuda_shared_memory: bool = False,
    outputs: Sequence[str] | None = None,
    **overrides: Any,
) -> SegmentOptions:
    """Check ``segment``'s keyword arguments (see :meth:`MagnetClient.segment`).

    ``overrides`` are the per-request options by name (``mode=...``; None keeps the server's preset);
    an unknown name is a :class:`BadRequestError` that lists the known ones.
    """
    if via_shared_memory and via_cuda_shared_memory:
        raise BadRequestError("choose one of via_shared_memory and via_cuda_shared_memory, not both")
    if via_cuda_shared_memory:
        transport = Transport.CUDA_SHM
    elif via_shared_memory:
        transport = Transport.SYSTEM_SHM
    else:
        transport = Transport.GRPC
    return SegmentOptions(override_tensors(overrides), transport, check_outputs(outputs))


def options_doc(indent: str = "            ") -> str:
    """The per-request options as docstring lines, one per row of the option table."""
    from magnet_triton import request_options

    return "\n".join(f"{indent}``{o.name}``: {o.help}." for o in request_options.REQUEST_OPTIONS)


def prepare_request(image: ImageInput, options: SegmentOptions, names: io_spec.ModelNames) -> Request:
    """Validate ``image`` and build its request to the preset of ``names`` (see
    :func:`magnet_triton.client.request.prepare`)."""
    return prepare(image, options.overrides, options.transport, options.outputs, names)


def make_region(request: Request, options: ClientOptions) -> Region | None:
    """The shared-memory region that carries ``request``'s image, or None to send it inline."""
    if request.transport is Transport.SYSTEM_SHM:
        return SystemRegion(request.image.array)
    if request.transport is Transport.CUDA_SHM:
        return CudaRegion(request.image.array, options.cuda_device_id)
    return None


def infer_inputs(grpc_module: Any, request: Request, region: Region | None) -> list[Any]:
    """``InferInput`` objects for ``request``; the image points at ``region`` when there is one."""
    inputs = []
    for tensor in request.tensors:
        infer_input = grpc_module.InferInput(tensor.name, list(tensor.array.shape), tensor.datatype)
        if region is not None and tensor is request.image:
            infer_input.set_shared_memory(region.name, region.byte_size)
        else:
            infer_input.set_data_from_numpy(tensor.array)
        inputs.append(infer_input)
    return inputs


def requested_outputs(grpc_module: Any, request: Request) -> list[Any] | None:
    """``InferRequestedOutput`` objects for ``request``'s outputs; None asks for every one."""
    if request.outputs is None:
        return None
    return [grpc_module.InferRequestedOutput(name) for name in request.outputs]


def refuses_outputs_parameter(error: BaseException) -> bool:
    """Whether a server answered that it does not know the ``outputs`` request parameter: a repository
    exported before it existed. The clients then send that server's requests without it (it computes
    every map, as it always did) instead of failing every call that asks for fewer outputs."""
    message = getattr(error, "message", lambda: str(error))()
    return f"unknown request parameter '{OUTPUTS_PARAMETER}'" in (message or "")


def registration_failed(error: BaseException, region: Region, url: str) -> MagnetClientError | None:
    """A :class:`SharedMemoryError` for a server that refused ``region``; None for errors the retry
    loop handles itself (the server was unreachable or slow)."""
    if status_name(error) in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
        return None
    detail = getattr(error, "message", lambda: str(error))()
    where = "share /dev/shm with it (docker run --ipc=host)" if region.kind == "system" else "see this GPU"
    return SharedMemoryError(
        f"the server at {url} could not map the {region.kind} shared-memory region ({detail}); shared memory "
        f"needs the server on this machine, able to {where}; otherwise send without shared memory"
    )


def image_shape(request: Request) -> tuple[int, int] | None:
    """(H0, W0) when the pixels are known here (raw arrays), else None."""
    if request.image.name != io_spec.IMAGE:
        return None
    return (int(request.image.array.shape[0]), int(request.image.array.shape[1]))


def num_classes_from_config(config: Mapping[str, Any]) -> int:
    """The class count C from the backbone's ``get_model_config(as_json=True)`` answer."""
    config = config.get("config", config)
    for output in config.get("output", []):
        if output.get("name") == io_spec.PROBABILITIES:
            dims = [int(d) for d in output.get("dims", [])]
            # Batched models list dims without the batch axis: C x ih x iw.
            channel_axis = 0 if int(config.get("max_batch_size", 0)) > 0 else 1
            if len(dims) > channel_axis:
                return dims[channel_axis]
    raise ServerError(
        f"the {io_spec.BACKBONE_MODEL} config has no {io_spec.PROBABILITIES} output; "
        "is the server serving a MagNet repository?"
    )


def check_concurrency(max_concurrency: int) -> int:
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
        raise BadRequestError(f"max_concurrency must be a whole number >= 1, got {max_concurrency!r}")
    return max_concurrency


def log_retry(what: str, error: MagnetClientError, attempt: int, policy: RetryPolicy, delay_s: float) -> None:
    log.warning(
        "%s failed (attempt %d of %d, %s); retrying in %.2f s",
        what,
        attempt,
        policy.max_attempts,
        error.status or type(error).__name__,
        delay_s,
    )
