"""Supervision against a real tritonserver: a killed Python-backend stub is noticed, the server leaves
readiness, the model comes back, requests succeed again, and a stop after it does not hang.

The stub is killed with SIGKILL, as the out-of-memory killer would. Triton on its own keeps the model
"ready" and fails every request routed to it until a restart (the issue that asked for this measured
0 of 80 requests succeeding over 4 minutes); these tests fail on that behaviour.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from magnet_triton import io_spec
from magnet_triton.server.access import AdminKey
from tests.tiny_repository import build_tiny_repository, png_bytes, scene, skip_without_tritonserver

pytestmark = pytest.mark.server
grpc = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")
from tritonclient.utils import InferenceServerException  # noqa: E402

#: The issue's targets: not ready within 5 s of the kill, serving again within 30 s.
NOT_READY_WITHIN_S = 5.0
SERVING_AGAIN_WITHIN_S = 30.0


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    skip_without_tritonserver()
    return build_tiny_repository(tmp_path_factory.mktemp("supervised"))


def start_server(repository, name: str):
    from magnet_triton.server import TritonServer

    server = TritonServer(
        repository,
        model_control=True,
        admin_key=AdminKey.generate(),
        log_path=repository.parent / f"{name}.log",
    )
    return server.start()


@pytest.fixture(scope="module")
def server(repository):
    running = start_server(repository, "server")
    yield running
    running.stop()


def ensemble_request(server, timeout_s: float = 60.0) -> np.ndarray:
    image = scene(60, 90)
    data = grpc.InferInput(io_spec.IMAGE_BYTES, [1], "BYTES")
    data.set_data_from_numpy(np.array([png_bytes(image)], dtype=np.object_))
    with grpc.InferenceServerClient(server.grpc_url) as client:
        result = client.infer(io_spec.ENSEMBLE_MODEL, [data], client_timeout=timeout_s)
    return result.as_numpy(io_spec.SEGMENTATION)


def kill_one_stub(server, model: str) -> int:
    stubs = [s for s in server.live_stubs() if s.model == model]
    assert stubs, f"{model} has no stub process; stubs: {server.live_stubs()}"
    os.kill(stubs[0].pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(s.pid == stubs[0].pid for s in server.live_stubs()):
        assert time.monotonic() < deadline, "the killed stub is still running"
        time.sleep(0.05)
    return stubs[0].pid


def repair_by_reload(supervisor, faults) -> None:
    """Repair ``faults`` (found, not empty) and check it took reloads, not a server restart."""
    assert faults, "the supervisor found nothing to repair"
    supervisor.repair(faults)
    assert {r.action for r in supervisor.repairs[-len(faults) :]} == {"reloaded"}


class ReadinessWatch(threading.Thread):
    """Polls Triton's readiness over gRPC and keeps when it first went false and when it came back."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.started = time.monotonic()
        self.not_ready_at: float | None = None
        self.ready_again_at: float | None = None
        self.done = threading.Event()

    def run(self) -> None:
        with grpc.InferenceServerClient(self.url) as client:
            while not self.done.is_set():
                try:
                    ready = client.is_server_ready(client_timeout=2)
                except InferenceServerException:
                    ready = False
                now = time.monotonic() - self.started
                if not ready and self.not_ready_at is None:
                    self.not_ready_at = now
                if ready and self.not_ready_at is not None and self.ready_again_at is None:
                    self.ready_again_at = now
                    return
                time.sleep(0.05)


def supervise_until_repaired(server, supervisor, model: str):
    """Run ``supervisor``'s loop in a thread until it has repaired ``model``; the readiness seen."""
    watch = ReadinessWatch(server.grpc_url)
    stop = threading.Event()
    loop = threading.Thread(target=supervisor.run, args=(stop.is_set,), daemon=True)
    watch.start()
    loop.start()
    try:
        deadline = time.monotonic() + SERVING_AGAIN_WITHIN_S + 30
        while not any(r.fault.model == model for r in supervisor.repairs):
            assert time.monotonic() < deadline, f"no repair of {model} after {SERVING_AGAIN_WITHIN_S + 30} s"
            time.sleep(0.1)
    finally:
        stop.set()
        loop.join(timeout=30)
        watch.join(timeout=10)
        watch.done.set()
    return watch


