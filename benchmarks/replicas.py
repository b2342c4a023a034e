"""Throughput of one replica against two behind nginx, measured in the same run, and a kill run.

Two ``tritonserver`` replicas of one repository start on loopback (:mod:`benchmarks.balancer`). The same
bounded stream (``--requests`` encoded images at ``--concurrency``, one gRPC channel) goes through nginx
twice: with an upstream of the first replica only, then of both. Each replica's share comes from its own
``nv_inference_request_success`` of the ``magnet`` ensemble. With ``--kill``, a third stream kills the
second replica (SIGKILL of its tritonserver) after a third of the requests and counts what failed.

The replicas share this machine's cores, so the ratio says what a second replica adds *here*; on
separate machines (or GPUs) each brings its own. Example::

    python -m benchmarks.replicas --requests 60 --concurrency 4 --kill
    python -m benchmarks.replicas --repository runs/repo-cityscapes-fast --image cityscapes --requests 8
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.balancer import BalancerConfig, NginxBalancer, start_replicas
from magnet_triton import io_spec
from magnet_triton.server import TritonServer, free_port


@dataclass
class StreamResult:
    """One bounded stream through the balancer."""

    upstreams: int
    requests: int
    seconds: float
    failed: int
    retried: int
    served: dict[str, float] = field(default_factory=dict)  # replica gRPC url -> requests served
    latencies_s: list[float] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return (self.requests - self.failed) / self.seconds


def ensemble_successes(metrics_url: str) -> float:
    """``nv_inference_request_success`` of the ``magnet`` ensemble at a replica's ``/metrics``."""
    import urllib.request

    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("nv_inference_request_success{") and f'model="{io_spec.ENSEMBLE_MODEL}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def run_stream(
    url: str,
    images: list[bytes],
    servers: list[TritonServer],
    *,
    upstreams: int,
    requests: int,
    concurrency: int,
    kill: TritonServer | None = None,
) -> StreamResult:
    """Send ``requests`` images through ``url`` at ``concurrency``; kill ``kill`` after a third of them."""
    from magnet_triton.client import MagnetClient, MagnetClientError

    before = {s.grpc_url: ensemble_successes(s.metrics_url) for s in servers if s.is_running()}
    counted_at_kill: dict[str, float] = {}
    done = threading.Condition()
    finished = [0]
    result = StreamResult(upstreams, requests, 0.0, 0, 0)

    def one(client: MagnetClient, i: int) -> None:
        try:
            answer = client.segment(images[i % len(images)], outputs=())
            with done:
                result.latencies_s.append(answer.latency_s)
                result.retried += answer.attempts > 1
        except MagnetClientError:
            with done:
                result.failed += 1
        with done:
            finished[0] += 1
            done.notify_all()

    started = time.perf_counter()
    with (
        MagnetClient(url, timeout_s=600, retries=6, retry_backoff_s=0.2) as client,
        ThreadPoolExecutor(concurrency) as pool,
    ):
        futures = [pool.submit(one, client, i) for i in range(requests)]
        if kill is not None:
            with done:
                done.wait_for(lambda: finished[0] >= requests // 3)
            counted_at_kill[kill.grpc_url] = ensemble_successes(kill.metrics_url)
            assert kill.pid is not None
            os.kill(kill.pid, signal.SIGKILL)
        for f in futures:
            f.result()
    result.seconds = time.perf_counter() - started
    for s in servers:
        if s.grpc_url in counted_at_kill:
            result.served[s.grpc_url] = counted_at_kill[s.grpc_url] - before[s.grpc_url]
        elif s.grpc_url in before:
            result.served[s.grpc_url] = ensemble_successes(s.metrics_url) - before[s.grpc_url]
    return result


def _images(image: str | None, count: int) -> list[bytes]:
    if image is not None:
        from benchmarks.common import load_test_image

        return [load_test_image(image).encoded]
    from tests.tiny_repository import png_bytes, scene

    return [png_bytes(scene(96 + 8 * i, 144 + 12 * i, seed=i)) for i in range(count)]


def _tiny_repository(folder: Path) -> Path:
    from tests.tiny_repository import build_tiny_repository

    return build_tiny_repository(folder)


def _line(r: StreamResult) -> str:
    served = ", ".join(f"{url}: {n:.0f}" for url, n in r.served.items())
    p50 = statistics.median(r.latencies_s) if r.latencies_s else float("nan")
    return (
        f"{r.upstreams} upstream(s): {r.images_per_s:.2f} images/s ({r.requests - r.failed}/{r.requests} in "
        f"{r.seconds:.1f} s, p50 {p50:.2f} s), failed {r.failed}, retried {r.retried}; served by {served}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repository", type=Path, help="an exported repository (default: the tests' tiny one)"
    )
    parser.add_argument("--image", help="path, cityscapes, deepglobe or synthetic (default: small scenes)")
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--kill", action="store_true", help="a third stream that kills a replica mid-way")
    parser.add_argument(
        "--out", type=Path, help="folder for logs and results.json (default: a temporary one)"
    )
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="replicas-"))
    out.mkdir(parents=True, exist_ok=True)
    repository = args.repository or _tiny_repository(out)
    images = _images(args.image, 6)
    servers = start_replicas(repository, 2, out)
    results: list[StreamResult] = []
    try:
        for n in (1, 2, *((2,) if args.kill else ())):
            config = BalancerConfig(f"127.0.0.1:{free_port()}", tuple(s.grpc_url for s in servers[:n]))
            with NginxBalancer(config, out / f"nginx-{len(results)}") as balancer:
                kill = servers[1] if len(results) == 2 else None
                results.append(
                    run_stream(
                        balancer.url,
                        images,
                        servers[:n],
                        upstreams=n,
                        requests=args.requests,
                        concurrency=args.concurrency,
                        kill=kill,
                    )
                )
            print(("kill run, " if len(results) == 3 else "") + _line(results[-1]), flush=True)
    finally:
        for s in servers:
            s.stop()
    one, two = results[0], results[1]
    print(
        f"two replicas / one: {two.images_per_s / one.images_per_s:.2f}x throughput on {os.cpu_count()} cores"
    )
    (out / "results.json").write_text(
        json.dumps([{**asdict(r), "images_per_s": r.images_per_s} for r in results], indent=2)
    )
    print(f"logs and results.json in {out}")
    return 0 if all(r.failed == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
