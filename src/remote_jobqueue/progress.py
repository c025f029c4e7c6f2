"""Where a starting cluster is, shown while the user waits: a spinner in a terminal, log lines
elsewhere, and always the current phase in the cluster's `repr`.
"""

from __future__ import annotations

import logging
import sys
import time

logger = logging.getLogger("remote_jobqueue")


class StartProgress:
    def __init__(self, title: str, quiet: bool = False) -> None:
        self.title, self.quiet = title, quiet
        self.phase = "created"
        self.detail = ""
        self.started = time.monotonic()
        self._status = None
        if not quiet and sys.stderr.isatty():
            from rich.console import Console

            self._status = Console(stderr=True).status(title)
            self._status.start()

    def update(self, phase: str, detail: str = "") -> None:
        if (phase, detail) == (self.phase, self.detail):
            return
        self.phase, self.detail = phase, detail
        text = f"{self.title}: {phase}" + (f" ({detail})" if detail else "")
        elapsed = time.monotonic() - self.started
        if self._status is not None:
            self._status.update(f"{text} [{elapsed:.0f} s]")
        elif not self.quiet:
            logger.info("%s [%.1f s]", text, elapsed)

    def done(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def __str__(self) -> str:
        return self.phase + (f": {self.detail}" if self.detail else "")
