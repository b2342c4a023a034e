"""The one exception type for mistakes a user can make (bad settings, checkpoints, images, requests).

Command-line front ends turn it into a one-line message and exit status 1; anything else is a bug and
keeps its traceback.
"""


class MagnetError(ValueError):
    """A user-caused error whose message says what was wrong and what to do about it."""


class WorkStopped(Exception):
    """A run that stopped before its end because its caller went away (a cancelled or timed-out
    request): not a mistake of the caller's input, and not a server failure."""


class ServiceUnavailable(Exception):
    """A request that failed because a part of the server is down (a composing model whose instance
    died), not because of its input: worth retrying once the server is ready again."""
