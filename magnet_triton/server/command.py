"""``magnet-triton serve``: run ``tritonserver`` on a model repository in the foreground."""

from __future__ import annotations

import argparse
import signal
import threading
import time
from pathlib import Path

from magnet_triton.errors import MagnetError
from magnet_triton.server.process import (
    DEFAULT_PYTHON_SHM_BYTE_SIZE,
    DEFAULT_PYTHON_SHM_GROWTH_BYTE_SIZE,
    TritonServer,
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``magnet-triton serve``."""
    p = subparsers.add_parser(
        "serve",
        help="run tritonserver on a model repository in the foreground",
        description=(
            "Run tritonserver (the one on PATH, else the one bundled in nvidia-pytriton) on a model "
            "repository inside this Python environment, wait until every model is ready, print the "
            "endpoints, and serve until Ctrl-C or SIGTERM."
        ),
    )
    p.add_argument("--model-repository", type=Path, required=True, metavar="REPO")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--grpc-port", type=int, default=8001, help="0 picks a free port (default: %(default)s)")
    p.add_argument("--http-port", type=int, default=8000, help="0 picks a free port (default: %(default)s)")
    p.add_argument(
        "--metrics-port", type=int, default=8002, help="0 picks a free port (default: %(default)s)"
    )
    p.add_argument("--log-file", type=Path, help="write the server log here (default: a temporary file)")
    p.add_argument("--startup-timeout-s", type=float, default=120.0, help="default: %(default)s")
    p.add_argument(
        "--shm-default-byte-size",
        type=int,
        default=None,
        help="Python-backend shared memory per model instance (default: sized from the repository's "
        f"preset, at least {DEFAULT_PYTHON_SHM_BYTE_SIZE}); on a GPU repository the CUDA memory pool is "
        "sized from it too, unless a --triton-arg=--cuda-memory-pool-byte-size is given",
    )
    p.add_argument(
        "--shm-growth-byte-size",
        type=int,
        default=DEFAULT_PYTHON_SHM_GROWTH_BYTE_SIZE,
        help="default: %(default)s",
    )
    p.add_argument(
        "--triton-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra tritonserver argument, e.g. --triton-arg=--log-verbose=1 (repeatable)",
    )
    p.set_defaults(func=_serve)


def _memory_args(args: argparse.Namespace) -> tuple[int, list[str]]:
    """The shared-memory size and CUDA pool arguments: from the repository's preset unless given."""
    from magnet_triton.export.repository import read_manifest
    from magnet_triton.server.sizing import memory_settings

    given = " ".join(args.triton_arg)
    try:
        sized = memory_settings(read_manifest(args.model_repository))
    except MagnetError:  # not a repository of ours: Triton's defaults
        return args.shm_default_byte_size or DEFAULT_PYTHON_SHM_BYTE_SIZE, []
    pool = [] if "--cuda-memory-pool-byte-size" in given else sized.tritonserver_args()
    return args.shm_default_byte_size or sized.python_shm_default_byte_size, pool


def _serve(args: argparse.Namespace) -> int:
    shm_bytes, pool_args = _memory_args(args)
    server = TritonServer(
        args.model_repository,
        grpc_port=args.grpc_port or None,
        http_port=args.http_port or None,
        metrics_port=args.metrics_port or None,
        host=args.host,
        startup_timeout_s=args.startup_timeout_s,
        extra_args=[*pool_args, *args.triton_arg],
        log_path=args.log_file,
        python_shm_default_byte_size=shm_bytes,
        python_shm_growth_byte_size=args.shm_growth_byte_size,
    )
    # SIGINT and SIGTERM both raise KeyboardInterrupt here: while starting, TritonServer.start() then
    # stops the half-started server; while serving, we stop it in order. Setting SIGINT explicitly
    # also covers shells that start background jobs with SIGINT ignored.
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _interrupt) for sig in handled}
    try:
        server.start()
        try:  # from here on, a signal is a request to stop in order (it can come mid-print)
            print(f"gRPC     {server.grpc_url}")
            print(f"HTTP     {server.http_url}")
            print(f"metrics  {server.metrics_url}")
            print(f"log      {server.log_path}")
            print(f"models   {', '.join(server.ready_models()) or '(none)'}")
            print("serving; Ctrl-C or SIGTERM stops", flush=True)
            while server.is_running():
                time.sleep(0.5)
            raise MagnetError(
                f"tritonserver exited unexpectedly; last lines of its log:\n{server.log_tail()}"
            )
        except KeyboardInterrupt:
            pass
        # A second Ctrl-C must not cut the shutdown short and leave stubs and shared memory behind.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        print("stopping", flush=True)
        server.stop()
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
