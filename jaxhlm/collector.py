"""Python's cyclic garbage collector paused while jaxhlm imports its libraries and JAX traces
and lowers a program.

Both create hundreds of thousands of objects that live on (modules, functions, a program's
jaxpr), and every few hundred allocations the collector runs; its oldest generation's
passes rescan everything alive, which finds nothing to free here.  Measured on a 2-core CPU
(2026-12-04, fresh processes, collector on against off): ``import jax`` 0.32-0.33 against
0.29 s; ``import jaxhlm, pandas`` 0.23-0.24 against 0.20 s; tracing the chunk program of
128 vmapped fits of a 120-row design (``fit_many``) 0.31-0.38 against 0.28-0.29 s.

:func:`paused` restores the collector's state afterwards (off stays off where the user
turned it off); pauses may nest and overlap across threads (programs compiled in threads,
:func:`jaxhlm.precompiled.prepare_together`): the collector resumes when the last ends.
"""

from __future__ import annotations

import contextlib
import gc
import threading

_LOCK = threading.Lock()
_STATE = {"depth": 0, "resume": False}


@contextlib.contextmanager
def paused():
    """The cyclic garbage collector off within the block (the module docstring)."""
    with _LOCK:
        if _STATE["depth"] == 0:
            _STATE["resume"] = gc.isenabled()
            gc.disable()
        _STATE["depth"] += 1
    try:
        yield
    finally:
        with _LOCK:
            _STATE["depth"] -= 1
            if _STATE["depth"] == 0 and _STATE["resume"]:
                gc.enable()
