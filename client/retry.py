"""When to send a request again, and how long to wait first (pure logic; the clients do the waiting)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from magnet_triton.client.errors import (
    BadRequestError,
    ConnectionFailedError,
    MagnetClientError,
    ModelRecoveringError,
    ServerBusyError,
)

#: gRPC statuses worth another attempt: the server was not there, or not yet. DEADLINE_EXCEEDED is
#: not one of them: the server may still be working on the request, and a resend would double its load.
RETRYABLE_STATUSES = frozenset({"UNAVAILABLE"})
#: Errors that say the request was not run and the server expects to take it again soon: unreachable,
#: queue full, or a model reloading / its dead stub being replaced.
RETRYABLE_ERRORS = (ConnectionFailedError, ServerBusyError, ModelRecoveringError)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: wait ``backoff_s``, then twice that, ... up to ``max_backoff_s``.

    Attributes:
        retries: attempts after the first; 0 sends once.
        backoff_s: seconds before the first retry.
        max_backoff_s: cap on any one wait, in seconds.
    """

    retries: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise BadRequestError(f"retries must be a whole number >= 0, got {self.retries!r}")
        for name in ("backoff_s", "max_backoff_s"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise BadRequestError(f"{name} must be a finite number of seconds >= 0, got {value!r}")

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    def delay_s(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0-based)."""
        return float(min(self.backoff_s * 2.0**retry, self.max_backoff_s))

    def should_retry(self, error: MagnetClientError, attempt: int) -> bool:
        """True if ``error``, raised by attempt number ``attempt`` (1-based), deserves another attempt."""
        retryable = isinstance(error, RETRYABLE_ERRORS) or error.status in RETRYABLE_STATUSES
        return retryable and attempt < self.max_attempts

    def channel_args(self) -> list[tuple[str, int]]:
        """gRPC channel options that keep the channel's own reconnect backoff in step with ours.

        After a failed connect, a gRPC channel refuses new calls until its own reconnect timer fires
        (1 s growing to 120 s by default); without these options a retry could be refused by the channel
        long after the server came up.
        """
        initial_ms = max(100, int(self.backoff_s * 1000))
        return [
            ("grpc.initial_reconnect_backoff_ms", initial_ms),
            ("grpc.min_reconnect_backoff_ms", initial_ms),
            ("grpc.max_reconnect_backoff_ms", max(initial_ms, int(self.max_backoff_s * 1000))),
        ]
