"""``MagnetClient``: segment images with a MagNet model repository served by Triton, over gRPC."""

from __future__ import annotations

import logging
import os
import queue
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, TypeVar

from magnet_triton import io_spec
from magnet_triton.client import deps
from magnet_triton.client.base import (
    DEFAULT_URL,
    ClientOptions,
    SegmentOptions,
    check_concurrency,
    image_shape,
    infer_inputs,
    log_retry,
    make_options,
    make_region,
    num_classes_from_config,
    options_doc,
    prepare_request,
    refuses_outputs_parameter,
    registration_failed,
    requested_outputs,
    segment_options,
)
from magnet_triton.client.errors import MagnetClientError, RequestTimeoutError, from_triton, stream_error
from magnet_triton.client.limits import ServedLimits, limits_from_config
from magnet_triton.client.request import ImageInput, Request, prepare_progressive
from magnet_triton.client.result import (
    STATISTICS_RETRY_DELAYS_S,
    SegmentResult,
    has_outputs,
    index_from_statistics,
    is_final,
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

#: ``progress(done, total)``, called after each image of :meth:`MagnetClient.segment_many`.
ProgressCallback = Callable[[int, int], None]


class MagnetClient:
    """A gRPC client of the ``magnet`` ensemble and the ``magnet_pipeline`` model; a context manager.

    One client holds one gRPC channel and is safe to share between threads.

    Args:
        url: ``host:port`` of Triton's gRPC endpoint.
        timeout_s: seconds one attempt of a call may take (None: no limit); past it the call raises
            :class:`RequestTimeoutError` and is not retried.
        retries: attempts after the first while the server is unreachable (gRPC UNAVAILABLE).
            A bad request (INVALID_ARGUMENT) is never retried.
        retry_backoff_s: wait before the first retry; each later wait doubles, up to ``retry_max_backoff_s``.
        ssl, root_certificates_path, private_key_path, certificate_chain_path: TLS for the channel.
        cuda_device_id: GPU of the CUDA shared-memory regions (``via_cuda_shared_memory=True``).
        collect_server_timings: read Triton's statistics before and after each request to fill
            :attr:`SegmentResult.server_timings` (two more small calls per request).
        headers: extra gRPC metadata sent with every call (e.g. an auth token).
        deadline_s: the pipeline's budget per image, from when it starts the image: past it the
            refinement stops and the map refined so far comes back (:attr:`SegmentResult.scales_done`
            says how far it got). None: ``timeout_s``, so a request this client gave up on stops.
        model: the served entry point: ``magnet`` (the ensemble), or ``<prefix>_magnet`` where one
            repository serves several presets. Files and bytes go to it, arrays and shared memory to
            its pipeline (``<prefix>_magnet_pipeline``), progressive streams to its progressive twin.
        model_version: the version of that model to call (None: the server's choice).
        priority: Triton's request priority (1 is the highest; 0: the model's default).
        server_timeout_s: how long the request may wait in the server's queue before it is answered
            UNAVAILABLE instead of run (a model whose export allows it; only ever shortens the
            model's own queue timeout).

    Raises:
        BadRequestError: an option is invalid.
        DependencyMissingError: tritonclient[grpc] is not installed.
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
        self._grpc = deps.grpc()
        self._triton_error = deps.inference_server_exception()
        self._client = self._grpc.InferenceServerClient(self.options.url, **self.options.channel_kwargs())
        #: Whether to name the outputs in a request parameter; False once the server refused it.
        self._name_outputs = True
        self._limits: ServedLimits | None = None

    @classmethod
    def from_options(cls, options: ClientOptions) -> MagnetClient:
        """A client with the options of another (:attr:`options`): the asyncio client's raster runs
        use one in their worker thread."""
        return cls(
            options.url,
            timeout_s=options.timeout_s,
            retries=options.retry.retries,
            retry_backoff_s=options.retry.backoff_s,
            retry_max_backoff_s=options.retry.max_backoff_s,
            ssl=options.ssl,
            root_certificates_path=options.root_certificates_path,
            private_key_path=options.private_key_path,
            certificate_chain_path=options.certificate_chain_path,
            cuda_device_id=options.cuda_device_id,
            collect_server_timings=options.collect_server_timings,
            headers=options.headers,
            deadline_s=options.deadline_s,
            model=options.model,
            model_version=options.model_version,
            priority=options.priority,
            server_timeout_s=options.server_timeout_s,
        )

    @property
    def url(self) -> str:
        return self.options.url

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the gRPC channel; safe to call twice."""
        self._client.close()

    def __enter__(self) -> MagnetClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MagnetClient({self.url!r})"

    # -- calls -------------------------------------------------------------------------------------
    def segment(
        self,
        image: ImageInput,
        *,
        via_shared_memory: bool = False,
        via_cuda_shared_memory: bool = False,
        outputs: Sequence[str] | None = None,
        **overrides: Any,
    ) -> SegmentResult:
        """Segment one image.

        Args:
            image: a file path (str or Path) or the encoded bytes of a PNG/JPEG/..., sent as they are to
                the ``magnet`` ensemble, which decodes them; or an H x W x 3 uint8 RGB numpy array, sent
                raw to ``magnet_pipeline``.
            via_shared_memory: send the pixels through a system shared-memory region instead of the gRPC
                message (the server must run on this machine). Files and bytes are decoded here first.
            via_cuda_shared_memory: the same through a CUDA region on GPU ``cuda_device_id``; needs
                cuda-python and a GPU.
            outputs: the maps to ask for beside the class map: ``"coarse"``, ``"confidence"``
                (None: both). The server skips the full-resolution passes of those left out; they
                are None in the result.
            overrides: per-request options of the served preset, by name; None or absent keeps the
                preset's value:
                {options}

        Returns:
            a :class:`SegmentResult` with H0 x W0 maps.

        Raises:
            BadRequestError: the image or an override is wrong (checked before sending, or by the server).
            ConnectionFailedError: the server stayed unreachable through every retry.
            RequestTimeoutError: an attempt took longer than ``timeout_s``.
            ServerError: the server failed otherwise.
            SharedMemoryError, DependencyMissingError: shared memory could not be used.
        """
        options = segment_options(
            via_shared_memory=via_shared_memory,
            via_cuda_shared_memory=via_cuda_shared_memory,
            outputs=outputs,
            **overrides,
        )
        return self._segment(image, options)

    # The option list comes from the option table, so adding an option documents it here too.
    segment.__doc__ = (segment.__doc__ or "").replace("{options}", options_doc("                ").lstrip())

    def segment_progressive(self, image: ImageInput, **overrides: Any) -> Iterator[SegmentResult]:
        """Segment one image progressively: yield the class map after the coarse pass, after each refined
        scale, and last the final answer (:attr:`SegmentResult.scales_done` says which), over one gRPC
        stream to ``magnet_pipeline_progressive`` (a repository exported with ``--progressive``).

        Files and bytes are decoded here. Stopping the iteration early (``break``, closing the
        generator) cancels the request, and the server stops refining before its next scale. Streams are
        not retried; ``timeout_s`` bounds the wait for each stage; ``deadline_s`` is sent as for
        :meth:`segment`.

        Raises:
            the errors of :meth:`segment`.
        """
        request = prepare_progressive(image, segment_options(**overrides).overrides, self.options.names)
        answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
        # A stream of its own: a tritonclient client carries one stream at a time.
        stream = self._grpc.InferenceServerClient(self.options.url, **self.options.channel_kwargs())
        call = self.options.infer_kwargs()
        finished = False
        try:
            stream.start_stream(
                callback=lambda result, error: answers.put((result, error)), headers=call["headers"]
            )
            stream.async_stream_infer(
                request.model_name,
                infer_inputs(self._grpc, request, None),
                outputs=requested_outputs(self._grpc, request),
                parameters=call.get("parameters"),
                enable_empty_final_response=True,
                **self.options.request_kwargs(),
            )
            started = time.perf_counter()
            while not finished:
                try:
                    result, error = answers.get(timeout=self.options.timeout_s)
                except queue.Empty:
                    raise RequestTimeoutError(
                        f"{request.model_name} at {self.url} sent no stage within {self.options.timeout_s} s",
                        status="DEADLINE_EXCEEDED",
                        attempts=1,
                    ) from None
                if error is not None:
                    error = stream_error(error)
                    raise from_triton(
                        error, url=self.url, model_name=request.model_name, attempts=1
                    ) from error
                finished = is_final(result)
                if has_outputs(result):
                    yield parse_response(
                        result,
                        model_name=request.model_name,
                        image_shape=image_shape(request),
                        latency_s=time.perf_counter() - started,
                        attempts=1,
                        server_timings={},
                        requested=request.outputs,
                    )
        except self._triton_error as e:
            raise from_triton(e, url=self.url, model_name=request.model_name, attempts=1) from e
        finally:
            # Closed early (the caller stopped iterating, or an error): cancel what the server still does.
            stream.stop_stream(cancel_requests=not finished)
            stream.close()

    def segment_many(
        self,
        images: Sequence[ImageInput],
        *,
        max_concurrency: int = 4,
        progress: ProgressCallback | None = None,
        return_exceptions: bool = False,
        **segment_kwargs: Any,
    ) -> list[SegmentResult | MagnetClientError]:
        """Segment many images with up to ``max_concurrency`` requests in flight; results in input order.

        ``segment_kwargs`` are :meth:`segment`'s keyword arguments, the same for every image.
        With ``return_exceptions`` a failed image's :class:`MagnetClientError` takes its place in the
        list; without, the first failure cancels what has not started and is raised.
        """
        images = list(images)
        results: list[Any] = [None] * len(images)
        for done, (index, outcome) in enumerate(
            self.segment_iter(
                images,
                max_concurrency=max_concurrency,
                return_exceptions=return_exceptions,
                **segment_kwargs,
            ),
            start=1,
        ):
            results[index] = outcome
            if progress is not None:
                progress(done, len(images))
        return results

    def segment_iter(
        self,
        images: Iterable[ImageInput],
        *,
        max_concurrency: int = 4,
        return_exceptions: bool = False,
        **segment_kwargs: Any,
    ) -> Iterator[tuple[int, SegmentResult | MagnetClientError]]:
        """Like :meth:`segment_many`, but yields ``(index, result)`` as each image finishes.

        At most ``max_concurrency`` images are read and in flight at once, so memory stays bounded
        however many images there are. Closing the iterator early cancels the images not yet started.
        """
        check_concurrency(max_concurrency)
        options = segment_options(**segment_kwargs)
        pending: dict[Future[SegmentResult], int] = {}
        work = enumerate(images)
        pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="magnet-client")
        try:
            while True:
                while len(pending) < max_concurrency:
                    item = next(work, None)
                    if item is None:
                        break
                    pending[pool.submit(self._segment, item[1], options)] = item[0]
                if not pending:
                    return
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(finished, key=pending.__getitem__):
                    index = pending.pop(future)
                    try:
                        outcome: SegmentResult | MagnetClientError = future.result()
                    except MagnetClientError as error:
                        if not return_exceptions:
                            raise
                        outcome = error
                    yield index, outcome
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def health(self) -> dict[str, Any]:
        """Liveness, readiness, version and every model's state, as a dict.

        ``{"url", "live", "ready", "server": {"name", "version"}, "models": {name: {"ready": bool,
        "versions": {version: state}, "reason": str}}}``.

        Raises:
            ConnectionFailedError: the server stayed unreachable through every retry.
        """

        def once(attempt: int) -> dict[str, Any]:
            kwargs = self.options.call_kwargs()
            try:
                index = self._client.get_model_repository_index(as_json=True, **kwargs)
            except self._triton_error as e:
                if not is_restricted(e):
                    raise
                index = index_from_statistics(self._client.get_inference_statistics(as_json=True, **kwargs))
            return summarize_health(
                url=self.url,
                live=self._client.is_server_live(**kwargs),
                ready=self._client.is_server_ready(**kwargs),
                metadata=self._client.get_server_metadata(as_json=True, **kwargs),
                index=index,
            )

        return self._with_retries("health check", "server", once)

    def num_classes(self) -> int:
        """The number of classes the served model predicts (read from the backbone's config)."""

        def once(attempt: int) -> int:
            config = self._client.get_model_config(
                self.options.names.backbone, as_json=True, **self.options.call_kwargs()
            )
            return num_classes_from_config(config)

        return self._with_retries("reading the model config", self.options.names.backbone, once)

    def served_limits(self) -> ServedLimits:
        """What the served pipeline admits: its pixel limit and its preset's patch size (read from its
        config once, then kept: a repository's limit changes only with a new export)."""
        if self._limits is None:

            def once(attempt: int) -> ServedLimits:
                config = self._client.get_model_config(
                    self.options.names.pipeline, as_json=True, **self.options.call_kwargs()
                )
                return limits_from_config(config)

            self._limits = self._with_retries("reading the model config", self.options.names.pipeline, once)
            if not self._limits.stated:
                log.warning(
                    "%s states no pixel limit; assuming the pipeline's default of %d",
                    self.options.names.pipeline,
                    self._limits.max_image_pixels,
                )
        return self._limits

    def segment_raster(self, path: str | os.PathLike, out: str | os.PathLike, **kwargs: Any) -> RasterResult:
        """Segment a raster (GeoTIFF, COG, ... read with rasterio, the ``raster`` extra) of any size,
        window by window, and write its maps into the folder ``out``: a palette PNG, a GeoTIFF with the
        input's CRS and transform when it has them, and on request the coarse map and the confidence.

        A raster over the server's pixel limit (:meth:`served_limits`) is cut into overlapping windows,
        read one at a time, and stitched at the centre lines of the overlaps; memory stays bounded by
        the windows in flight. The keyword arguments (``bands``, ``scaling``, ``outputs``, ``overlap``,
        ``window_size``, ``progress``, the per-request overrides, ...) are those of
        :func:`magnet_triton.client.raster_run.segment_raster`.

        Raises:
            MagnetError: the raster cannot be used as asked; the message says what to pass (a
                4-band file without ``bands``, 16-bit samples with ``scaling="none"``, no rasterio).
            the errors of :meth:`segment`.
        """
        from magnet_triton.client.raster_run import segment_raster

        return segment_raster(self, path, out, **kwargs)

    # -- internals ---------------------------------------------------------------------------------
    def _segment(self, image: ImageInput, options: SegmentOptions) -> SegmentResult:
        request = prepare_request(image, options, self.options.names)
        return self._with_retries(
            f"segment {request.source}", request.model_name, lambda attempt: self._send(request, attempt)
        )

    def _with_retries(self, what: str, model_name: str, call: Callable[[int], T]) -> T:
        """``call(attempt)`` until it succeeds, fails for good, or runs out of retries.

        tritonclient's exceptions become :class:`MagnetClientError` here, the one boundary.
        """
        policy = self.options.retry
        for attempt in range(1, policy.max_attempts + 1):
            try:
                return call(attempt)
            except self._triton_error as e:
                error = from_triton(e, url=self.url, model_name=model_name, attempts=attempt)
                if not policy.should_retry(error, attempt):
                    raise error from e
            delay_s = policy.delay_s(attempt - 1)
            log_retry(what, error, attempt, policy, delay_s)
            time.sleep(delay_s)
        raise AssertionError("unreachable: the last attempt raises")

    def _send(self, request: Request, attempt: int) -> SegmentResult:
        region = make_region(request, self.options)
        try:
            if region is not None:
                try:
                    region.register(self._client, self.options.timeout_s, self.options.headers or None)
                except self._triton_error as e:
                    refused = registration_failed(e, region, self.url)
                    if refused is None:
                        raise
                    raise refused from e
            try:
                before = self._statistics()
                inputs = infer_inputs(self._grpc, request, region)
                wanted = requested_outputs(self._grpc, request)
                started = time.perf_counter()
                try:
                    response = self._client.infer(
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
                    response = self._client.infer(
                        request.model_name, inputs, outputs=wanted, **self._call_kwargs(request)
                    )
                latency_s = time.perf_counter() - started
                timings = self._timings(before, request.model_name) if before is not None else {}
            finally:
                if region is not None:
                    self._unregister(region)
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

    def _timings(self, before: dict[str, Any], model_name: str) -> dict[str, dict[str, float]]:
        timings = statistics_delta(before, self._statistics() or {})
        for delay_s in STATISTICS_RETRY_DELAYS_S:
            if timings_complete(timings, model_name):
                break
            time.sleep(delay_s)
            timings = statistics_delta(before, self._statistics() or {})
        return timings

    def _statistics(self) -> dict[str, Any] | None:
        if not self.options.collect_server_timings:
            return None
        return self._client.get_inference_statistics(as_json=True, **self.options.call_kwargs())

    def _unregister(self, region: Region) -> None:
        for delay_s in (*UNREGISTER_RETRY_DELAYS_S, None):
            try:
                region.unregister(self._client, self.options.timeout_s, self.options.headers or None)
                return
            except self._triton_error as e:  # the request's own outcome matters more than the clean-up
                if delay_s is None or not still_in_use(e):
                    log.warning("could not unregister shared-memory region %s: %s", region.name, e)
                    return
            time.sleep(delay_s)
