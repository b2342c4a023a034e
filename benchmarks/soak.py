"""Soak and fault benchmark: ``magnet-triton serve`` under a mixed load while its stubs are killed.

A bounded run (``--duration-s``) at ``--concurrency`` clients, each sending, at random:

- a good request through the ``magnet`` ensemble (PNG bytes), which must succeed;
- a bad input (:data:`BAD_INPUTS`), which must be refused INVALID_ARGUMENT, never anything else;
- an abandoned request (client deadline ``--abandon-after-s``), which the server must stop.

Every ``--kill-every-s`` (randomised 0.5x to 1.5x) one Python-backend stub of a random model gets
SIGKILL, as the out-of-memory killer would. A readiness watcher (0.2 s) times each fault: the kill,
the moment Triton's readiness went false, the moment it came back. A good request that fails is
*expected* when its life overlaps a fault window (from the kill to readiness back, plus 2 s), else
*unexpected*. The server's memory (every process of the server, stubs included: summed RSS, and summed
PSS, which counts a page shared by several processes once, :mod:`benchmarks.proc_memory`) and the use
of ``/dev/shm`` are sampled every 5 s; the report gives the growth of each high-water mark after
warm-up (the first fifth): the peak of the last fifth of the run against that of the second, and each
model's PSS peaks, to see who grew.

Not part of CI (minutes of both cores). Example (the figures in RESULTS.md)::

    python -m benchmarks.soak --preset cityscapes-fast --duration-s 1200 --out runs/soak
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import load_test_image, machine_record, record_lines, write_json
from benchmarks.proc_memory import tree_memory, tree_pids
from magnet_triton import io_spec
from magnet_triton.export.repository import read_manifest
from magnet_triton.sample import png_declaring
from magnet_triton.server import free_port
from magnet_triton.server.allocator import CHOICES, SYSTEM, choose_allocator
from magnet_triton.server.stubs import cpu_ticks, live_stubs

KILLABLE = (
    io_spec.BACKBONE_MODEL,
    io_spec.DEFAULT_NAMES.refiner(0),
    io_spec.PIPELINE_MODEL,
    io_spec.DECODE_MODEL,
)
#: After readiness is back, how long a failure still counts as the fault's.
FAULT_GRACE_S = 2.0


def _bytes_input(grpc: Any, data: bytes) -> Any:
    tensor = grpc.InferInput(io_spec.IMAGE_BYTES, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([data], dtype=np.object_))
    return tensor


def _bad_inputs(grpc: Any, good_png: bytes) -> dict[str, tuple[str, list[Any], dict[str, Any]]]:
    """name -> (model, inputs, request parameters): each one must be refused INVALID_ARGUMENT."""
    float_image = grpc.InferInput(io_spec.IMAGE, [8, 8, 3], "FP32")
    float_image.set_data_from_numpy(np.zeros((8, 8, 3), np.float32))
    mode = grpc.InferInput(io_spec.MODE, [1], "BYTES")
    mode.set_data_from_numpy(np.array([b"downsample"], dtype=np.object_))
    return {
        "declared 30000x30000 PNG": (
            io_spec.ENSEMBLE_MODEL,
            [_bytes_input(grpc, png_declaring(30000, 30000))],
            {},
        ),
        "corrupt bytes": (io_spec.ENSEMBLE_MODEL, [_bytes_input(grpc, b"\x89PNG not really")], {}),
        "empty bytes": (io_spec.ENSEMBLE_MODEL, [_bytes_input(grpc, b"")], {}),
        "misspelled parameter": (io_spec.ENSEMBLE_MODEL, [_bytes_input(grpc, good_png)], {"n_patchs": 3}),
        "n_patches -1 over the cap": (
            io_spec.ENSEMBLE_MODEL,
            [_bytes_input(grpc, good_png)],
            {"n_patches": -1},
        ),
        "float32 IMAGE": (io_spec.PIPELINE_MODEL, [float_image], {}),
        "no IMAGE": (io_spec.PIPELINE_MODEL, [mode], {}),
    }


@dataclass
class Outcome:
    kind: str  # good | bad | abandoned
    name: str
    started: float
    ended: float
    status: str  # ok or the gRPC status
    message: str = ""


@dataclass
class FaultRecord:
    model: str
    pid: int
    killed_at: float
    not_ready_at: float | None = None
    ready_again_at: float | None = None


@dataclass
class Soak:
    url: str
    serve_pid: int
    good_png: bytes
    concurrency: int
    duration_s: float
    kill_every_s: float
    bad_fraction: float
    abandon_fraction: float
    abandon_after_s: float
    rng: random.Random
    outcomes: list[Outcome] = field(default_factory=list)
    faults: list[FaultRecord] = field(default_factory=list)
    memory: list[dict[str, float]] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def over(self) -> bool:
        return self.now() > self.duration_s

    # -- clients ---------------------------------------------------------------------------------
    def client_loop(self, seed: int) -> None:
        import tritonclient.grpc as grpc
        from tritonclient.utils import InferenceServerException

        rng = random.Random(seed)
        backoff = 0.25
        bad = _bad_inputs(grpc, self.good_png)
        with grpc.InferenceServerClient(self.url) as client:
            while not self.over():
                roll = rng.random()
                if roll < self.bad_fraction:
                    kind, name = "bad", rng.choice(sorted(bad))
                    model, inputs, parameters = bad[name]
                    timeout = 120.0
                elif roll < self.bad_fraction + self.abandon_fraction:
                    kind, name, model = "abandoned", "client deadline", io_spec.ENSEMBLE_MODEL
                    inputs, timeout = [_bytes_input(grpc, self.good_png)], self.abandon_after_s
                else:
                    kind, name, model = "good", "ensemble PNG", io_spec.ENSEMBLE_MODEL
                    inputs, timeout = [_bytes_input(grpc, self.good_png)], 600.0
                if kind != "bad":  # as magnet-client does: its timeout is the pipeline's deadline too
                    parameters = {io_spec.DEADLINE_PARAMETER: int(timeout * 1000)}
                started = self.now()
                try:
                    client.infer(model, inputs, parameters=parameters or None, client_timeout=timeout)
                    status, message = "ok", ""
                except InferenceServerException as e:
                    status, message = str(e.status()), (e.message() or "")[:200]
                with self.lock:
                    self.outcomes.append(Outcome(kind, name, started, self.now(), status, message))
                # Back off after a failure as magnet-client's retries do (0.5 s, doubling to 8 s):
                # a server that answers "not there" at once would otherwise take thousands of calls.
                failed = status not in ("ok", "StatusCode.INVALID_ARGUMENT", "StatusCode.DEADLINE_EXCEEDED")
                backoff = min(8.0, backoff * 2) if failed else 0.25
                if failed:
                    time.sleep(backoff)

    # -- faults ----------------------------------------------------------------------------------
    def killer_loop(self) -> None:
        next_kill = self.kill_every_s * self.rng.uniform(0.5, 1.5)
        while not self.over():
            time.sleep(0.2)
            if self.now() < next_kill or self.kill_every_s <= 0:
                continue
            model = self.rng.choice(KILLABLE)
            # Found again each time: a restart by the supervisor makes a new tritonserver.
            stubs = [s for s in live_stubs(_tritonserver_of(self.serve_pid)) if s.model == model]
            if stubs:
                victim = self.rng.choice(stubs)
                with self.lock:
                    self.faults.append(FaultRecord(model, victim.pid, self.now()))
                os.kill(victim.pid, signal.SIGKILL)
            next_kill = self.now() + self.kill_every_s * self.rng.uniform(0.5, 1.5)

    def readiness_loop(self) -> None:
        import tritonclient.grpc as grpc
        from tritonclient.utils import InferenceServerException

        with grpc.InferenceServerClient(self.url) as client:
            while not self.over():
                try:
                    ready = client.is_server_ready(client_timeout=2)
                except InferenceServerException:
                    ready = False
                with self.lock:
                    for fault in self.faults:
                        if fault.not_ready_at is None and not ready:
                            fault.not_ready_at = self.now()
                        elif fault.not_ready_at is not None and fault.ready_again_at is None and ready:
                            fault.ready_again_at = self.now()
                time.sleep(0.2)

    def memory_loop(self, shm_before: int) -> None:
        while not self.over():
            sample = tree_memory(self.serve_pid, _tritonserver_of(self.serve_pid))
            self.memory.append(
                {
                    "t": self.now(),
                    "rss_mib": sample.rss_mib,
                    "pss_mib": sample.pss_mib,
                    "private_mib": sample.private_mib,
                    "shm_mib": (_shm_used() - shm_before) / 2**20,
                    "by_role_mib": sample.by_role,
                }
            )
            time.sleep(5.0)

    def run(self) -> None:
        threads = [
            threading.Thread(target=self.client_loop, args=(i,), daemon=True) for i in range(self.concurrency)
        ]
        threads += [
            threading.Thread(target=self.killer_loop, daemon=True),
            threading.Thread(target=self.readiness_loop, daemon=True),
            threading.Thread(target=self.memory_loop, args=(_shm_used(),), daemon=True),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and every live descendant."""
    return sum(cpu_ticks(p) or 0 for p in tree_pids(pid)) / os.sysconf("SC_CLK_TCK")


