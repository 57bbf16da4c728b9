"""The store of compiled programs on disk (:mod:`jaxhlm.precompiled`, :mod:`jaxhlm.stored_run`):
its bound, what keys a stored program besides its arguments, and what a loaded program needs.

Nothing here imports ``jax``: a process that runs stored programs through jaxlib alone
(:mod:`jaxhlm.stored_run`) uses it as well as one that compiles them.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np

_SOURCE_HASH: list[str] = []

DEFAULT_MAX_MB = 1024
"""The store's bound, and JAX's cache's, in megabytes, unless ``JAXHLM_CACHE_MAX_MB`` is set
(a sleepstudy-sized program is 0.4-1 MB)."""


def max_bytes() -> int:
    """The bound on the store's size (``JAXHLM_CACHE_MAX_MB``, default :data:`DEFAULT_MAX_MB`)."""
    try:
        mb = float(os.environ.get("JAXHLM_CACHE_MAX_MB", DEFAULT_MAX_MB))
    except ValueError:
        mb = DEFAULT_MAX_MB
    return int(max(mb, 0.0) * (1 << 20))


def source_files() -> list[Path]:
    """Every module of jaxhlm, subpackages included: what a stored program's key hashes."""
    return sorted(Path(__file__).parent.rglob("*.py"))


def source_hash() -> str:
    """sha256 of :func:`source_files` (computed once per process)."""
    if not _SOURCE_HASH:
        h = hashlib.sha256()
        root = Path(__file__).parent
        for path in source_files():
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
        _SOURCE_HASH.append(h.hexdigest())
    return _SOURCE_HASH[0]


_LAPACK_SOURCES = ("scipy.linalg.cython_blas", "scipy.linalg.cython_lapack")
"""The two Cython modules whose ``__pyx_capi__`` jaxlib reads BLAS's and LAPACK's
function pointers from (``jaxlib/cpu/lapack.cc``, ``GetLapackKernelsFromScipy``)."""


_PREPARED: list = []


def prepare_custom_calls() -> None:
    """Load the LAPACK kernels that compiled CPU programs call (cholesky, eigh), once.

    JAX does this when it lowers a program that uses them; a program loaded from disk
    was never lowered in this process, and would call null pointers (a segfault).  Done
    here before JAX lowers a program too (:mod:`jaxhlm.precompiled`), JAX's lowering
    finds them loaded.

    jaxlib imports ``scipy.linalg.cython_lapack`` for them, and Python imports the
    package ``scipy.linalg`` first: 0.1-0.2 s here, most of a stored bootstrap's or
    batch's first call in a new process, and of a first fit's lowering (the crossed
    design of ``benchmarks/crossed.py``: 0.29 s, 0.13 s with the kernels loaded).  The two extension modules are loaded from
    their files instead (35 ms; scipy's top package, ``scipy._lib`` and ``scipy._cyutility``,
    which they need, are imported as usual), in ``sys.modules`` only while jaxlib reads them: a
    later ``import scipy.linalg.cython_lapack`` loads the same module object (Cython
    keeps one per process) into its package as usual.  Anything unexpected falls back
    to jaxlib's own import.
    """
    if _PREPARED:
        return
    from jaxlib import lapack

    loaded = [] if "scipy.linalg" in sys.modules else _load_extensions(_LAPACK_SOURCES)
    try:
        lapack.prepare_lapack_call("potrf_ffi", np.dtype(np.float64))  # once per process
        _PREPARED.append(True)
    finally:
        for name in loaded:
            sys.modules.pop(name, None)


def _load_extensions(names) -> list[str]:
    """Load scipy's extension modules ``scipy.sub.name`` from their files without
    importing their package; the names put into ``sys.modules`` (none if any failed)."""
    import importlib.machinery
    import importlib.util

    loaded: list[str] = []
    try:
        scipy_dir = Path(importlib.util.find_spec("scipy").submodule_search_locations[0])
        for name in names:
            stem = scipy_dir.joinpath(*name.split(".")[1:])
            path = next(p for p in (stem.with_name(stem.name + suffix)
                                    for suffix in importlib.machinery.EXTENSION_SUFFIXES) if p.exists())
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            loaded.append(name)
            spec.loader.exec_module(module)
    except Exception:  # noqa: BLE001 - jaxlib's own import is the fallback
        for name in loaded:
            sys.modules.pop(name, None)
        return []
    return loaded


PINNED_JAXLIB = "0.9.2"
"""The jaxlib that ``pyproject.toml`` pins, whose XLA knows every option used here."""
