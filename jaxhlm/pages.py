"""NumPy's large arrays on ordinary memory pages while jaxhlm builds and fetches a batch.

NumPy asks Linux for transparent huge pages (``madvise(MADV_HUGEPAGE)``) for every array
of 4 MiB or more.  Where the kernel's ``transparent_hugepage/defrag`` is ``madvise`` (the
usual default) and free memory is fragmented, as on a machine that has run for a while,
the first touch of such an array stalls while the kernel compacts memory into 2 MiB
pages.  A batch's host arrays are exactly that: responses (replicates x rows), their
copies in each correlation group's order, the fetched estimates; each is written once and
handed on, so huge pages save nothing afterwards.  Measured on the 2-core CPU of
``benchmarks/README.md`` (2026-12-05, fresh processes): touching a new 200 MB array took
0.87 s with huge pages and 0.07 s without; twenty new 24 MB arrays 2.86 s against 0.16 s;
the first ``bootstrap(200)`` of a 3,000-subject x 8-visit AR(1) model, empty compilation
cache, 4.35-4.73 s against 2.64-2.65 s ("Huge pages" there).

A large model's build is the same: InstEval's ``LMM(...)`` in fresh processes took
0.18-0.27 s with huge pages, and 0.59-1.27 s in the 4 of 11 runs where they stalled;
without, 0.21-0.24 s in all 18 (2026-12-05).

:func:`small_pages` turns NumPy's request off while a block of jaxhlm's batch work runs
(:func:`jaxhlm.batch.fit_many`, the simulators, their GLMM twins) or a model is built
(``LMM(...)``, ``GLMM(...)``) and puts the user's setting back afterwards (:class:`jaxhlm.scoped.Scoped`); arrays made inside keep ordinary
pages.  A NumPy without the switch (it is private: ``numpy._core.multiarray`` in NumPy 2,
``numpy.core.multiarray`` before) is left as it is.
"""

from __future__ import annotations

from .scoped import Scoped


def _switch():
    """NumPy's ``_set_madvise_hugepage(enabled) -> previous``, or None."""
    import numpy as np

    for name in ("_core", "core"):
        module = getattr(getattr(np, name, None), "multiarray", None)
        switch = getattr(module, "_set_madvise_hugepage", None)
        if switch is not None:
            return switch
    return None


def _off():
    switch = _switch()
    return None if switch is None else bool(switch(False))


def _restore(enabled) -> None:
    switch = _switch()
    if switch is not None and enabled is not None:
        switch(enabled)


small_pages = Scoped(_off, _restore)
"""``with small_pages():`` NumPy's arrays of the block on ordinary pages (the module docstring)."""
