"""Python's cyclic garbage collector paused while jaxhlm imports its libraries and JAX traces
and lowers a program.

Both create hundreds of thousands of objects, and every few hundred allocations the
collector runs; its full passes rescan the whole heap (JAX, pandas, scipy: about a million
objects), three of 12-54 ms during a first ``fit_many``.  Measured on a 2-core CPU
(2026-12-04, fresh processes, collector on against off): ``import jax`` 0.32-0.33 against
0.29 s; ``import jaxhlm, pandas`` 0.23-0.24 against 0.20 s; tracing the chunk program of
128 vmapped fits of a 120-row design (``fit_many``) 0.31-0.38 against 0.28-0.29 s.  Part of
the work is deferred, not saved: the first collection after a pause scans what it left
(the next ``fit_many`` then took 0.07-0.08 s instead of 0.02 s); over three ``fit_many``
calls a whole process took 1.77-1.83 s against 1.79-1.96 s, and a process that ends after
its first call never pays it (``benchmarks/README.md``, "First compilations").  So at the end
of a pause every object the collector tracks moves into its oldest generation without a
pass (``gc.freeze()`` then ``gc.unfreeze()``, unless the user froze objects): the young
generations' passes over what the pause left are gone (the warmed ``fit_many`` of 2,000
responses: 0.126-0.143 -> 0.113-0.115 s; a first ``fit_many`` and two more calls, end to
end, 1.61-1.64 -> 1.48-1.53 s), and the garbage among those objects waits for the next
full pass (a process fitting nine models: 417,000 tracked objects at its end instead of
300,000, the same peak resident memory, 368 MB).

The pause is a :class:`jaxhlm.scoped.Scoped` setting: it restores the collector's state
afterwards (off stays off where the user turned it off), and pauses may nest and overlap
across threads: the collector resumes when the last ends.
"""

from __future__ import annotations

import gc

from .scoped import Scoped


def _pause() -> bool:
    enabled = gc.isenabled()
    gc.disable()
    return enabled


def _resume(enabled: bool) -> None:
    if not enabled:
        return
    if gc.get_freeze_count() == 0:   # (never unfreeze what a user froze)
        gc.freeze()     # every tracked object into the permanent generation,
        gc.unfreeze()   # then back into the oldest: aged without a pass
    gc.enable()


paused = Scoped(_pause, _resume)
"""``with paused():`` the cyclic garbage collector off within the block (the module docstring)."""
