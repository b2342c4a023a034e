"""``TritonServer``: one ``tritonserver`` process serving a model repository, as a context manager.

The server runs inside the current Python environment: this environment's ``bin`` goes first on
``PATH``, which is how the embedded interpreter of each Python-backend stub finds the virtual
environment (its ``pyvenv.cfg``), so ``model.py`` files import the caller's packages, editable installs
included. Readiness, the model index and model control go over gRPC (``tritonclient.grpc``), the one
endpoint that is always served: HTTP is off unless asked for (see :mod:`.access` for why).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from magnet_triton.errors import MagnetError
from magnet_triton.server.access import AdminKey, GrpcTls
from magnet_triton.server.allocator import Allocator
from magnet_triton.server.install import ServerInstall, find_tritonserver
from magnet_triton.server.stubs import Stub, cpu_ticks, live_stubs

log = logging.getLogger(__name__)

MIB = 1024 * 1024
#: Python-backend shared memory per model instance. Triton's own default (1 MiB, growing by 1 MiB) makes
#: every large image grow the pool in many small steps; 64 MiB holds a float32 3 x 2048 x 2048 image.
DEFAULT_PYTHON_SHM_BYTE_SIZE = 64 * MIB
DEFAULT_PYTHON_SHM_GROWTH_BYTE_SIZE = 64 * MIB
#: gRPC request/response objects Triton keeps for reuse (its default 8). Each keeps the capacity of the
#: largest messages it held (a 2048 x 1024 answer is 12 MB), so at 8 the server's memory climbed for the
#: whole of a soak; at 1 it stays near its level (benchmarks/RESULTS.md). A request here takes seconds,
#: so allocating its objects afresh costs nothing measurable. A --triton-arg given later overrides it.
GRPC_INFER_ALLOCATION_POOL_SIZE = 1
#: How many lines of the server log a startup error quotes.
LOG_TAIL_LINES = 40
_ERROR_LINE = re.compile(r"^E\d{4} ")
#: Errors the bundled server always logs on a machine without a GPU.
_HARMLESS = ("CudaDriverHelper has not been initialized",)
#: Seconds ``stop()`` still waits, on a server that had a model reloaded, once every Python-backend stub
#: left is a retired one (see :meth:`TritonServer.reload_model`). Triton's unload of a model one of whose
#: stubs was killed never returns, so without this a stop after a stub death always waits out
#: ``--exit-timeout-secs`` (30 s). A clean server is never cut short: it finalises models for a few
#: seconds after their stubs exit.
STOP_GRACE_AFTER_STUBS_S = 5.0
#: A retired stub that has used (almost) no CPU for this long has finished its last request: it is
#: killed. Long, since a pipeline waiting on its networks' answers is idle meanwhile.
RETIRED_STUB_IDLE_S = 60.0
#: "Almost no CPU": an idle stub's health checks use about 0.1 % of a core.
IDLE_CPU_FRACTION = 0.02


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (another process may still take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _group_outlives(pgid: int, *, timeout_s: float) -> bool:
    """Wait for process group ``pgid`` to empty; True if it still has members after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        if time.monotonic() > deadline:
            return True
        time.sleep(0.05)


def _warn_if_numpy2() -> None:
    try:
        version = importlib.metadata.version("numpy")
    except importlib.metadata.PackageNotFoundError:
        return
    if int(version.split(".")[0]) >= 2:
        log.warning(
            "NumPy %s is installed in this environment; the bundled Python backend then sends BLS inputs "
            "built from numpy arrays of 9 KiB and more as empty buffers (the composing model fails with "
            "'input byte size mismatch'). Install numpy<2.",
            version,
        )


