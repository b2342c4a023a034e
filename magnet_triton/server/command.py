"""``magnet-triton serve``: run ``tritonserver`` on a model repository in the foreground."""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from pathlib import Path

from magnet_triton.errors import MagnetError
from magnet_triton.server.access import (
    ADMIN_KEY_ENV,
    DEFAULT_ADMIN_HEADER,
    RESTRICTED_APIS,
    AdminKey,
    GrpcTls,
)
from magnet_triton.server.allocator import CHOICES, SYSTEM, choose_allocator
from magnet_triton.server.process import (
    DEFAULT_PYTHON_SHM_BYTE_SIZE,
    DEFAULT_PYTHON_SHM_GROWTH_BYTE_SIZE,
    TritonServer,
)
from magnet_triton.server.supervisor import Supervisor


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``magnet-triton serve``."""
    p = subparsers.add_parser(
        "serve",
        help="run tritonserver on a model repository in the foreground",
        description=(
            "Run tritonserver (the one on PATH, else the one bundled in nvidia-pytriton) on a model "
            "repository inside this Python environment, wait until every model is ready, print the "
            "endpoints, and serve until Ctrl-C or SIGTERM. Closed by default: gRPC only (HTTP when "
            f"asked), Triton's {', '.join(RESTRICTED_APIS)} APIs behind an admin key, and supervised: "
            "a model whose instance dies or stops answering is reloaded, the server restarted if "
            "that fails."
        ),
    )
    p.add_argument("--model-repository", type=Path, required=True, metavar="REPO")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--grpc-port", type=int, default=8001, help="0 picks a free port (default: %(default)s)")
    p.add_argument(
        "--http",
        action="store_true",
        help="serve HTTP too. Off by default: Triton's HTTP endpoint allocates an input of whatever shape a "
        "request declares before reading its body (a 97-byte request can cost 12 GB); gRPC refuses it",
    )
    p.add_argument(
        "--http-port", type=int, default=8000, help="with --http; 0 picks a free port (default: %(default)s)"
    )
    p.add_argument(
        "--metrics-port", type=int, default=8002, help="0 picks a free port (default: %(default)s)"
    )
    access = p.add_argument_group("access")
    access.add_argument(
        "--admin-header",
        default=DEFAULT_ADMIN_HEADER,
        help=f"the header that carries the admin key (default: %(default)s). The key is read from "
        f"${ADMIN_KEY_ENV}; unset, a random one is made that only the supervisor knows",
    )
    access.add_argument(
        "--open-admin-apis",
        action="store_true",
        help=f"leave Triton's {', '.join(RESTRICTED_APIS)} APIs open to every client (not advised)",
    )
    access.add_argument(
        "--tls-cert", type=Path, metavar="PEM", help="serve gRPC over TLS with this certificate"
    )
    access.add_argument("--tls-key", type=Path, metavar="PEM", help="the certificate's private key")
    access.add_argument(
        "--tls-ca",
        type=Path,
        metavar="PEM",
        help="the CA that signed --tls-cert, for the launcher's own checks (default: the certificate)",
    )
    access.add_argument(
        "--tls-server-name", help="the name in the certificate, when it does not hold the bound address"
    )
    supervision = p.add_argument_group("supervision")
    supervision.add_argument(
        "--no-supervise", action="store_true", help="do not watch and repair the models (Triton alone)"
    )
    supervision.add_argument(
        "--probe-interval-s",
        type=float,
        default=30.0,
        help="seconds between real probe inferences on every model; 0: watch stub processes only "
        "(default: %(default)s)",
    )
    supervision.add_argument(
        "--probe-timeout-s",
        type=float,
        default=30.0,
        help="a probe unanswered this long is a fault if the model finished nothing else meanwhile "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--memory-limit-gb",
        type=float,
        default=None,
        metavar="GB",
        help="the memory this server may use: once ready, its measured footprint plus every pipeline "
        "instance's peak at the repository's pixel limit must fit, or it stops and says the limit that would",
    )
    p.add_argument(
        "--allocator",
        choices=CHOICES,
        default=SYSTEM,
        help="the malloc tritonserver and its stubs run with: system is glibc's; tcmalloc or jemalloc is "
        "preloaded (LD_PRELOAD) and must be installed. Measured in the soak, neither stopped "
        "tritonserver's growth under load (benchmarks/RESULTS.md) (default: %(default)s)",
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


def _memory_plan(args: argparse.Namespace, server: TritonServer) -> str:
    """The ``memory`` line: the ready server's measured footprint and its peak at the pixel limit.

    Raises :class:`MagnetError` when ``--memory-limit-gb`` is given and the plan does not fit it.
    """
    from magnet_triton.export.repository import read_manifest
    from magnet_triton.server.memory_budget import GB, MemoryPlan, measured_footprint_bytes

    if args.memory_limit_gb is not None and args.memory_limit_gb <= 0:
        raise MagnetError(f"--memory-limit-gb must be > 0, got {args.memory_limit_gb:g}")
    try:
        manifest = read_manifest(args.model_repository)
    except MagnetError:  # not a repository of ours: nothing to size it by
        return "not sized (no magnet_repository.json)"
    footprint = measured_footprint_bytes(server.pid or -1, [s.pid for s in server.live_stubs()])
    plan = MemoryPlan.of(manifest, footprint)
    if args.memory_limit_gb is None:
        return f"{plan.describe()} (--memory-limit-gb checks it)"
    plan.check(int(args.memory_limit_gb * GB))
    return f"{plan.describe()}, within the declared {args.memory_limit_gb:g} GB"


def _access(args: argparse.Namespace) -> tuple[AdminKey | None, GrpcTls | None]:
    """The admin key and TLS settings the flags ask for."""
    try:
        admin = None
        if not args.open_admin_apis:
            key = os.environ.get(ADMIN_KEY_ENV)
            admin = AdminKey(key, args.admin_header) if key else AdminKey.generate(args.admin_header)
        tls = None
        if args.tls_cert or args.tls_key:
            if not (args.tls_cert and args.tls_key):
                raise ValueError("TLS needs both --tls-cert and --tls-key")
            tls = GrpcTls(args.tls_cert, args.tls_key, args.tls_ca, args.tls_server_name)
    except ValueError as e:
        raise MagnetError(str(e)) from e
    return admin, tls


def _describe_access(args: argparse.Namespace, admin: AdminKey | None, tls: GrpcTls | None) -> list[str]:
    if admin is None:
        closed = "open to every client (--open-admin-apis)"
    elif os.environ.get(ADMIN_KEY_ENV):
        closed = f"need header {admin.header} = ${ADMIN_KEY_ENV}"
    else:
        closed = f"closed (a generated key; set ${ADMIN_KEY_ENV} to use them with header {admin.header})"
    return [
        f"admin    {', '.join(RESTRICTED_APIS)} APIs {closed}",
        f"TLS      {'on gRPC, ' + str(tls.cert) if tls else 'off'}",
        f"watch    {'off (--no-supervise)' if args.no_supervise else 'stubs every 0.5 s, probes every ' + format(args.probe_interval_s, 'g') + ' s'}",
    ]


def _serve(args: argparse.Namespace) -> int:
    shm_bytes, pool_args = _memory_args(args)
    admin, tls = _access(args)
    allocator = choose_allocator(args.allocator)
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
        http=args.http,
        admin_key=admin,
        tls=tls,
        model_control=not args.no_supervise,
        allocator=allocator,
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
            print(f"HTTP     {server.http_url if args.http else 'off (--http serves it)'}")
            print(f"metrics  {server.metrics_url}")
            print(f"log      {server.log_path}")
            print(f"models   {', '.join(server.ready_models()) or '(none)'}")
            print(f"memory   {_memory_plan(args, server)}")
            print(f"malloc   {allocator.describe()}")
            for line in _describe_access(args, admin, tls):
                print(line)
            print("serving; Ctrl-C or SIGTERM stops", flush=True)
            if args.no_supervise:
                while server.is_running():
                    time.sleep(0.5)
                raise MagnetError(
                    f"tritonserver exited unexpectedly; last lines of its log:\n{server.log_tail()}"
                )
            supervisor = Supervisor(
                server,
                probe_interval_s=args.probe_interval_s,
                probe_timeout_s=args.probe_timeout_s,
                say=lambda line: print(line, flush=True),
            )
            supervisor.run()
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
