"""Who may reach what on a served repository: the admin key on Triton's restricted APIs, and TLS on gRPC.

Triton leaves every API open to every client that reaches its ports: registering shared memory
(the Python backend's own regions included), loading and unloading models, changing the log level,
tracing. ``magnet-triton serve`` closes those behind a header only the operator knows
(:class:`AdminKey`; Triton's ``--grpc-restricted-protocol``), and can serve gRPC over TLS
(:class:`GrpcTls`). Inference, health, metadata, configs and statistics stay open: they are what
clients, ``perf_analyzer`` and load balancers use.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The APIs closed behind the admin key (Triton's names for them).
RESTRICTED_APIS = ("shared-memory", "model-repository", "logging", "trace")
#: The header that carries the key, unless the operator names another.
DEFAULT_ADMIN_HEADER = "magnet-admin-key"
#: What Triton puts before the header name on gRPC (HTTP takes the name as it is).
GRPC_HEADER_PREFIX = "triton-grpc-protocol-"
#: The environment variable ``serve`` reads the key from (a key on a command line is in ``ps`` for all).
ADMIN_KEY_ENV = "MAGNET_TRITON_ADMIN_KEY"


@dataclass(frozen=True)
class AdminKey:
    """The header (name and value) a request to a restricted API must carry."""

    value: str = field(repr=False)
    header: str = DEFAULT_ADMIN_HEADER
    apis: tuple[str, ...] = RESTRICTED_APIS

    def __post_init__(self) -> None:
        if not self.value or any(c in self.value for c in ",:= \t\n"):
            raise ValueError("the admin key must be non-empty, without spaces, ',', ':' or '='")
        if not self.header or any(c in self.header for c in ",:= \t\n") or self.header != self.header.lower():
            raise ValueError(f"admin header {self.header!r}: lower case, without spaces, ',', ':' or '='")

    @classmethod
    def generate(cls, header: str = DEFAULT_ADMIN_HEADER) -> AdminKey:
        """A random key, for a server whose restricted APIs only its own supervisor uses."""
        return cls(secrets.token_urlsafe(24), header)

    def tritonserver_args(self, *, http: bool) -> list[str]:
        rule = f"{','.join(self.apis)}:{self.header}={self.value}"
        args = [f"--grpc-restricted-protocol={rule}"]
        if http:
            args.append(f"--http-restricted-api={rule}")
        return args

    def headers(self) -> dict[str, str]:
        """The gRPC metadata that opens the restricted APIs (Triton prefixes the header name on gRPC)."""
        return {f"{GRPC_HEADER_PREFIX}{self.header}": self.value}


@dataclass(frozen=True)
class GrpcTls:
    """TLS on the gRPC endpoint: the server's certificate and key (PEM files).

    Args:
        cert, key: the server's certificate chain and private key.
        ca: the certificate that signed ``cert``, which the launcher's own client trusts (default:
            ``cert`` itself, right for a self-signed certificate).
        server_name: the name in ``cert`` the launcher's client checks, when the address it connects
            to (``127.0.0.1`` for a server bound to all addresses) is not in the certificate.
    """

    cert: Path
    key: Path
    ca: Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        for what, path in (("certificate", self.cert), ("key", self.key), ("CA certificate", self.ca)):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"TLS {what} {path} is not a file")

    def tritonserver_args(self) -> list[str]:
        return ["--grpc-use-ssl=true", f"--grpc-server-cert={self.cert}", f"--grpc-server-key={self.key}"]

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``tritonclient.grpc.InferenceServerClient`` that reach this server."""
        kwargs: dict[str, Any] = {"ssl": True, "root_certificates": str(self.ca or self.cert)}
        if self.server_name:
            kwargs["channel_args"] = [("grpc.ssl_target_name_override", self.server_name)]
        return kwargs
