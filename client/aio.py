"""``AsyncMagnetClient``: :class:`MagnetClient`'s API for asyncio programs, on ``tritonclient.grpc.aio``."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from magnet_triton import io_spec
from magnet_triton.client import deps
from magnet_triton.client.base import (
    DEFAULT_URL,
    SegmentOptions,
    check_concurrency,
    image_shape,
    infer_inputs,
    log_retry,
    make_options,
    make_region,
    num_classes_from_config,
    prepare_request,
    refuses_outputs_parameter,
    registration_failed,
    requested_outputs,
    segment_options,
)
from magnet_triton.client.core import ProgressCallback
from magnet_triton.client.errors import MagnetClientError, from_triton
from magnet_triton.client.request import ImageInput, Request
from magnet_triton.client.result import (
    STATISTICS_RETRY_DELAYS_S,
    SegmentResult,
    index_from_statistics,
    is_restricted,
    parse_response,
    statistics_delta,
    summarize_health,
    timings_complete,
)
from magnet_triton.client.shm import UNREGISTER_RETRY_DELAYS_S, Region, still_in_use

if TYPE_CHECKING:
    from magnet_triton.client.raster_run import RasterResult

log = logging.getLogger(__name__)
T = TypeVar("T")


class _RasterRunCancelled(Exception):
    """Raised in a raster run's worker thread once its awaiting call was cancelled."""


