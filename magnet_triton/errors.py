"""The one exception type for mistakes a user can make (bad settings, checkpoints, images, requests).

Command-line front ends turn it into a one-line message and exit status 1; anything else is a bug and
keeps its traceback.
"""


class MagnetError(ValueError):
    """A user-caused error whose message says what was wrong and what to do about it."""
