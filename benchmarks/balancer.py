"""Several ``tritonserver`` replicas on loopback behind Debian's ``nginx`` as a gRPC (HTTP/2) balancer.

Used by the replica test (``tests/test_deploy_replicas.py``) and benchmark (``benchmarks/replicas.py``),
and the reference for a real deployment's balancer (deploy/README.md).

Why an L7 balancer: a gRPC client keeps one HTTP/2 connection and multiplexes every call on it, so a
TCP (L4) balancer, a Kubernetes ``Service`` included, pins a client to one replica for the life of the
connection. nginx's ``grpc_pass`` ends the client's HTTP/2 connection and picks an upstream per call.

What the configuration does when a replica dies:

- passive health checks: an upstream that fails ``max_fails`` times is left out for ``fail_timeout``;
- ``grpc_next_upstream error timeout``: a call whose upstream refused the connection (a dead replica)
  goes to the next upstream. A call already sent to a replica that then dies is *not* moved: nginx
  streams a gRPC request body to the upstream unbuffered, and never retries a request once such a body
  went out (``non_idempotent`` does not change that). It gets a 502, which the gRPC client sees as
  UNAVAILABLE and retries (the project's client does, :mod:`magnet_triton.client.retry`), and by then the
  passive check has taken the dead replica out. A segmentation has no side effect, so a retried call
  costs time, never a wrong answer.
- nginx cannot retry on a gRPC *status* (Triton's UNAVAILABLE for a full queue travels as HTTP 200 with
  a ``grpc-status: 14`` trailer); the client's retry covers that too.

nginx runs from a folder of its own (``nginx -p DIR -c DIR/nginx.conf -g 'daemon off;'``): pid file,
logs and temporary files inside it, so it needs no system configuration and no root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from magnet_triton.errors import MagnetError
from magnet_triton.server import TritonServer, free_port

#: The access log line: the upstream(s) each call went to (two when nginx moved it to the next one),
#: the HTTP status, the gRPC status from the upstream's trailers, the seconds it took.
ACCESS_LOG_FORMAT = "$upstream_addr $status $upstream_trailer_grpc_status $request_time"

NGINX_CONF = """\
# Written by benchmarks/balancer.py: nginx as a gRPC balancer in front of tritonserver replicas.
{user}worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;

events {{
    worker_connections 1024;
}}

