"""A base for what the lab starts: used as a context manager, it always stops what it started."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Managed:
    """Something with start() and stop(); `with` starts it, and stops it even if start fails."""

    def start(self) -> None:
        """Start; subclasses implement."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop whatever was started (safe after a partial start); subclasses implement."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
