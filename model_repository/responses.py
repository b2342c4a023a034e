"""Responses of the Python-backend models: one per request, and an error response that says whose fault.

Triton hands ``execute`` a list of requests and wants a list of responses of the same length back. A
:class:`~magnet_triton.errors.MagnetError` is the caller's mistake (a bad image, a bad override) and
goes back as INVALID_ARG with its message, so clients know not to retry. Anything else is a bug or a
failed composing model: INTERNAL, logged with its traceback here and summarised for the caller. Either
way only that request fails; the others of the batch and the server go on. :func:`outcome_of` names
the same distinction for counting (:mod:`~magnet_triton.model_repository.pipeline_metrics`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from magnet_triton.errors import MagnetError, ServiceUnavailable, WorkStopped

#: How a request was answered (``outcome_of``): the values of the pipeline's ``outcome`` metric label.
SUCCESS, REFUSED, FAILED, CANCELLED = "success", "refused", "failed", "cancelled"
#: A part of the server was down (a composing model whose instance died): a fault, not a bug.
UNAVAILABLE = "unavailable"


def outcome_of(error: BaseException | None) -> tuple[str, str | None]:
    """(outcome, refusal reason or None) of a request whose handling raised ``error`` (None: it did not)."""
    if error is None:
        return SUCCESS, None
    if isinstance(error, MagnetError):
        return REFUSED, error.reason
    if isinstance(error, WorkStopped):
        return CANCELLED, None
    if isinstance(error, ServiceUnavailable):
        return UNAVAILABLE, None
    return FAILED, None


def _triton_error(pb_utils: Any, message: str, code_name: str) -> Any:
    # Python backends older than 23.09 have no error codes (and a TritonError of one argument); their
    # errors all read as INTERNAL.
    code = getattr(getattr(pb_utils, "TritonError", None), code_name, None)
    if code is None:
        return pb_utils.TritonError(message)
    return pb_utils.TritonError(message, code)


def invalid_argument(pb_utils: Any, message: str) -> Any:
    """A ``TritonError`` with status INVALID_ARGUMENT: the caller's mistake, so clients don't retry it."""
    return _triton_error(pb_utils, message, "INVALID_ARG")


def internal_error(pb_utils: Any, message: str) -> Any:
    """A ``TritonError`` with status INTERNAL: the server's problem, not the request's."""
    return _triton_error(pb_utils, message, "INTERNAL")


def error_response(pb_utils: Any, error: Any) -> Any:
    """An ``InferenceResponse`` that carries only ``error`` (a ``TritonError``)."""
    return pb_utils.InferenceResponse(error=error)


def respond_to_each(
    requests: Sequence[Any],
    handle: Callable[[Any], Any],
    pb_utils: Any,
    model_name: str,
    log: logging.Logger,
    on_outcome: Callable[[str, str | None], None] | None = None,
) -> list[Any]:
    """``handle(request)`` for every request, in order; a failure becomes that request's error response.

    Args:
        requests: what ``execute`` was given.
        handle: one request -> its ``InferenceResponse``; raises :class:`MagnetError` for a bad request.
        pb_utils: the ``triton_python_backend_utils`` module.
        model_name: named in internal errors, so a message from an ensemble says which step failed.
        log: the model's logger, which gets the traceback of internal errors.
        on_outcome: called with :func:`outcome_of` each request once its response is made (counters).

    Returns:
        One response per request, ``len(requests)`` of them.
    """
    responses = []
    for request in requests:
        error: BaseException | None = None
        try:
            responses.append(handle(request))
        except MagnetError as e:
            error = e
            responses.append(error_response(pb_utils, invalid_argument(pb_utils, str(e))))
        except WorkStopped as e:  # the caller went away: nothing to report but that it stopped
            error = e
            log.info("%s: %s", model_name, e)
            responses.append(error_response(pb_utils, _triton_error(pb_utils, str(e), "CANCELLED")))
        except ServiceUnavailable as e:  # a part of the server is down: UNAVAILABLE, so clients retry
            error = e
            log.warning("%s: %s", model_name, e)
            message = f"{model_name} is unavailable: {e}"
            responses.append(error_response(pb_utils, _triton_error(pb_utils, message, "UNAVAILABLE")))
        except Exception as e:  # a bug or a failed network: this request fails, the server goes on
            error = e
            log.exception("%s failed", model_name)
            message = f"internal error in {model_name}: {type(e).__name__}: {e}"
            responses.append(error_response(pb_utils, internal_error(pb_utils, message)))
        if on_outcome is not None:
            on_outcome(*outcome_of(error))
    return responses