@pytest.mark.parametrize("model", [io_spec.BACKBONE_MODEL, io_spec.PIPELINE_MODEL, io_spec.DECODE_MODEL])
def test_a_killed_stub_is_noticed_and_its_model_serves_again(server, model):
    ensemble_request(server)  # all good before
    # The supervisor is built (and counts the stubs) before the kill, as in serve.
    from magnet_triton.server.supervisor import Supervisor

    supervisor = Supervisor(server, probe_interval_s=0, say=lambda line: None)
    kill_one_stub(server, model)
    assert [f.model for f in supervisor.stub_faults()] == [model]

    watch = supervise_until_repaired(server, supervisor, model)
    # A reload of that model, not a restart of the server.
    assert [(r.fault.model, r.action) for r in supervisor.repairs] == [(model, "reloaded")]
    assert watch.not_ready_at is not None, "Triton's readiness never went false during the repair"
    assert watch.not_ready_at < NOT_READY_WITHIN_S, f"not ready only after {watch.not_ready_at:.1f} s"
    assert watch.ready_again_at is not None and watch.ready_again_at < SERVING_AGAIN_WITHIN_S
    # Serving again: every request succeeds, and the model has all its stubs back.
    for _ in range(4):
        assert ensemble_request(server).shape == (60, 90)
    assert supervisor.stub_faults() == []
    assert server.is_ready()


def test_a_request_to_a_dead_backbone_fails_unavailable_at_once_not_internal(server):
    from magnet_triton.server.supervisor import Supervisor
    from tests.server_metrics import read_metrics, sample

    def unavailable() -> float:
        samples = read_metrics(server.metrics_url)
        return sample(samples, "magnet_pipeline_requests_total", outcome="unavailable")

    supervisor = Supervisor(server, probe_interval_s=0, say=lambda line: None)
    before = unavailable()
    kill_one_stub(server, io_spec.BACKBONE_MODEL)
    started = time.monotonic()
    with pytest.raises(InferenceServerException) as failure:
        ensemble_request(server, timeout_s=30)
    assert time.monotonic() - started < 10, "the request hung instead of failing"
    assert failure.value.status() == "StatusCode.UNAVAILABLE"
    assert "magnet_backbone" in failure.value.message() and "unavailable" in failure.value.message()
    # The pipeline's own counter says so (Triton's would call it a success of magnet_pipeline).
    assert unavailable() == before + 1
    repair_by_reload(supervisor, supervisor.check())
    assert ensemble_request(server).shape == (60, 90)


def test_a_probe_round_finds_a_dead_model_that_triton_still_calls_ready(server):
    from magnet_triton.server.supervisor import Supervisor

    supervisor = Supervisor(server, probe_interval_s=1, say=lambda line: None)
    assert supervisor.probe_faults() == []
    kill_one_stub(server, io_spec.BACKBONE_MODEL)
    assert server.is_ready(), "Triton noticed by itself; this test no longer shows anything"
    faults = supervisor.probe_faults()
    # The backbone's own probe fails. The pipeline's (one backbone call) fails too, but saying that the
    # backbone is unavailable: not a fault of its own, so it is not reloaded with it.
    assert {f.model for f in faults} == {io_spec.BACKBONE_MODEL}
    assert all("not healthy" in f.reason for f in faults)
    repair_by_reload(supervisor, supervisor.check() or faults)
    assert supervisor.probe_faults() == []


