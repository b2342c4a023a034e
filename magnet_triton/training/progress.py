"""A progress bar on stderr (no tqdm here): a redrawn line on a terminal, a line per tenth in a log."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``name  step/total  loss  it/s  ETA`` for one training phase."""

    def __init__(self, name: str, start: int, total: int, stream: TextIO | None = None) -> None:
        self.name, self.start, self.total = name, start, total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.began = time.perf_counter()
        self.last_tenth = -1
        self.line = ""

    def update(self, step: int, loss: float) -> None:
        done = step - self.start
        elapsed = time.perf_counter() - self.began
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        width = 24
        filled = int(width * step / max(1, self.total))
        self.line = (
            f"{self.name:<10} [{'#' * filled}{'.' * (width - filled)}] {step}/{self.total} "
            f"loss {loss:.4f}  {rate:.2f} it/s  ETA {eta:.0f} s"
        )
        tenth = 10 * step // max(1, self.total)
        if self.tty:
            self.stream.write("\r" + self.line)
        elif tenth != self.last_tenth:
            self.stream.write(self.line + "\n")
        self.last_tenth = tenth
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.line:
            self.stream.write("\n")
            self.stream.flush()
