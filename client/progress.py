"""A one-line progress bar for the command line (stderr, no dependencies)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """``[#######.............]  7/20  35%  2.1 s`` redrawn in place on ``stream``.

    Drawn only when ``enabled`` (default: ``stream`` is a terminal), so logs and pipes stay clean.
    Messages written with :meth:`note` go on their own line above the bar.
    """

    def __init__(
        self, total: int, *, stream: TextIO | None = None, enabled: bool | None = None, width: int = 30
    ):
        self.total = max(0, int(total))
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.width = width
        self._started = time.monotonic()
        self._drawn = False

    def render(self) -> str:
        """The bar's text for the current state."""
        fraction = self.done / self.total if self.total else 1.0
        filled = round(fraction * self.width)
        elapsed = time.monotonic() - self._started
        digits = len(str(self.total))
        return (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done:>{digits}}/{self.total} "
            f"{fraction:4.0%} {elapsed:6.1f} s"
        )

    def update(self, done: int | None = None) -> None:
        """Set the count (default: one more) and redraw."""
        self.done = self.done + 1 if done is None else int(done)
        self._draw()

    def note(self, message: str) -> None:
        """Print ``message`` on its own line, keeping the bar below it."""
        if self.enabled and self._drawn:
            self.stream.write("\r\x1b[K")
        self.stream.write(message + "\n")
        if self.enabled and self._drawn:
            self._draw()
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line."""
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def _draw(self) -> None:
        if not self.enabled:
            return
        self.stream.write("\r" + self.render())
        self.stream.flush()
        self._drawn = True

    def __enter__(self) -> ProgressBar:
        self._draw()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
