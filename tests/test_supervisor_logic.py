"""The supervisor's judgements without a server: which probe failures are faults, and that what the
probe thread saw during a repair does not call for another one (a restart loop, seen in the soak)."""

from __future__ import annotations

from magnet_triton.server.supervisor import Fault, Supervisor, is_probe_fault


def test_only_a_probe_failure_of_the_model_itself_is_a_fault():
    assert is_probe_fault(
        "Stub process 'magnet_decode_0_0' is not healthy.", timed_out=False, progressed=False
    )
    assert is_probe_fault("", timed_out=True, progressed=False)  # no answer, and nothing else finished
    assert not is_probe_fault("", timed_out=True, progressed=True)  # busy with real work
    assert not is_probe_fault(
        "in ensemble 'magnet', Exceeds maximum queue size", timed_out=False, progressed=False
    )
    # The pipeline's answer while a network it calls is reloading: the network's fault, not the pipeline's.
    blamed = "magnet_pipeline is unavailable: magnet_backbone (version -1) failed: Model 'magnet_backbone' is not ready."
    assert not is_probe_fault(blamed, timed_out=False, progressed=False)


class RestartingServer:
    """Just what :class:`Supervisor` calls; its restart lets the probe thread report a refused
    connection meanwhile, as a real restart does."""

    model_control = True
    stopped = False

    def __init__(self) -> None:
        self.supervisor: Supervisor | None = None
        self.restarts = 0

    def live_stubs(self, include_retired: bool = False) -> list:
        return []

    def restart(self) -> None:
        self.restarts += 1
        assert self.supervisor is not None
        # The probe thread, mid-restart: it captured the generation after the repair began.
        with self.supervisor._lock:
            self.supervisor._probed.append(
                Fault("tritonserver", "does not answer probes: connection refused")
            )


def test_faults_probed_during_a_repair_are_dropped_with_it():
    server = RestartingServer()
    supervisor = Supervisor(server, say=lambda line: None)  # type: ignore[arg-type]
    server.supervisor = supervisor
    supervisor.repair([Fault("tritonserver", "the process exited")])
    assert server.restarts == 1
    assert supervisor.check() == []  # before the fix: the refused probe, and a second restart
