"""Process-wide JAX settings jaxhlm needs: float64, and a persistent compilation cache.

Mixed-model criteria need double precision (lme4 and MixedModels.jl work in it), so
jaxhlm turns on ``jax_enable_x64``.  Compilation dominates short fits, so
jaxhlm also points JAX's persistent compilation cache at
``~/.cache/jaxhlm/xla/<jaxlib version>-<CPU fingerprint>`` (``$XDG_CACHE_HOME``
respected) unless the user has set a cache directory already or sets
``JAXHLM_COMPILATION_CACHE=0``; ``JAXHLM_COMPILATION_CACHE=/some/dir`` picks the
directory.  A second process then loads compiled fits from disk instead of compiling.

These settings are made by :func:`configure` as soon as ``jax`` is imported, by jaxhlm or
anyone else (:mod:`jaxhlm.lazy_jax`; at once when importing jaxhlm finds ``jax`` imported
already): jaxhlm itself imports ``jax`` only when it first needs it, which a process that
runs stored programs never does (:mod:`jaxhlm.stored_run`).  :func:`planned_cache_dir`
says, without importing ``jax``, which directory :func:`configure` will use.

The CPU fingerprint (architecture and instruction-set flags) keeps machines with
different CPUs that share a home directory from loading each other's machine code.
XLA logs a benign line on every load from the cache (it compares tuning flags such as
``+prefer-no-gather`` with the CPU's features); when jaxhlm is imported before jax,
``TF_CPP_MIN_LOG_LEVEL`` defaults to 3 (fatal messages only) so that it stays quiet.
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jaxlib  # noqa: E402  (its version alone: jaxlib's extension is not loaded)

from . import lazy_jax  # noqa: E402


def _cpu_fingerprint() -> str:
    """Architecture plus instruction-set flags (Linux: /proc/cpuinfo), hashed."""
    text = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            text += next((line for line in fh if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jaxhlm" / "xla" / f"jaxlib-{jaxlib.__version__}-{_cpu_fingerprint()}"


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path:
    """Turn on JAX's persistent compilation cache in ``path`` (default: :func:`default_cache_dir`)."""
    import jax

    path = Path(path) if path is not None else default_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)  # the fit programs, not every eager op
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    from .store import max_bytes

    import importlib.util

    if importlib.util.find_spec("filelock") is not None:  # JAX bounds its cache only with it
        _date_legacy_entries(path)
        jax.config.update("jax_compilation_cache_max_size", max_bytes())  # least recently used go first
    return path


def _date_legacy_entries(path: Path) -> None:
    """Give every entry of JAX's cache without an access-time file one (its modification
    time): JAX's bounded cache reads one per entry when it evicts, and an entry written
    while the cache was unbounded (an older jaxhlm) would make every later write fail."""
    for entry in path.glob("*-cache"):
        atime = entry.with_name(entry.name[: -len("-cache")] + "-atime")
        if not atime.exists():
            try:
                atime.write_bytes(entry.stat().st_mtime_ns.to_bytes(8, "little"))
            except OSError:
                pass


def _cache_setting() -> str | None:
    """``JAXHLM_COMPILATION_CACHE``: None when it turns the cache off, else its value."""
    setting = os.environ.get("JAXHLM_COMPILATION_CACHE", "1")
    return None if setting in ("0", "false", "no", "off") else setting


def _cache_path(setting: str) -> Path:
    return default_cache_dir() if setting in ("1", "true", "yes", "on") else Path(setting)


def planned_cache_dir() -> Path | None:
    """The directory of JAX's persistent cache that :func:`configure` will set (or that JAX
    reads from ``JAX_COMPILATION_CACHE_DIR``), or None where no cache will be on; computed
    without importing ``jax``, before it is imported."""
    setting = _cache_setting()
    if setting is None or os.environ.get("JAX_ENABLE_COMPILATION_CACHE", "1").strip().lower() in (
            "0", "false", "f", "no", "n", "off"):
        return None
    user = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    return Path(user) if user else _cache_path(setting)


def configure() -> None:
    """float64, and the compilation cache as ``JAXHLM_COMPILATION_CACHE`` says (module
    docstring); run once, right after ``jax`` is imported."""
    import jax

    jax.config.update("jax_enable_x64", True)
    setting = _cache_setting()
    if setting is None or jax.config.jax_compilation_cache_dir:  # off, or the user chose one already
        return
    try:
        enable_compilation_cache(_cache_path(setting))
    except OSError:  # an unwritable home: run without the cache
        pass


lazy_jax.after_import(configure)
lazy_jax.install_hook()