def check_backends(repository: Path, install: ServerInstall) -> None:
    """Refuse, before starting, a repository whose networks need a Triton backend ``install`` lacks.

    Only repositories written by ``magnet-triton export`` are checked (their manifest names the runtime);
    a server whose backend folder cannot be seen (the binary's default) is left to report for itself.
    """
    from magnet_triton.runtimes import get_runtime

    manifest = repository / "magnet_repository.json"
    if install.backend_dir is None or not manifest.is_file():
        return
    try:
        target, engine = json.loads(manifest.read_text())["runtime"].split("/", 1)
        runtime = get_runtime(target, engine)
    except (OSError, ValueError, KeyError, MagnetError):
        return  # not ours to judge: the server reports what it cannot load
    if runtime.backend is not None and not (install.backend_dir / runtime.backend).is_dir():
        have = sorted(p.name for p in install.backend_dir.iterdir() if p.is_dir())
        raise MagnetError(
            f"{repository} runs its networks on Triton's {runtime.backend} backend ({runtime.name}), "
            f"which this tritonserver does not have (its backends: {have}): serve it from the NGC "
            f"tritonserver container, or export for a Python-backend runner (--engine "
            f"{runtime.engine.removeprefix('triton-')})"
        )


def _wait_for_exit(
    proc: subprocess.Popen[bytes], timeout_s: float, *, watch_stubs: bool, retired: set[int]
) -> str:
    """Wait for a terminated server to exit: ``exited``, ``stuck`` or ``timeout``.

    With ``watch_stubs``, a server that outlives its last Python-backend stub (retired ones aside) by
    :data:`STOP_GRACE_AFTER_STUBS_S` is ``stuck`` (see there).
    """
    deadline = time.monotonic() + timeout_s
    stubs_gone_at: float | None = None
    while proc.poll() is None:
        now = time.monotonic()
        if now > deadline:
            return "timeout"
        if watch_stubs and stubs_gone_at is None and all(s.pid in retired for s in live_stubs(proc.pid)):
            stubs_gone_at = now
        if stubs_gone_at is not None and now - stubs_gone_at > STOP_GRACE_AFTER_STUBS_S:
            return "stuck"
        time.sleep(0.1)
    return "exited"


