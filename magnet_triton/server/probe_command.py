"""``magnet-triton probe``: is a server up and answering real inferences? For Kubernetes probes.

Exit status 0 when it is, 1 (with a line per failing model) when not: a container ``exec`` probe.
``--live`` only asks whether the server process answers (a liveness probe that never restarts a
server for being busy); the default also needs Triton's readiness and a real inference on every model
version (:mod:`.probe`), which a dead Python-backend stub fails although Triton still says ready.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from magnet_triton.errors import MagnetError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``magnet-triton probe``."""
    p = subparsers.add_parser(
        "probe",
        help="check that a server answers real inferences (exit 0) or not (exit 1), for Kubernetes",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    p.add_argument("--url", default="localhost:8001", help="gRPC host:port (default: %(default)s)")
    p.add_argument("--live", action="store_true", help="only check that the server answers (liveness)")
    p.add_argument("--timeout-s", type=float, default=20.0, help="per request (default: %(default)s)")
    p.add_argument("--ssl", action="store_true", help="connect over TLS")
    p.add_argument("--root-certificates", type=Path, metavar="PEM", help="the CA to trust, with --ssl")
    p.add_argument("--quiet", action="store_true", help="print nothing when all is well")
    p.set_defaults(func=_probe)


def _probe(args: argparse.Namespace) -> int:
    import tritonclient.grpc as grpc
    from tritonclient.utils import InferenceServerException

    from magnet_triton.server.probe import probe_server

    if args.root_certificates is not None and not args.root_certificates.is_file():
        raise MagnetError(f"--root-certificates {args.root_certificates} is not a file")
    if args.root_certificates is not None and not args.ssl:
        raise MagnetError("--root-certificates needs --ssl")
    tls = {"ssl": True, "root_certificates": str(args.root_certificates) if args.root_certificates else None}
    client = grpc.InferenceServerClient(args.url, **(tls if args.ssl else {}))
    try:
        if args.live:
            if not client.is_server_live(client_timeout=args.timeout_s):
                raise MagnetError(f"{args.url} is not live")
            if not args.quiet:
                print(f"{args.url}: live")
            return 0
        if not client.is_server_ready(client_timeout=args.timeout_s):
            raise MagnetError(f"{args.url} is not ready (a model is loading, reloading or failed)")
        results = probe_server(client, timeout_s=args.timeout_s)
    except InferenceServerException as e:
        raise MagnetError(f"{args.url} does not answer: {e.message()}") from e
    finally:
        client.close()
    failed = [r for r in results if not r.ok]
    for result in failed if args.quiet else results:
        print(result)
    if not results:
        raise MagnetError(f"{args.url} serves no model that can be probed")
    if failed:
        raise MagnetError(f"{len(failed)} of {len(results)} model versions failed their probe")
    return 0
