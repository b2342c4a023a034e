"""The one exception type for mistakes a user can make (bad settings, checkpoints, images, requests).

Command-line front ends turn it into a one-line message and exit status 1; anything else is a bug and
keeps its traceback. The subclasses name the kinds of refusal a server counts apart (its ``reason``,
a label of :mod:`magnet_triton.model_repository.pipeline_metrics`); they read and are caught as
:class:`MagnetError` everywhere else.
"""


class MagnetError(ValueError):
    """A user-caused error whose message says what was wrong and what to do about it."""

    #: What kind of mistake, as a metric label: a fixed word, never the message (unbounded values).
    reason = "bad_input"


class ImageTooLarge(MagnetError):
    """An image over the server's pixel limit (declared or decoded): a smaller one would be served."""

    reason = "over_limit"


class OverWorkCap(MagnetError):
    """Settings that would refine more patches or points than the server's per-request cap."""

    reason = "over_work_cap"


class UnknownParameter(MagnetError):
    """A request parameter that is no option (a misspelling that would otherwise be ignored)."""

    reason = "unknown_parameter"


#: Every ``reason`` a refusal can carry, so counters can list each from the start.
REFUSAL_REASONS: tuple[str, ...] = tuple(
    kind.reason for kind in (MagnetError, ImageTooLarge, OverWorkCap, UnknownParameter)
)


class WorkStopped(Exception):
    """A run that stopped before its end because its caller went away (a cancelled or timed-out
    request): not a mistake of the caller's input, and not a server failure."""


class ServiceUnavailable(Exception):
    """A request that failed because a part of the server is down (a composing model whose instance
    died), not because of its input: worth retrying once the server is ready again."""