def test_the_probe_command_fails_on_a_dead_stub_and_passes_once_repaired(server):
    from magnet_triton.server.supervisor import Supervisor

    command = [sys.executable, "-m", "magnet_triton.cli", "probe", "--url", server.grpc_url]
    healthy = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert healthy.returncode == 0, healthy.stderr
    for model in (
        io_spec.BACKBONE_MODEL,
        io_spec.PIPELINE_MODEL,
        io_spec.DECODE_MODEL,
        *io_spec.DEFAULT_NAMES.refiners(2),
    ):
        assert f"{model} v1: ok" in healthy.stdout

    supervisor = Supervisor(server, probe_interval_s=0, say=lambda line: None)
    kill_one_stub(server, io_spec.DEFAULT_NAMES.refiner(1))
    broken = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert broken.returncode == 1
    assert "magnet_refiner_2 v1" in broken.stdout and "FAILED" in broken.stdout
    assert "failed their probe" in broken.stderr
    repair_by_reload(supervisor, supervisor.check())
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_stop_after_a_stub_death_does_not_wait_out_tritons_exit_timeout(repository):
    """magnet_decode has two instances: killing one retires its healthy sibling, which Triton
    sometimes never finalises (its unload waits on the dead one). It must be gone soon after (ended
    by Triton, or killed once idle) and must not hold the stop up."""
    from magnet_triton.server.supervisor import Supervisor

    server = start_server(repository, "stop")
    try:
        supervisor = Supervisor(server, probe_interval_s=0, say=lambda line: None)
        before = {s.pid for s in server.live_stubs() if s.model == io_spec.DECODE_MODEL}
        killed = kill_one_stub(server, io_spec.DECODE_MODEL)
        repair_by_reload(supervisor, supervisor.check())
        sibling = (before - {killed}).pop()
        assert sibling not in {s.pid for s in server.live_stubs()}, "the old instance still counts"
        assert ensemble_request(server).shape == (60, 90)
        deadline = time.monotonic() + 30
        while sibling in {s.pid for s in server.live_stubs(include_retired=True)}:
            assert time.monotonic() < deadline, "the retired stub neither exited nor was reaped"
            server.reap_retired(idle_s=1.0)
            time.sleep(0.2)
        assert ensemble_request(server).shape == (60, 90)
    finally:
        started = time.monotonic()
        server.stop()
        stopped_in = time.monotonic() - started
    # Triton alone takes its 30 s exit timeout here (the dead instance never finishes unloading).
    assert stopped_in < 15, f"stop took {stopped_in:.1f} s"


def test_the_reaper_kills_an_idle_retired_process_and_spares_a_busy_one(tmp_path):
    from magnet_triton.server import TritonServer

    server = TritonServer(tmp_path)
    idle = subprocess.Popen(["sleep", "120"])
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        now = time.monotonic()
        server._retired = {idle.pid: (0, now - 10), busy.pid: (0, now - 10)}
        from magnet_triton.server.stubs import cpu_ticks

        deadline = time.monotonic() + 30
        while (cpu_ticks(busy.pid) or 0) <= 5:  # beyond the idle budget: 2 % of 1 s is 2 ticks
            assert time.monotonic() < deadline, "the busy loop used no CPU"
            time.sleep(0.05)
        assert server.reap_retired(idle_s=1.0) == [idle.pid]
        assert idle.wait(timeout=10) == -signal.SIGKILL
        assert busy.poll() is None and busy.pid in server._retired
    finally:
        for proc in (idle, busy):
            proc.kill()
            proc.wait()


def test_a_supervisor_does_not_bring_back_a_server_its_owner_stopped(repository):
    from magnet_triton.server.supervisor import Supervisor

    server = start_server(repository, "owner-stop")
    supervisor = Supervisor(server, probe_interval_s=0, say=lambda line: None)
    server.stop()
    # A clean stop is not cut short (a server that never reloaded a model ends by itself, status 0).
    assert server.exit_status == 0
    assert supervisor.step() == []
    supervisor.run()  # returns at once: the server is stopped
    assert not server.is_running() and supervisor.repairs == []