#: The server counts as idle below this share of one core (its supervisor, Triton's threads).
IDLE_CORE_SHARE = 0.15


def _busy_share(pid: int, over_s: float) -> float:
    """The share of one core the server tree used over the next ``over_s`` seconds."""
    before = _tree_cpu_s(pid)
    time.sleep(over_s)
    return (_tree_cpu_s(pid) - before) / over_s


def _wait_idle(pid: int, timeout_s: float = 300.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _busy_share(pid, 1.0) < IDLE_CORE_SHARE:
            return True
    return False


def abandon_trace(
    url: str, serve_pid: int, png: bytes, scales: int, abandon_after_s: float
) -> dict[str, Any]:
    """Once the load is over: how long the cores stay busy after a client abandons a request, against
    the time of one scale (a full request alone, divided by its refined scales: the average, so a
    lower bound on the longest).

    The server tree's CPU is sampled every 0.1 s; "busy until" is the first moment after the client
    gave up from which it stays under :data:`IDLE_CORE_SHARE` of a core for a second.
    """
    import tritonclient.grpc as grpc
    from tritonclient.utils import InferenceServerException

    if not _wait_idle(serve_pid):
        return {"note": "the server never went idle after the load"}
    with grpc.InferenceServerClient(url) as client:
        started = time.monotonic()
        client.infer(io_spec.ENSEMBLE_MODEL, [_bytes_input(grpc, png)], client_timeout=600)
        full_s = time.monotonic() - started
        _wait_idle(serve_pid)
        parameters = {io_spec.DEADLINE_PARAMETER: int(abandon_after_s * 1000)}
        started = time.monotonic()
        try:
            client.infer(
                io_spec.ENSEMBLE_MODEL,
                [_bytes_input(grpc, png)],
                parameters=parameters,
                client_timeout=abandon_after_s,
            )
            status = "ok"
        except InferenceServerException as e:
            status = str(e.status())
        gave_up = time.monotonic()
    samples: list[tuple[float, float]] = []  # (seconds after giving up, share of a core)
    quiet_since = None
    while time.monotonic() - gave_up < max(60.0, 3 * full_s):
        share = _busy_share(serve_pid, 0.1)
        t = time.monotonic() - gave_up
        samples.append((t, share))
        if share >= IDLE_CORE_SHARE:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = t - 0.1
        if quiet_since is not None and t - quiet_since >= 1.0:
            break
    # The coarse pass is one patch; the refined scales share the rest (the last is the longest).
    one_scale_s = full_s / max(1, scales - 1)
    busy_s = quiet_since if quiet_since is not None else None
    return {
        "full_request_s": full_s,
        "one_scale_s": one_scale_s,
        "abandoned_status": status,
        "abandoned_after_s": gave_up - started,
        "busy_after_abandon_s": busy_s,
        "within_one_scale": busy_s is not None and busy_s <= one_scale_s,
        "cpu_trace": samples,
    }


def _shm_used() -> int:
    stat = os.statvfs("/dev/shm")
    return (stat.f_blocks - stat.f_bfree) * stat.f_frsize


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _high_water_growth(
    memory: list[dict[str, Any]], duration_s: float, key: str = "rss_mib", statistic: Callable = max
) -> tuple[float | None, float | None, float | None]:
    """(growth, first, last) of ``statistic`` of ``memory[i][key]`` over a window, after warm-up (the
    first fifth).

    The second fifth of the run against the last fifth. Single samples would measure where the requests
    in flight happen to be (a pipeline stub's memory rises and falls by a GB within each request). With
    ``max`` (the high-water mark) a leak shows as a higher peak at the end, but so does a moment when more
    requests overlap; with ``np.median`` (the level most samples sit at) neither such a moment nor the
    dip while a killed stub reloads moves it, and a leak still does.
    """
    fifth = duration_s / 5

    def over(start: float, end: float) -> float | None:
        values = [m[key] for m in memory if start <= m["t"] < end and key in m]
        return float(statistic(values)) if values else None

    first, last = over(fifth, 2 * fifth), over(4 * fifth, float("inf"))
    if first is None or last is None:
        return None, first, last
    return (last - first) / first, first, last


def verdict_of(o: Outcome, in_fault: bool) -> str:
    """How one answer counts. A bad input must be refused INVALID_ARGUMENT whenever it is answered at
    all; anything a fault window explains is the fault's; a full queue is load shed, reported apart
    (the server answering UNAVAILABLE at once, as it should, when abandoned requests hold its slots)."""
    if o.kind == "bad" and o.status == "StatusCode.INVALID_ARGUMENT":
        return "refused INVALID_ARGUMENT"
    if o.kind == "abandoned" and o.status in ("StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED"):
        return "abandoned"
    if o.status == "ok":
        return "UNEXPECTED" if o.kind == "bad" else "ok"
    if in_fault:
        return "failed in a fault window"
    if "Exceeds maximum queue size" in o.message:
        return "shed: queue full"
    return "UNEXPECTED"


def summarize(soak: Soak) -> dict[str, Any]:
    """Counts by kind and cause, latencies, fault timings and the memory trend."""
    windows = [
        (f.killed_at, (f.ready_again_at if f.ready_again_at is not None else soak.duration_s) + FAULT_GRACE_S)
        for f in soak.faults
    ]

    def in_fault(outcome: Outcome) -> bool:
        return any(outcome.started <= end and outcome.ended >= start for start, end in windows)

    unexpected: dict[str, int] = {}
    counts: dict[str, int] = {}
    for o in soak.outcomes:
        verdict = verdict_of(o, in_fault(o))
        key = f"{o.kind}: {verdict}"
        counts[key] = counts.get(key, 0) + 1
        if verdict == "UNEXPECTED":
            cause = f"{o.kind} {o.name}: {o.status} {o.message[:120]}"
            unexpected[cause] = unexpected.get(cause, 0) + 1
    latencies = [o.ended - o.started for o in soak.outcomes if o.kind == "good" and o.status == "ok"]
    memory = soak.memory
    warm = [m for m in memory if m["t"] >= soak.duration_s / 5]
    growth, first_peak, last_peak = _high_water_growth(memory, soak.duration_s)
    return {
        "requests": len(soak.outcomes),
        "counts": dict(sorted(counts.items())),
        "unexpected": unexpected,
        "good_latency_s": {"p50": _percentile(latencies, 50), "p99": _percentile(latencies, 99)},
        "faults": [
            {
                **asdict(f),
                "not_ready_after_s": None if f.not_ready_at is None else f.not_ready_at - f.killed_at,
                "recovered_after_s": None if f.ready_again_at is None else f.ready_again_at - f.killed_at,
            }
            for f in soak.faults
        ],
        "rss_mib": {
            "first": memory[0]["rss_mib"] if memory else None,
            "after_warmup": warm[0]["rss_mib"] if warm else None,
            "last": memory[-1]["rss_mib"] if memory else None,
            "peak_after_warmup": first_peak,
            "peak_at_end": last_peak,
            "growth_after_warmup": growth,
        },
        # Every page once (PSS), and its part outside shared memory: see benchmarks/proc_memory.py.
        "pss_mib": _memory_trend(memory, soak.duration_s, "pss_mib"),
        "private_mib": _memory_trend(memory, soak.duration_s, "private_mib"),
        "by_role_peak_mib": _role_peaks(memory, soak.duration_s),
        "by_role_median_mib": _role_peaks(memory, soak.duration_s, np.median),
        "shm_mib_max": max((m["shm_mib"] for m in memory), default=None),
        "memory_trace": memory,
    }


def _memory_trend(memory: list[dict[str, Any]], duration_s: float, key: str) -> dict[str, float | None]:
    growth, first_peak, last_peak = _high_water_growth(memory, duration_s, key)
    median_growth, first_median, last_median = _high_water_growth(memory, duration_s, key, np.median)
    return {
        "peak_after_warmup": first_peak,
        "peak_at_end": last_peak,
        "growth_after_warmup": growth,
        "median_after_warmup": first_median,
        "median_at_end": last_median,
        "median_growth_after_warmup": median_growth,
    }


def _role_peaks(
    memory: list[dict[str, Any]], duration_s: float, statistic: Callable = max
) -> dict[str, tuple[float, float]]:
    """Each role's PSS high-water mark (or ``statistic``) in the second fifth and in the last (MiB): who
    grew."""
    fifth = duration_s / 5
    samples: dict[str, tuple[list[float], list[float]]] = {}
    for m in memory:
        window = 0 if fifth <= m["t"] < 2 * fifth else 1 if m["t"] >= 4 * fifth else None
        if window is None:
            continue
        for role, mib in m.get("by_role_mib", {}).items():
            samples.setdefault(role, ([], []))[window].append(mib)
    return {
        role: (float(statistic(first)) if first else 0.0, float(statistic(last)) if last else 0.0)
        for role, (first, last) in sorted(samples.items())
    }


def _growth_text(trend: dict[str, float | None]) -> str:
    growth = trend["growth_after_warmup"]
    return (
        f"{trend['peak_after_warmup'] or 0:.0f} MiB in the second fifth, {trend['peak_at_end'] or 0:.0f} in the "
        f"last ({'n/a' if growth is None else f'{growth:+.2%}'})"
    )


def report_lines(summary: dict[str, Any]) -> list[str]:
    lines = [f"- requests: {summary['requests']}"]
    lines += [f"  - {key}: {n}" for key, n in summary["counts"].items()]
    lines.append(f"- unexpected failures: {sum(summary['unexpected'].values())}")
    lines += [f"  - {cause}: {n}" for cause, n in summary["unexpected"].items()]
    p50, p99 = summary["good_latency_s"]["p50"], summary["good_latency_s"]["p99"]
    if p50 is not None:
        lines.append(f"- good requests: p50 {p50:.1f} s, p99 {p99:.1f} s")
    for f in summary["faults"]:
        nr, rec = f["not_ready_after_s"], f["recovered_after_s"]
        lines.append(
            f"- kill {f['model']} stub at {f['killed_at']:.0f} s: not ready after "
            f"{'never' if nr is None else f'{nr:.1f} s'}, ready again after {'never' if rec is None else f'{rec:.1f} s'}"
        )
    rss = summary["rss_mib"]
    if rss["first"] is not None:
        growth = rss["growth_after_warmup"]
        lines.append(
            f"- server RSS: {rss['first']:.0f} MiB at start, {rss['after_warmup']:.0f} after warm-up, "
            f"{rss['last']:.0f} at the end; high-water mark {rss['peak_after_warmup'] or 0:.0f} MiB in the "
            f"second fifth, {rss['peak_at_end'] or 0:.0f} in the last "
            f"({'n/a' if growth is None else f'{growth:+.2%}'}); "
            f"/dev/shm at most {summary['shm_mib_max']:.0f} MiB above its start"
        )
    if summary.get("pss_mib", {}).get("peak_at_end") is not None:
        lines.append(f"- server PSS (every page once): high-water mark {_growth_text(summary['pss_mib'])}")
        lines.append(f"  - outside shared memory: {_growth_text(summary['private_mib'])}")
        pss = summary["pss_mib"]
        if pss.get("median_at_end") is not None:
            growth = pss["median_growth_after_warmup"]
            lines.append(
                f"  - median (the level between peaks): {pss['median_after_warmup']:.0f} MiB in the second "
                f"fifth, {pss['median_at_end']:.0f} in the last ({growth:+.2%})"
            )
        medians = summary.get("by_role_median_mib", {})
        for role, (first, last) in summary["by_role_peak_mib"].items():
            median = f"; median {medians[role][0]:.0f} -> {medians[role][1]:.0f}" if role in medians else ""
            lines.append(f"  - {role}: peak {first:.0f} -> {last:.0f} MiB{median}")
    return lines


def abandon_line(trace: dict[str, Any]) -> str:
    if "note" in trace:
        return f"- abandoned request alone: not measured ({trace['note']})"
    busy = trace["busy_after_abandon_s"]
    return (
        f"- abandoned request alone ({trace['abandoned_status']} after {trace['abandoned_after_s']:.1f} s): "
        f"cores busy {'past the trace' if busy is None else f'{busy:.1f} s'} after the client gave up; one "
        f"scale takes {trace['one_scale_s']:.1f} s (a full request alone {trace['full_request_s']:.1f} s)"
    )


def _export(preset: str, out: Path, max_patches: int, extra: list[str]) -> Path:
    repository = out / "repository"
    if not (repository / "magnet_repository.json").is_file():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "magnet_triton.cli",
                "export",
                "--preset",
                preset,
                "--random-weights",
                "0",
                "--out",
                str(repository),
                "--max-patches-per-request",
                str(max_patches),
                *extra,
            ],
            check=True,
        )
    return repository


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, help="an exported repository (default: export --preset)")
    parser.add_argument("--preset", default="cityscapes-fast")
    parser.add_argument("--max-patches-per-request", type=int, default=64, help="cap of an exported one")
    parser.add_argument(
        "--export-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra `magnet-triton export` argument, e.g. --export-arg=--no-onnx-memory-arena (repeatable)",
    )
    parser.add_argument(
        "--image", help="path, cityscapes, deepglobe or synthetic (default: cityscapes if shared)"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--duration-s", type=float, default=1200.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--kill-every-s", type=float, default=120.0, help="0: no kills")
    parser.add_argument("--bad-fraction", type=float, default=0.2)
    parser.add_argument("--abandon-fraction", type=float, default=0.05)
    parser.add_argument("--abandon-after-s", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--allocator", choices=CHOICES, default=SYSTEM, help="serve --allocator (default: %(default)s)"
    )
    parser.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra `magnet-triton serve` argument, e.g. "
        "--serve-arg=--triton-arg=--grpc-infer-allocation-pool-size=1 (repeatable)",
    )
    args = parser.parse_args(argv)
    allocator = choose_allocator(args.allocator)  # refused here, not after an export
    args.out.mkdir(parents=True, exist_ok=True)
    record = machine_record()
    repository = args.repository or _export(
        args.preset, args.out, args.max_patches_per_request, args.export_arg
    )
    image = load_test_image(args.image)
    port, metrics = free_port(), free_port()
    log = open(args.out / "serve.log", "wb")  # noqa: SIM115 (closed after the server stops)
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "magnet_triton.cli",
            "serve",
            "--model-repository",
            str(repository),
            "--grpc-port",
            str(port),
            "--metrics-port",
            str(metrics),
            "--log-file",
            str(args.out / "tritonserver.log"),
            "--allocator",
            allocator.name,
            *args.serve_arg,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 600
        while b"serving;" not in (args.out / "serve.log").read_bytes():
            if serve.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"serve did not start; see {args.out / 'serve.log'}")
            time.sleep(0.5)
        soak = Soak(
            f"127.0.0.1:{port}",
            serve.pid,
            image.encoded,
            args.concurrency,
            args.duration_s,
            args.kill_every_s,
            args.bad_fraction,
            args.abandon_fraction,
            args.abandon_after_s,
            random.Random(args.seed),
        )
        soak.run()
        counters = _pipeline_counters(metrics)
        try:  # after the run: a failure here must not cost its report
            scales = len(read_manifest(repository)["settings"]["scales"])
            abandon = abandon_trace(soak.url, serve.pid, image.encoded, scales, args.abandon_after_s)
        except Exception as e:
            abandon = {"note": f"{type(e).__name__}: {e}"}
    finally:
        serve.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        serve.wait(timeout=120)
        log.close()
    summary = summarize(soak)
    summary["stop_s"] = time.monotonic() - stopped
    summary["pipeline_counters"] = counters
    summary["abandon_trace"] = abandon
    summary["machine"] = record
    summary["image"] = image.name
    summary["repository"] = str(repository)
    summary["allocator"] = allocator.describe()
    summary["serve_args"] = args.serve_arg
    write_json(args.out / "soak.json", summary)
    lines = [
        *record_lines(record),
        f"- image: {image.name}",
        f"- malloc: {summary['allocator']}; serve arguments added: {' '.join(args.serve_arg) or 'none'}",
        *report_lines(summary),
        f"- stop took {summary['stop_s']:.1f} s",
        abandon_line(abandon),
    ]
    text = "\n".join(lines)
    counted = ", ".join(f"{k} {v:g}" for k, v in counters.items() if v)
    text += f"\n- the pipeline's own counters at the end: {counted}"
    (args.out / "soak.md").write_text(text + "\n")
    print(text)
    return 1 if summary["unexpected"] else 0


def _pipeline_counters(metrics_port: int) -> dict[str, float]:
    """``magnet_pipeline_requests_total`` series (by their labels) from the server's metrics endpoint."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        line.split("{", 1)[1].split("}", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("magnet_pipeline_requests_total{")
    }


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _tritonserver_of(serve_pid: int) -> int:
    """The pid of the ``tritonserver`` that ``magnet-triton serve`` (``serve_pid``) runs now, or -1."""
    for name in os.listdir("/proc"):
        if name.isdigit() and _parent(int(name)) == serve_pid:
            try:
                if Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")[0].endswith(b"tritonserver"):
                    return int(name)
            except OSError:
                continue
    return -1


if __name__ == "__main__":
    sys.exit(main())
