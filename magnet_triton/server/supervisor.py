"""Supervision of a running :class:`~magnet_triton.server.process.TritonServer`: notice a dead or stuck
model instance, take the server out of readiness, and bring the model back.

Triton does neither on its own. A killed Python-backend stub (the out-of-memory killer picks the
backbone's, the largest process) leaves its model "ready" while every request routed to it fails, for
as long as the server runs. The supervisor looks two ways:

- **stubs** (every ``poll_interval_s``, free): each model's count of live stub processes, against the
  count it had when last known good. A missing stub is a fault within one poll.
- **probes** (every ``probe_interval_s``): a real, smallest inference on every model version
  (:mod:`.probe`). A probe that fails is a fault; one that gets no answer in time is one only if the
  model finished no other request meanwhile (a busy model is slow, a stuck one is silent).

A faulted model is reloaded (:meth:`TritonServer.reload_model`: the unload makes the server not ready
at once, the load returns once fresh instances answer). When that fails, or ``tritonserver`` itself
died, the server is restarted on the same ports.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from magnet_triton.errors import MagnetError
from magnet_triton.server.probe import probe_server
from magnet_triton.server.process import TritonServer
from magnet_triton.server.stubs import count_by_model

log = logging.getLogger(__name__)

#: Probe errors that mean the model is busy, not broken: Triton turned the probe away from a full
#: queue, or it waited in the queue past its timeout.
BUSY = ("Exceeds maximum queue size", "Request timeout expired")
#: A probe error that blames another model: the pipeline answered UNAVAILABLE because a network it
#: calls is down ("magnet_pipeline is unavailable: magnet_backbone ... is not ready"). That network's
#: own stubs and probe find it; reloading the pipeline too would only take it down meanwhile.
DEPENDENCY_DOWN = ("is unavailable:",)


def is_probe_fault(error: str, timed_out: bool, progressed: bool) -> bool:
    """Whether a failed probe (its ``error``) says the probed model itself is broken.

    Not when it was busy (turned away from a full queue, timed out in it, or timed out while it
    finished other requests), nor when it only reports a model it depends on as down.
    """
    if any(words in error for words in (*BUSY, *DEPENDENCY_DOWN)):
        return False
    return not (timed_out and progressed)


@dataclass(frozen=True)
class Fault:
    """A model found broken, and how."""

    model: str
    reason: str

    def __str__(self) -> str:
        return f"{self.model}: {self.reason}"


@dataclass(frozen=True)
class Repair:
    """What was done about a fault (``reloaded`` the model, ``restarted`` the server), and how long it took."""

    fault: Fault
    action: str
    seconds: float


class Supervisor:
    """Checks ``server`` and repairs it; call :meth:`step` in a loop, or :meth:`run` (``serve`` does).

    Stubs are looked at in :meth:`step`; probes run in a thread of their own (:meth:`run` starts it),
    since a probe may wait behind real work for up to ``probe_timeout_s`` and a dead stub must still be
    seen within one poll. Repairs happen in :meth:`step` only, one at a time.

    Args:
        server: a started server, with ``model_control=True`` (so a model can be reloaded).
        poll_interval_s: the pause :meth:`run` makes between steps.
        probe_interval_s: seconds between probe rounds; 0 turns probing off (stubs only).
        probe_timeout_s: how long one probe request may take before the model's progress is checked.
        say: where events go (a line each), besides the log.
    """

    def __init__(
        self,
        server: TritonServer,
        *,
        poll_interval_s: float = 0.5,
        probe_interval_s: float = 30.0,
        probe_timeout_s: float = 30.0,
        say: Callable[[str], None] = print,
    ) -> None:
        if not server.model_control:
            raise ValueError("supervision needs a server started with model_control=True")
        self.server = server
        self.poll_interval_s = poll_interval_s
        self.probe_interval_s = probe_interval_s
        self.probe_timeout_s = probe_timeout_s
        self._say = say
        self._expected_stubs = count_by_model(server.live_stubs())
        #: Faults the probe thread found, for the next step to repair.
        self._probed: list[Fault] = []
        self._lock = threading.Lock()
        #: Bumped by every repair: a probe round that overlapped one is not believed.
        self._generation = 0
        #: Every repair made, oldest first.
        self.repairs: list[Repair] = []

    def _event(self, text: str) -> None:
        log.warning("%s", text)
        self._say(f"supervisor: {text}")

    # -- looking ------------------------------------------------------------------------------------
    def stub_faults(self) -> list[Fault]:
        """Models with fewer live stubs than they had when last known good."""
        live = count_by_model(self.server.live_stubs())
        return [
            Fault(model, f"{expected - live.get(model, 0)} of its {expected} stub processes died")
            for model, expected in sorted(self._expected_stubs.items())
            if live.get(model, 0) < expected
        ]

    def probe_faults(self) -> list[Fault]:
        """Models whose probe failed, or got no answer while the model finished nothing else.

        A model that is busy is not faulty: a probe Triton turned away from a full queue, or one that
        timed out while the model completed other requests, counts as an answer; so does one that only
        says a model it calls is down (:func:`is_probe_fault`).
        """
        headers = self.server.admin_headers()
        # A client of its own: probes run in their own thread, beside the repairs' calls.
        with self.server.new_client() as client:
            before = _success_counts(client, headers)
            faults = []
            for result in probe_server(client, timeout_s=self.probe_timeout_s, headers=headers):
                if result.ok:
                    continue
                progressed = _success_counts(client, headers).get(result.model, 0) > before.get(
                    result.model, 0
                )
                if not is_probe_fault(result.error, result.timed_out, progressed):
                    continue
                what = "got no answer" if result.timed_out else "failed"
                faults.append(Fault(result.model, f"probe {what}: {result.error}"))
        return faults

    def _probe_round(self) -> None:
        generation = self._generation
        try:
            faults = self.probe_faults()
        except Exception as e:  # the server does not answer at all: restart it
            faults = [Fault("tritonserver", f"does not answer probes: {e}")]
        with self._lock:
            if generation == self._generation:  # no repair meanwhile, so the answers are of now
                self._probed.extend(faults)

    def check(self) -> list[Fault]:
        """Stub faults, and the probe faults found since the last check. One fault per model."""
        with self._lock:
            probed, self._probed = self._probed, []
        unique: dict[str, Fault] = {}
        for fault in [*self.stub_faults(), *probed]:
            unique.setdefault(fault.model, fault)
        return list(unique.values())

    # -- repairing ----------------------------------------------------------------------------------
    def _record(self, fault: Fault, action: str, started: float) -> None:
        seconds = time.monotonic() - started
        self.repairs.append(Repair(fault, action, seconds))
        self._event(f"{fault.model} {action}, serving again after {seconds:.1f} s")

    def repair(self, faults: list[Fault]) -> None:
        """Reload each faulted model; restart the server when a reload fails or the server is gone."""
        for fault in faults:
            with self._lock:
                self._generation += 1
            started = time.monotonic()
            if fault.model == "tritonserver":
                self._event(f"{fault}; restarting it")
                self.server.restart()
                self._record(fault, "restarted", started)
                continue
            self._event(f"{fault}; reloading {fault.model}")
            try:
                self.server.reload_model(fault.model)
                self._record(fault, "reloaded", started)
            except MagnetError as e:
                self._event(f"reload failed ({e}); restarting tritonserver")
                self.server.restart()
                self._record(fault, "restarted", started)
        with self._lock:
            # What the probe thread saw during the repair was the server mid-repair (a restart refuses
            # connections for seconds): believed, it would call for another restart, and so on.
            self._generation += 1
            self._probed = []
        self._expected_stubs = count_by_model(self.server.live_stubs())

    def step(self) -> list[Fault]:
        """One look, and the repairs it calls for; returns the faults found."""
        if self.server.stopped:  # its owner stopped it: nothing to repair
            return []
        if not self.server.is_running():
            faults = [Fault("tritonserver", "the process exited")]
        else:
            for pid in self.server.reap_retired():
                log.info("killed idle stub %d of a replaced instance", pid)
            faults = self.check()
        if faults:
            self.repair(faults)
        return faults

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        """Step every ``poll_interval_s`` (and probe every ``probe_interval_s``) until ``should_stop()``."""
        done = threading.Event()

        def probe_loop() -> None:
            while not done.wait(self.probe_interval_s):
                self._probe_round()

        prober = threading.Thread(target=probe_loop, name="magnet-probe", daemon=True)
        if self.probe_interval_s > 0:
            prober.start()
        try:
            while not should_stop() and not self.server.stopped:
                self.step()
                time.sleep(self.poll_interval_s)
        finally:
            done.set()


def _success_counts(client: object, headers: dict[str, str] | None) -> dict[str, int]:
    """Each model's count of successful inferences, from Triton's statistics (all versions)."""
    stats = client.get_inference_statistics(headers=headers, as_json=True)  # type: ignore[attr-defined]
    counts: dict[str, int] = {}
    for model in stats.get("model_stats", []):
        success = int(model.get("inference_stats", {}).get("success", {}).get("count", 0) or 0)
        counts[model["name"]] = counts.get(model["name"], 0) + success
    return counts