class TritonServer:
    """A ``tritonserver`` process serving one model repository; a context manager.

    ``start()`` returns once the server is live and every model is ready. Ports left as None are
    picked free on ``host``; a port clash at startup is retried with new free ports.

    Args:
        model_repository: the folder passed as ``--model-repository``.
        grpc_port, http_port, metrics_port: ports; None picks free ones.
        host: address the endpoints bind to; 127.0.0.1 keeps the server local.
        http: serve HTTP too. Off by default: Triton's HTTP endpoint allocates an input of the shape a
            request declares before checking its body (a 97-byte request declaring 65536 x 65536 x 3
            bytes costs 12 GB), which its gRPC endpoint refuses at once.
        admin_key: close Triton's shared-memory, model-repository, logging and trace APIs behind this
            header (:class:`~magnet_triton.server.access.AdminKey`); None leaves them open.
        tls: serve gRPC over TLS with this certificate.
        model_control: start in Triton's explicit model-control mode (every model loaded at start),
            so :meth:`reload_model` can replace a model whose instance died.
        startup_timeout_s: seconds to wait for readiness.
        stop_timeout_s: seconds to wait after SIGTERM before SIGKILL.
        extra_args: more ``tritonserver`` arguments, appended last.
        log_path: file for the server's stdout and stderr; None uses a temporary file.
        python_shm_default_byte_size, python_shm_growth_byte_size: Python-backend shared memory
            per model instance (``--backend-config=python,shm-...``); /dev/shm must hold them.
        install: the server to run; None calls :func:`find_tritonserver`.
        allocator: the malloc to preload into the server and its stubs
            (:func:`~magnet_triton.server.allocator.choose_allocator`); None keeps this process's
            ``LD_PRELOAD``.
    """

    def __init__(
        self,
        model_repository: str | os.PathLike[str],
        *,
        grpc_port: int | None = None,
        http_port: int | None = None,
        metrics_port: int | None = None,
        host: str = "127.0.0.1",
        startup_timeout_s: float = 120.0,
        stop_timeout_s: float = 40.0,
        extra_args: Sequence[str] = (),
        log_path: str | os.PathLike[str] | None = None,
        python_shm_default_byte_size: int = DEFAULT_PYTHON_SHM_BYTE_SIZE,
        python_shm_growth_byte_size: int = DEFAULT_PYTHON_SHM_GROWTH_BYTE_SIZE,
        install: ServerInstall | None = None,
        http: bool = False,
        admin_key: AdminKey | None = None,
        tls: GrpcTls | None = None,
        model_control: bool = False,
        allocator: Allocator | None = None,
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        #: preloaded into ``tritonserver`` and so into every stub it starts; None leaves LD_PRELOAD as is.
        self.allocator = allocator
        self._requested_ports = {"grpc": grpc_port, "metrics": metrics_port}
        if http:
            self._requested_ports["http"] = http_port
        self.http = http
        self.admin_key = admin_key
        self.tls = tls
        self.model_control = model_control
        self._client: Any = None
        self._stopped = False
        #: ``tritonserver``'s exit status after :meth:`stop` (negative: the signal that ended it).
        self.exit_status: int | None = None
        #: Whether a model was reloaded (a stub died, most likely): then stop() watches for the hang.
        self._reloaded = False
        #: Stubs of instances replaced by :meth:`reload_model`: pid -> (CPU ticks, time) at the start of
        #: the window in which it is watched for idleness.
        self._retired: dict[int, tuple[int, float]] = {}
        self._ports: dict[str, int] = {}
        self.host = host
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.extra_args = tuple(extra_args)
        self._user_log_path = Path(log_path) if log_path is not None else None
        self._log_path: Path | None = None
        self._final_log = ""
        self.python_shm_default_byte_size = python_shm_default_byte_size
        self.python_shm_growth_byte_size = python_shm_growth_byte_size
        self._install = install
        self._proc: subprocess.Popen[bytes] | None = None
        # A prefix of our own for the stubs' /dev/shm regions, so stop() can remove what a killed
        # server leaves behind without touching other servers' regions.
        self._shm_prefix = f"magnet_triton_{os.getpid()}_{uuid.uuid4().hex[:8]}_"
        #: Servers started so far by this object (a restart is the second).
        self._launches = 0

    # -- endpoints ---------------------------------------------------------------------------------
    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    def _url(self, name: str) -> str:
        if name not in self._ports:
            raise RuntimeError("the server has not been started")
        return f"{self._client_host}:{self._ports[name]}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint, as ``tritonclient.grpc`` takes it."""
        return self._url("grpc")

    @property
    def http_url(self) -> str:
        """``host:port`` of the HTTP endpoint, as ``tritonclient.http`` takes it (only with ``http=True``)."""
        if not self.http:
            raise RuntimeError("this server does not serve HTTP (start it with http=True)")
        return self._url("http")

    @property
    def metrics_url(self) -> str:
        """``http://host:port/metrics``, the Prometheus endpoint."""
        return f"http://{self._url('metrics')}/metrics"

    @property
    def log_path(self) -> Path | None:
        """The file the running server logs to (None before start, or after stop for a temporary log)."""
        return self._log_path

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def stopped(self) -> bool:
        """True once :meth:`stop` was called (until the next :meth:`start`): gone on purpose."""
        return self._stopped

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        """Everything the server has written to stdout and stderr so far."""
        if self._log_path is not None and self._log_path.is_file():
            return self._log_path.read_text(errors="replace")
        return self._final_log

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the server log."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- lifecycle ---------------------------------------------------------------------------------
    def command(self) -> list[str]:
        """The ``tritonserver`` command line for the current ports."""
        install = self._install or find_tritonserver()
        cmd = [
            str(install.binary),
            f"--model-repository={self.model_repository}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self._ports['grpc']}",
            *(
                [f"--http-address={self.host}", f"--http-port={self._ports['http']}"]
                if self.http
                else ["--allow-http=false"]
            ),
            f"--grpc-infer-allocation-pool-size={GRPC_INFER_ALLOCATION_POOL_SIZE}",
            "--allow-metrics=true",
            f"--metrics-address={self.host}",
            f"--metrics-port={self._ports['metrics']}",
            f"--backend-config=python,shm-default-byte-size={self.python_shm_default_byte_size}",
            f"--backend-config=python,shm-growth-byte-size={self.python_shm_growth_byte_size}",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
        ]
        if self.model_control:
            cmd += ["--model-control-mode=explicit", "--load-model=*"]
        if self.admin_key is not None:
            cmd += self.admin_key.tritonserver_args(http=self.http)
        if self.tls is not None:
            cmd += self.tls.tritonserver_args()
        if install.backend_dir is not None:
            cmd.insert(2, f"--backend-directory={install.backend_dir}")
        if install.cache_dir is not None:
            cmd.insert(3, f"--cache-directory={install.cache_dir}")
        return [*cmd, *self.extra_args]

    def command_for_log(self, cmd: Sequence[str] | None = None) -> str:
        """The command line as a log may show it: the admin key replaced by ``<admin key>``.

        Triton takes the key only as an argument, but logs are read by more people than ``ps`` is.
        """
        shown = " ".join(self.command() if cmd is None else cmd)
        return shown if self.admin_key is None else shown.replace(self.admin_key.value, "<admin key>")

    def environment(self) -> dict[str, str]:
        """The server's environment: this one, with this Python's ``bin`` and the install's libraries first."""
        install = self._install or find_tritonserver()
        env = dict(os.environ)
        # The stub's embedded interpreter locates its prefix through PATH: putting this environment's
        # bin first makes it find this venv's pyvenv.cfg and so its site-packages (and .pth files).
        env["PATH"] = os.pathsep.join([str(Path(sys.exec_prefix) / "bin"), env.get("PATH", "")])
        libs = [str(p) for p in install.library_paths]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        if libs:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
        if self.allocator is not None:
            preload = self.allocator.preload(env.get("LD_PRELOAD"))
            if preload:
                env["LD_PRELOAD"] = preload
        return env

    def start(self) -> TritonServer:
        """Start the server and wait until it is live and all models are ready.

        Raises:
            MagnetError: the repository is missing, no server is installed, or the server exited or
                was not ready within ``startup_timeout_s``; the message quotes the end of its log.
        """
        if self._proc is not None:
            raise RuntimeError("the server is already started")
        self._stopped = False
        if not self.model_repository.is_dir():
            raise MagnetError(f"model repository {self.model_repository} is not a folder")
        _warn_if_numpy2()
        if self._install is None:
            self._install = find_tritonserver()
        check_backends(self.model_repository, self._install)
        attempts = 1 if all(p is not None for p in self._requested_ports.values()) else 3
        for attempt in range(attempts):
            self._launch()
            try:
                self._wait_ready()
                return self
            except MagnetError:
                port_clash = "already in use" in self.log_text()
                self.stop()
                if not (port_clash and attempt + 1 < attempts):
                    raise
                log.info("port clash at startup, retrying with other free ports")
            except BaseException:  # Ctrl-C while waiting: leave no server behind
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _launch(self) -> None:
        self._ports = {
            name: port if port is not None else free_port(self._client_host)
            for name, port in self._requested_ports.items()
        }
        if self._user_log_path is not None:
            self._user_log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_path = self._user_log_path
        else:
            fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        cmd = self.command()
        log.info("starting %s", self.command_for_log(cmd))
        # A restart appends: the end of the log of the server that died is what says why.
        restarting = self._user_log_path is not None and self._launches > 0
        self._launches += 1
        with open(self._log_path, "ab" if restarting else "wb") as log_file:
            if restarting:
                log_file.write(
                    f"\n==== magnet-triton: tritonserver restarted (launch {self._launches}) ====\n".encode()
                )
                log_file.flush()
            # A session of its own: Ctrl-C in a terminal reaches us, not the server (we stop it in
            # order), and stop() can kill the stubs with the server as one process group.
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                start_new_session=True,
            )

    def new_client(self) -> Any:
        """A new ``tritonclient.grpc`` client of this server (TLS as served), for a thread of its own."""
        import tritonclient.grpc as grpc

        tls = self.tls.client_kwargs() if self.tls is not None else {}
        return grpc.InferenceServerClient(self.grpc_url, **tls)

    def admin_client(self) -> Any:
        """This server's own ``tritonclient.grpc`` client (one thread's); pass :meth:`admin_headers`."""
        if self._client is None:
            self._client = self.new_client()
        return self._client

    def admin_headers(self) -> dict[str, str] | None:
        """The headers that open the restricted APIs, None when they are open."""
        return self.admin_key.headers() if self.admin_key is not None else None

    def is_ready(self) -> bool:
        """Triton's own readiness (strict: every model ready); False when it does not answer."""
        from tritonclient.utils import InferenceServerException

        try:
            return bool(self.admin_client().is_server_ready(client_timeout=2.0))
        except InferenceServerException:
            return False

    def _wait_ready(self) -> None:
        assert self._proc is not None
        started = time.monotonic()
        deadline = started + self.startup_timeout_s
        while True:
            code = self._proc.poll()
            if code is not None:
                raise MagnetError(self._startup_failure(f"tritonserver exited with status {code}"))
            # Triton starts strict-ready (the default): ready only once every model is ready.
            if self.is_ready():
                log.info("tritonserver ready in %.1f s", time.monotonic() - started)
                return
            if time.monotonic() > deadline:
                raise MagnetError(
                    self._startup_failure(f"tritonserver was not ready after {self.startup_timeout_s:.0f} s")
                )
            time.sleep(0.2)

    def _startup_failure(self, what: str) -> str:
        lines = self.log_text().splitlines()
        tail = lines[-LOG_TAIL_LINES:]
        # Model-load errors sit in the model table and E-lines, often above the last lines.
        earlier = [
            line
            for line in lines[:-LOG_TAIL_LINES]
            if "UNAVAILABLE" in line or (_ERROR_LINE.match(line) and not any(h in line for h in _HARMLESS))
        ]
        text = "\n".join([*earlier, *(["..."] if earlier else []), *tail])
        hints = []
        if "already in use" in text:
            ports = ", ".join(f"{name} {port}" for name, port in self._ports.items())
            hints.append(f"a port is already in use ({ports}): choose others, or leave them unset")
        if "shm" in text.lower() or "shared memory" in text.lower():
            hints.append(
                "/dev/shm must hold python_shm_default_byte_size per model instance (in Docker, raise --shm-size)"
            )
        return f"{what}; end of its log ({self._log_path}):\n{text}" + "".join(f"\nhint: {h}" for h in hints)

    def model_states(self) -> dict[tuple[str, str], str]:
        """Each model version in the repository index and its state (``READY``, ``UNLOADING``, ...)."""
        from tritonclient.utils import InferenceServerException

        try:
            index = self.admin_client().get_model_repository_index(
                headers=self.admin_headers(), as_json=True, client_timeout=5.0
            )
        except InferenceServerException as e:
            raise MagnetError(f"could not read the model index from {self.grpc_url}: {e.message()}") from e
        return {(m["name"], m.get("version", "")): m.get("state", "") for m in index.get("models", [])}

    def ready_models(self) -> list[str]:
        """Names of the models that are ready, from the repository index."""
        return sorted({name for (name, _), state in self.model_states().items() if state == "READY"})

    def live_stubs(self, *, include_retired: bool = False) -> list[Stub]:
        """The server's running Python-backend stubs (empty when it is not running).

        Unless ``include_retired``, without the stubs of instances :meth:`reload_model` replaced.
        """
        stubs = live_stubs(self._proc.pid) if self.is_running() and self._proc is not None else []
        return stubs if include_retired else [s for s in stubs if s.pid not in self._retired]

    def reap_retired(self, idle_s: float = RETIRED_STUB_IDLE_S) -> list[int]:
        """Kill the retired stubs that used almost no CPU over ``idle_s``; returns their pids.

        When a model with several instances is reloaded because one stub died, Triton's unload never
        finishes (it waits on the dead one), so the healthy old instances are never finalised: their
        stubs would idle, holding their memory, until the server stops. They are left to finish the
        requests they had (those use CPU) and killed once idle.
        """
        now, killed = time.monotonic(), []
        budget = IDLE_CPU_FRACTION * idle_s * os.sysconf("SC_CLK_TCK")
        for pid, (ticks, since) in list(self._retired.items()):
            current = cpu_ticks(pid)
            if current is None:
                del self._retired[pid]
            elif now - since < idle_s:
                continue
            elif current - ticks > budget:  # still working: watch the next window
                self._retired[pid] = (current, now)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                del self._retired[pid]
                killed.append(pid)
        return killed

    def reload_model(self, model: str) -> float:
        """Unload ``model`` and load it again; returns the seconds it took.

        The unload makes Triton's strict readiness false at once (the model leaves the ready set) and
        returns without waiting, which matters: an instance whose stub was killed never finishes
        unloading. The load then starts fresh instances beside it and returns once they are ready.
        Needs ``model_control=True``.

        Raises:
            MagnetError: the server refused or failed the load; its message.
        """
        from tritonclient.utils import InferenceServerException

        if not self.model_control:
            raise RuntimeError("reload_model needs a server started with model_control=True")
        started = time.monotonic()
        for stub in self.live_stubs():
            if stub.model == model:
                self._retired[stub.pid] = (cpu_ticks(stub.pid) or 0, started)
        self._reloaded = True
        client, headers = self.admin_client(), self.admin_headers()
        try:
            client.unload_model(model, headers=headers)
            client.load_model(model, headers=headers)
        except InferenceServerException as e:
            raise MagnetError(f"could not reload {model}: {e.message()}") from e
        return time.monotonic() - started

    def restart(self) -> None:
        """Stop the server and start it again on the same ports (the last resort of supervision)."""
        ports = dict(self._ports)
        self.stop()
        self._requested_ports = {name: ports.get(name) for name in self._requested_ports}
        self.start()

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL to its process group after ``stop_timeout_s``.

        Waits for the process (no zombie), kills stubs that outlive it and removes their shared
        memory. Safe to call more than once.
        """
        self._stopped = True  # first: a supervisor that sees the process go must not bring it back
        proc, self._proc = self._proc, None
        retired = set(self._retired)
        self._retired = {}
        reloaded, self._reloaded = self._reloaded, False
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                ended = _wait_for_exit(proc, self.stop_timeout_s, watch_stubs=reloaded, retired=retired)
                if ended == "stuck":
                    log.info(
                        "tritonserver still unloading an instance whose stub is gone; not waiting for it"
                    )
                elif ended == "timeout":
                    log.warning("tritonserver did not stop in %.0f s, killing it", self.stop_timeout_s)
                if ended != "exited":
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            self.exit_status = proc.returncode
            # Stubs are in the server's process group and exit soon after it; one that does not (the
            # server was killed, or a stub was still initialising) would keep its shared memory.
            if _group_outlives(proc.pid, timeout_s=2.0):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                    log.warning(
                        "killed processes (Python-backend stubs) left in tritonserver's process group"
                    )
            for leftover in Path("/dev/shm").glob(f"{self._shm_prefix}*"):
                with contextlib.suppress(OSError):
                    leftover.unlink()
        if self._log_path is not None:
            self._final_log = self.log_text()
            if self._user_log_path is None:
                with contextlib.suppress(OSError):
                    self._log_path.unlink()
            self._log_path = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