http {{
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    log_format upstreams '{log_format}';
    access_log {dir}/access.log upstreams;

    upstream triton {{
        # Passive health checks: one failed connection takes a replica out for fail_timeout.
{servers}
        # Reused HTTP/2 connections to the replicas (nginx opens one per call otherwise).
        keepalive 32;
    }}

    server {{
        listen {listen} http2;
        # Encoded images of any size; Triton itself checks what it accepts.
        client_max_body_size 0;
        client_body_buffer_size 16m;

        location / {{
            grpc_pass grpc://triton;
            grpc_connect_timeout {connect_timeout_s}s;
            grpc_read_timeout {read_timeout_s}s;
            grpc_send_timeout {read_timeout_s}s;
            # A refused connection or a connect timeout: the call goes to the next replica. A call that a
            # replica dies holding gets a 502 (UNAVAILABLE) for the client to retry (module docstring).
            grpc_next_upstream error timeout;
            grpc_next_upstream_tries {tries};
        }}
    }}
}}
"""


@dataclass(frozen=True)
class BalancerConfig:
    """The balancer's settings.

    Attributes:
        listen: ``host:port`` nginx listens on (HTTP/2 without TLS, as Triton's gRPC endpoint).
        upstreams: ``host:port`` of each replica's gRPC endpoint.
        max_fails, fail_timeout_s: the passive health check (failures within ``fail_timeout_s`` that take
            an upstream out for ``fail_timeout_s``).
        connect_timeout_s: seconds to connect to a replica before trying the next.
        read_timeout_s: seconds a replica may take to answer one call (MagNet on a CPU takes minutes).
    """

    listen: str
    upstreams: tuple[str, ...]
    max_fails: int = 1
    fail_timeout_s: int = 10
    connect_timeout_s: int = 2
    read_timeout_s: int = 600

    def render(self, folder: Path) -> str:
        """The ``nginx.conf`` text for a prefix folder ``folder``."""
        if not self.upstreams:
            raise MagnetError("a balancer needs at least one upstream")
        servers = "\n".join(
            f"        server {u} max_fails={self.max_fails} fail_timeout={self.fail_timeout_s}s;"
            for u in self.upstreams
        )
        # As root, nginx's workers would switch to `nobody`, who cannot enter a private temporary
        # folder (pytest's are 0700); as anyone else the directive is ignored, so it is left out.
        user = "user root;\n" if os.geteuid() == 0 else ""
        return NGINX_CONF.format(
            user=user,
            dir=folder,
            log_format=ACCESS_LOG_FORMAT,
            servers=servers,
            listen=self.listen,
            connect_timeout_s=self.connect_timeout_s,
            read_timeout_s=self.read_timeout_s,
            tries=len(self.upstreams),
        )


def find_nginx() -> Path:
    """The ``nginx`` binary: on PATH, else Debian's ``/usr/sbin/nginx`` (root's PATH only has sbin).

    Raises:
        MagnetError: none is installed; the message says how to install it.
    """
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise MagnetError("nginx is not installed: apt-get install nginx-light (Debian) or nginx")
    return Path(found)


def _accepts(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, int(port))) == 0


class NginxBalancer:
    """An ``nginx`` process balancing gRPC over ``config.upstreams``; a context manager.

    ``start()`` writes ``folder/nginx.conf`` and returns once nginx accepts connections on
    ``config.listen``; ``stop()`` shuts it down (SIGQUIT: finish the calls in flight, then exit).
    """

    def __init__(self, config: BalancerConfig, folder: Path, *, startup_timeout_s: float = 20.0) -> None:
        self.config = config
        self.folder = Path(folder).resolve()
        self.startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``host:port`` for a gRPC client."""
        return self.config.listen

    @property
    def access_log(self) -> Path:
        return self.folder / "access.log"

    def error_log_tail(self, lines: int = 20) -> str:
        path = self.folder / "error.log"
        text = path.read_text(errors="replace") if path.is_file() else ""
        return "\n".join(text.splitlines()[-lines:])

    def access_lines(self) -> list[list[str]]:
        """The access log's lines, split: upstream address(es) (comma-separated when nginx went on to the
        next upstream), HTTP status, gRPC status, seconds."""
        if not self.access_log.is_file():
            return []
        return [line.replace(", ", ",").split() for line in self.access_log.read_text().splitlines()]

    def start(self) -> NginxBalancer:
        binary = find_nginx()
        for sub in ("tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        conf = self.folder / "nginx.conf"
        conf.write_text(self.config.render(self.folder))
        cmd = [str(binary), "-p", str(self.folder), "-c", str(conf), "-g", "daemon off;"]
        with open(self.folder / "stderr.log", "wb") as stderr:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr, start_new_session=True
            )
        deadline = time.monotonic() + self.startup_timeout_s
        while not _accepts(self.config.listen):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                stderr_text = (self.folder / "stderr.log").read_text(errors="replace")
                raise MagnetError(
                    f"nginx did not start listening on {self.config.listen}: {stderr_text}\n"
                    f"{self.error_log_tail()}"
                )
            time.sleep(0.05)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def __enter__(self) -> NginxBalancer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_replicas(repository: Path, count: int, log_dir: Path) -> list[TritonServer]:
    """``count`` servers of ``repository``, each on free ports of its own, started side by side.

    Raises:
        MagnetError: one did not start; the others are stopped.
    """
    servers = [TritonServer(repository, log_path=log_dir / f"replica-{i}.log") for i in range(count)]
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(s.start) for s in servers]
        errors = [f.exception() for f in futures]
    failed = [e for e in errors if e is not None]
    if failed:
        for s in servers:
            s.stop()
        raise failed[0]
    return servers


@contextmanager
def balanced_replicas(
    repository: Path, folder: Path, *, count: int = 2, **config: Any
) -> Iterator[tuple[NginxBalancer, list[TritonServer]]]:
    """``count`` replicas of ``repository`` behind nginx (``folder`` holds its prefix and the logs)."""
    folder.mkdir(parents=True, exist_ok=True)
    servers = start_replicas(repository, count, folder)
    try:
        listen = f"127.0.0.1:{free_port()}"
        upstreams = tuple(s.grpc_url for s in servers)
        with NginxBalancer(BalancerConfig(listen, upstreams, **config), folder / "nginx") as balancer:
            yield balancer, servers
    finally:
        for s in servers:
            s.stop()