class AsyncMagnetClient:
    """The asyncio twin of :class:`MagnetClient`: same arguments, same errors, awaitable calls.

    Use it as ``async with AsyncMagnetClient(url) as client: result = await client.segment(path)``.
    The gRPC channel is opened on the first call, inside the running event loop, and belongs to that
    loop: make one client per loop.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        timeout_s: float | None = 300.0,
        retries: int = 3,
        retry_backoff_s: float = 0.5,
        retry_max_backoff_s: float = 10.0,
        ssl: bool = False,
        root_certificates_path: str | None = None,
        private_key_path: str | None = None,
        certificate_chain_path: str | None = None,
        cuda_device_id: int = 0,
        collect_server_timings: bool = False,
        headers: Mapping[str, str] | None = None,
        deadline_s: float | None = None,
        model: str = io_spec.ENSEMBLE_MODEL,
        model_version: int | None = None,
        priority: int = 0,
        server_timeout_s: float | None = None,
    ) -> None:
        self.options = make_options(
            url,
            timeout_s=timeout_s,
            retries=retries,
            retry_backoff_s=retry_backoff_s,
            retry_max_backoff_s=retry_max_backoff_s,
            ssl=ssl,
            root_certificates_path=root_certificates_path,
            private_key_path=private_key_path,
            certificate_chain_path=certificate_chain_path,
            cuda_device_id=cuda_device_id,
            collect_server_timings=collect_server_timings,
            headers=headers or {},
            deadline_s=deadline_s,
            model=model,
            model_version=model_version,
            priority=priority,
            server_timeout_s=server_timeout_s,
        )
        # Imported now so a missing tritonclient shows at construction, as with the sync client.
        self._aio = deps.grpc_aio()
        self._grpc = deps.grpc()
        self._triton_error = deps.inference_server_exception()
        self._client: Any = None
        #: Whether to name the outputs in a request parameter; False once the server refused it.
        self._name_outputs = True

    @property
    def url(self) -> str:
        return self.options.url

    def _channel(self) -> Any:
        if self._client is None:
            self._client = self._aio.InferenceServerClient(self.options.url, **self.options.channel_kwargs())
        return self._client

    # -- lifecycle ---------------------------------------------------------------------------------
    async def close(self) -> None:
        """Close the gRPC channel; safe to call twice."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def __aenter__(self) -> AsyncMagnetClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncMagnetClient({self.url!r})"

    # -- calls -------------------------------------------------------------------------------------
    async def segment(
        self,
        image: ImageInput,
        *,
        via_shared_memory: bool = False,
        via_cuda_shared_memory: bool = False,
        outputs: Sequence[str] | None = None,
        **overrides: Any,
    ) -> SegmentResult:
        """Segment one image; see :meth:`MagnetClient.segment` for the arguments and errors."""
        options = segment_options(
            via_shared_memory=via_shared_memory,
            via_cuda_shared_memory=via_cuda_shared_memory,
            outputs=outputs,
            **overrides,
        )
        return await self._segment(image, options)

    async def segment_many(
        self,
        images: Iterable[ImageInput],
        *,
        max_concurrency: int = 4,
        progress: ProgressCallback | None = None,
        return_exceptions: bool = False,
        **segment_kwargs: Any,
    ) -> list[SegmentResult | MagnetClientError]:
        """Segment many images, at most ``max_concurrency`` at a time; results in input order.

        See :meth:`MagnetClient.segment_many`. Without ``return_exceptions`` the first failure cancels
        the other images and is raised.
        """
        check_concurrency(max_concurrency)
        options = segment_options(**segment_kwargs)
        images = list(images)
        gate = asyncio.Semaphore(max_concurrency)
        done = 0

        async def one(image: ImageInput) -> SegmentResult | MagnetClientError:
            nonlocal done
            async with gate:
                try:
                    result: SegmentResult | MagnetClientError = await self._segment(image, options)
                except MagnetClientError as error:
                    if not return_exceptions:
                        raise
                    result = error
            done += 1
            if progress is not None:
                progress(done, len(images))
            return result

        tasks = [asyncio.ensure_future(one(image)) for image in images]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def segment_raster(
        self, path: str | os.PathLike, out: str | os.PathLike, **kwargs: Any
    ) -> RasterResult:
        """:meth:`MagnetClient.segment_raster`, awaited (same arguments and errors).

        GDAL's reads and writes block, so the run goes on in a worker thread, with a synchronous client
        of the same server and options; ``progress`` is called in that thread. Cancelling this call
        stops the run when its next window comes back (none is sent after it) and discards its maps
        unless every window was already in.
        """
        from magnet_triton.client.core import MagnetClient

        stop = threading.Event()
        progress = kwargs.pop("progress", None)

        def checked(done: int, total: int) -> None:
            if stop.is_set():
                raise _RasterRunCancelled
            if progress is not None:
                progress(done, total)

        def run() -> RasterResult | None:
            with MagnetClient.from_options(self.options) as client:
                try:
                    return client.segment_raster(path, out, progress=checked, **kwargs)
                except _RasterRunCancelled:
                    return None

        try:
            result = await asyncio.to_thread(run)
        except asyncio.CancelledError:
            stop.set()
            raise
        assert result is not None  # only a cancelled run returns None, and then this is not reached
        return result

    async def health(self) -> dict[str, Any]:
        """See :meth:`MagnetClient.health`."""

        async def once(attempt: int) -> dict[str, Any]:
            client, kwargs = self._channel(), self.options.call_kwargs()
            try:
                index = await client.get_model_repository_index(as_json=True, **kwargs)
            except self._triton_error as e:
                if not is_restricted(e):
                    raise
                index = index_from_statistics(await client.get_inference_statistics(as_json=True, **kwargs))
            return summarize_health(
                url=self.url,
                live=await client.is_server_live(**kwargs),
                ready=await client.is_server_ready(**kwargs),
                metadata=await client.get_server_metadata(as_json=True, **kwargs),
                index=index,
            )

        return await self._with_retries("health check", "server", once)

    async def num_classes(self) -> int:
        """See :meth:`MagnetClient.num_classes`."""

        async def once(attempt: int) -> int:
            config = await self._channel().get_model_config(
                self.options.names.backbone, as_json=True, **self.options.call_kwargs()
            )
            return num_classes_from_config(config)

        return await self._with_retries("reading the model config", self.options.names.backbone, once)

    # -- internals ---------------------------------------------------------------------------------
    async def _segment(self, image: ImageInput, options: SegmentOptions) -> SegmentResult:
        if isinstance(image, np.ndarray):
            request = prepare_request(image, options, self.options.names)
        else:  # reading (and for shared memory, decoding) a file would stall the event loop
            request = await asyncio.to_thread(prepare_request, image, options, self.options.names)
        return await self._with_retries(
            f"segment {request.source}", request.model_name, lambda attempt: self._send(request, attempt)
        )

    async def _with_retries(self, what: str, model_name: str, call: Callable[[int], Awaitable[T]]) -> T:
        """See :meth:`MagnetClient._with_retries`."""
        policy = self.options.retry
        for attempt in range(1, policy.max_attempts + 1):
            try:
                return await call(attempt)
            except self._triton_error as e:
                error = from_triton(e, url=self.url, model_name=model_name, attempts=attempt)
                if not policy.should_retry(error, attempt):
                    raise error from e
            delay_s = policy.delay_s(attempt - 1)
            log_retry(what, error, attempt, policy, delay_s)
            await asyncio.sleep(delay_s)
        raise AssertionError("unreachable: the last attempt raises")

    async def _send(self, request: Request, attempt: int) -> SegmentResult:
        client = self._channel()
        region = make_region(request, self.options)
        try:
            if region is not None:
                try:
                    await region.register(client, self.options.timeout_s, self.options.headers or None)
                except self._triton_error as e:
                    refused = registration_failed(e, region, self.url)
                    if refused is None:
                        raise
                    raise refused from e
            try:
                before = await self._statistics()
                inputs = infer_inputs(self._grpc, request, region)
                wanted = requested_outputs(self._grpc, request)
                started = time.perf_counter()
                try:
                    response = await client.infer(
                        request.model_name, inputs, outputs=wanted, **self._call_kwargs(request)
                    )
                except self._triton_error as e:
                    if not (self._name_outputs and refuses_outputs_parameter(e)):
                        raise
                    self._name_outputs = False
                    log.info(
                        "%s does not take the outputs parameter (an older export); not sending it", self.url
                    )
                    started = time.perf_counter()
                    response = await client.infer(
                        request.model_name, inputs, outputs=wanted, **self._call_kwargs(request)
                    )
                latency_s = time.perf_counter() - started
                timings = await self._timings(before, request.model_name) if before is not None else {}
            finally:
                if region is not None:
                    await self._unregister(region)
        finally:
            if region is not None:
                region.destroy()
        return parse_response(
            response,
            model_name=request.model_name,
            image_shape=image_shape(request),
            latency_s=latency_s,
            attempts=attempt,
            server_timings=timings,
            requested=request.outputs,
        )

    def _call_kwargs(self, request: Request) -> dict[str, Any]:
        return self.options.infer_kwargs(request.outputs if self._name_outputs else None)

    async def _timings(self, before: dict[str, Any], model_name: str) -> dict[str, dict[str, float]]:
        timings = statistics_delta(before, await self._statistics() or {})
        for delay_s in STATISTICS_RETRY_DELAYS_S:
            if timings_complete(timings, model_name):
                break
            await asyncio.sleep(delay_s)
            timings = statistics_delta(before, await self._statistics() or {})
        return timings

    async def _statistics(self) -> dict[str, Any] | None:
        if not self.options.collect_server_timings:
            return None
        return await self._channel().get_inference_statistics(as_json=True, **self.options.call_kwargs())

    async def _unregister(self, region: Region) -> None:
        for delay_s in (*UNREGISTER_RETRY_DELAYS_S, None):
            try:
                await region.unregister(self._channel(), self.options.timeout_s, self.options.headers or None)
                return
            except self._triton_error as e:  # the request's own outcome matters more than the clean-up
                if delay_s is None or not still_in_use(e):
                    log.warning("could not unregister shared-memory region %s: %s", region.name, e)
                    return
            await asyncio.sleep(delay_s)
