"""What can go wrong when calling the server, as one small exception hierarchy.

Every exception of ``tritonclient`` is turned into one of these at the boundary (``raise ... from e``),
so callers never import ``tritonclient`` just to catch errors, and the command line maps each class
to its own exit status.

``MagnetClientError``
    ``ConnectionFailedError``  the server is unreachable (gRPC UNAVAILABLE), after the retries
    ``RequestTimeoutError``    the request ran past ``timeout_s`` (DEADLINE_EXCEEDED)
    ``BadRequestError``        the request itself is wrong (INVALID_ARGUMENT, or caught before sending)
    ``ServerError``            anything else the server reports (INTERNAL, NOT_FOUND, ...)
        ``ServerBusyError``    its queue is full, or the request waited past the queue's timeout
        ``ModelRecoveringError`` a model is reloading, or its process died and is being replaced
    ``SharedMemoryError``      a shared-memory region could not be made or used
    ``DependencyMissingError`` an optional package (tritonclient, cuda-python) is not installed
"""

from __future__ import annotations

from magnet_triton.errors import MagnetError

#: What to tell a user whose server does not answer.
SERVE_HINT = "start it with `magnet-triton serve --model-repository REPO`"


class MagnetClientError(Exception):
    """Base of every error the client raises on purpose; the message says what to do.

    Attributes:
        status: the gRPC status name (``"UNAVAILABLE"``, ``"INVALID_ARGUMENT"``, ...), or None for
            errors found on this side.
        attempts: how many times the request was sent before this error (0: never sent).
    """

    def __init__(self, message: str, *, status: str | None = None, attempts: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts


class ConnectionFailedError(MagnetClientError):
    """The server did not answer: nothing listens at the URL, or it is starting or shutting down."""


class RequestTimeoutError(MagnetClientError):
    """The server did not answer within ``timeout_s``; the request was not retried."""


class BadRequestError(MagnetClientError, MagnetError):
    """The image or an override is wrong; sending it again will not help."""


class ServerError(MagnetClientError):
    """The server failed for a reason other than the request (or the repository lacks a model)."""


class ServerBusyError(ServerError):
    """The server is up but refused the request unrun: its queue was full, or the request waited in it
    past the queue's timeout (gRPC UNAVAILABLE from Triton's queue policy). Worth sending again later."""


class ModelRecoveringError(ServerError):
    """A model is briefly missing: being reloaded (Triton answers NOT_FOUND "has no available versions"
    until it is back) or its stub process died under the request (INTERNAL "... is not healthy"), which a
    supervised server (``magnet-triton serve``) replaces within seconds. Worth sending again later."""


#: Triton's words for the transient refusals above, by gRPC status.
BUSY_PHRASES = ("Exceeds maximum queue size", "Request timeout expired")
RECOVERING_PHRASES = {
    "NOT_FOUND": ("has no available versions", "is not ready"),
    "INTERNAL": ("is not healthy",),
    "UNAVAILABLE": ("is not ready", "is not healthy"),
}


class SharedMemoryError(MagnetClientError):
    """A system or CUDA shared-memory region could not be created, filled or registered."""


class DependencyMissingError(MagnetClientError, ImportError):
    """An optional package this call needs is not installed."""


def status_name(error: BaseException) -> str | None:
    """``"UNAVAILABLE"`` from a ``tritonclient`` exception whose ``status()`` is ``"StatusCode.UNAVAILABLE"``."""
    status = getattr(error, "status", None)
    value = status() if callable(status) else None
    if not value:
        return None
    return str(value).rsplit(".", 1)[-1]


def _message(error: BaseException) -> str:
    message = getattr(error, "message", None)
    text = message() if callable(message) else None
    return str(text or error)


#: gRPC status names a streamed error may lead with (``STATUS: message``; a stream carries no status).
_STREAM_STATUSES = ("INVALID_ARGUMENT", "UNAVAILABLE", "CANCELLED", "NOT_FOUND", "INTERNAL")


def stream_error(error: BaseException) -> BaseException:
    """A streamed ``InferenceServerException`` with its status restored from the message's lead
    (``magnet_pipeline_progressive`` writes ``STATUS: message``); others as they are."""
    if status_name(error) is not None:
        return error
    status, sep, rest = _message(error).partition(": ")
    if not sep or status not in _STREAM_STATUSES:
        return error
    from tritonclient.utils import InferenceServerException

    return InferenceServerException(msg=rest, status=f"StatusCode.{status}")


def from_triton(error: BaseException, *, url: str, model_name: str, attempts: int) -> MagnetClientError:
    """The :class:`MagnetClientError` for a ``tritonclient`` ``InferenceServerException``.

    The caller raises it ``from error`` so the original traceback stays attached.
    """
    status = status_name(error)
    detail = _message(error)
    if status == "UNAVAILABLE" and any(phrase in detail for phrase in BUSY_PHRASES):
        return ServerBusyError(
            f"the server at {url} is busy and did not run the request ({detail}); send it again later, "
            "or give the server more pipeline instances or a longer queue (--max-queue-size)",
            status=status,
            attempts=attempts,
        )
    if any(phrase in detail for phrase in RECOVERING_PHRASES.get(status or "", ())):
        return ModelRecoveringError(
            f"a model of the server at {url} is being reloaded or replaced ({detail}); send the request "
            "again in a few seconds (`magnet-triton serve` replaces a dead model on its own)",
            status=status,
            attempts=attempts,
        )
    if status == "UNAVAILABLE":
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        return ConnectionFailedError(
            f"could not reach the Triton server at {url}{tries} ({detail}); is the server running at {url}? "
            f"{SERVE_HINT}",
            status=status,
            attempts=attempts,
        )
    if status == "DEADLINE_EXCEEDED":
        return RequestTimeoutError(
            f"{model_name} at {url} did not answer in time ({detail}); raise timeout_s (--timeout-s) for "
            "large images, or lower the load on the server",
            status=status,
            attempts=attempts,
        )
    if status == "INVALID_ARGUMENT":
        return BadRequestError(
            f"{model_name} rejected the request: {detail}", status=status, attempts=attempts
        )
    if status == "NOT_FOUND" or "unknown model" in detail:
        return ServerError(
            f"the server at {url} has no model {model_name!r} ready ({detail}); is it serving a MagNet "
            "repository written by `magnet-triton`?",
            status=status,
            attempts=attempts,
        )
    return ServerError(
        f"{model_name} at {url} failed ({status or 'no status'}): {detail}; the server log says more",
        status=status,
        attempts=attempts,
    )
