"""A process-wide setting that jaxhlm changes while its own work runs, and puts back.

Python's garbage collector (:mod:`jaxhlm.collector`) and NumPy's use of huge pages
(:mod:`jaxhlm.pages`) are settings of the whole process.  jaxhlm changes one only for
the duration of a block of its own work: :class:`Scoped` changes it when the first such
block begins and restores the value it found when the last one ends, so blocks may nest
and overlap across threads (programs compiled in threads,
:func:`jaxhlm.precompiled.prepare_together`), and what the user had set is what the user
finds afterwards.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable


class Scoped:
    """``change()`` (which returns the value it replaced) when the first block begins,
    ``restore(value)`` when the last ends; each call gives a context manager (usable as a
    decorator too, as :func:`contextlib.contextmanager`'s are)."""

    def __init__(self, change: Callable[[], Any], restore: Callable[[Any], None]):
        self._change, self._restore = change, restore
        self._lock = threading.Lock()
        self._depth = 0
        self._found = None

    @contextlib.contextmanager
    def __call__(self):
        with self._lock:
            if self._depth == 0:
                self._found = self._change()
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    self._restore(self._found)
