"""Work that runs on a daemon thread for the span of a `with` block (probe traffic, a
latency sampler) and stops at its end."""

from __future__ import annotations

import threading
from typing import Self


class Background:
    """Subclasses implement `_run`, which returns once `self._stop` is set."""

    thread_name = "background"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        raise NotImplementedError
