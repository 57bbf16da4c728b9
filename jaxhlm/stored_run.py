"""Stored programs run by jaxlib alone, in a process that has not imported ``jax``.

A process that fits one model whose program is stored (:mod:`jaxhlm.precompiled`) spent
most of its time importing: ``jax`` alone took 0.25-0.35 s of a 0.6 s sleepstudy process on
a 2-core CPU, and running the stored fit needs none of it.  jaxlib's compiled extension
can load an XLA executable and run it by itself.  So beside each stored program that may
run this way (``Precompiled(..., without_jax=True)``: an LMM's single fit, its Satterthwaite,
Kenward-Roger and profile programs, its batches' chunk and simulator, a GLMM's single fit) the
store keeps a second file, ``<name>-<key>.xla``, written when the program is compiled:

- the executable as XLA serializes it;
- which of the flattened dynamic arguments it takes (``jax.jit`` drops the unused ones),
  their shapes and dtypes;
- the outputs' shapes and dtypes, and their tree as a skeleton (the output with markers
  for arrays: namedtuples, tuples, lists, None).

Its key (:func:`key`) hashes, without ``jax``, what the program depends on: the program's
name, jaxhlm's source, JAX's and jaxlib's versions, ``XLA_FLAGS``, the static arguments'
``repr``, the dynamic arguments' tree, shapes and dtypes, and XLA's optimisation level.

While ``jax`` is not imported, :class:`jaxhlm.precompiled.Precompiled` calls
:func:`call` first; it returns None (and the program runs through JAX as before) unless
every condition holds:

- the pinned jaxlib (:data:`jaxhlm.store.PINNED_JAXLIB`), whose private calls used
  here are the ones JAX makes itself (``make_cpu_client``, ``deserialize_executable``,
  ``batched_device_put``, ``execute_sharded``, ``array_result_handler``) and are tested;
- a process whose JAX would run on one CPU device: ``JAX_PLATFORMS`` unset or ``cpu``, no
  GPU or TPU plugin installed, no ``--xla_force_host_platform_device_count`` in
  ``XLA_FLAGS``;
- the file exists in the store JAX would use (:func:`jaxhlm._config.planned_cache_dir`).

The outputs are NumPy arrays, bit for bit those of the JAX path: the same executable on the
same inputs (``tests/test_stored_run.py``).  Anything that fails means the JAX path.
The process then holds a CPU client of its own; a later ``import jax`` makes JAX's, and
both work (tested).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import os
import pickle
import re
import tempfile
import threading
from pathlib import Path

import numpy as np

from . import _config, lazy_jax, store

SUFFIX = ".xla"
_PLUGINS = ("jax_plugins", "jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
            "jax_rocm7_plugin", "libtpu")


class _Leaf:
    """An array's place in an output skeleton."""

    def __reduce__(self):
        return (_Leaf, ())


def skeleton(tree):
    """``tree`` with every array replaced by a :class:`_Leaf` marker; ValueError for a node
    this module cannot rebuild (anything but namedtuples, tuples, lists and None)."""
    if tree is None:
        return None
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(skeleton(x) for x in tree))
    if isinstance(tree, (tuple, list)):
        return type(tree)(skeleton(x) for x in tree)
    if isinstance(tree, (dict, set)) or not hasattr(tree, "shape"):
        raise ValueError(f"not an array, namedtuple, tuple, list or None: {type(tree).__name__}")
    return _Leaf()


def rebuild(skel, leaves):
    """The tree of ``skel`` with its markers replaced, in order, by ``leaves`` (an iterator)."""
    if skel is None:
        return None
    if isinstance(skel, _Leaf):
        return next(leaves)
    if isinstance(skel, tuple) and hasattr(skel, "_fields"):
        return type(skel)(*(rebuild(x, leaves) for x in skel))
    return type(skel)(rebuild(x, leaves) for x in skel)


@functools.cache
def jax_version() -> str:
    """JAX's version, without importing it: from its ``version.py``, else its package's
    metadata, else ``"unknown"``."""
    try:
        spec = importlib.util.find_spec("jax")
        text = Path(spec.origin).with_name("version.py").read_text()
        return re.search(r'^_version(?:: str)? = [\'"]([^\'"]+)[\'"]', text, re.M).group(1)
    except Exception:  # noqa: BLE001 - another layout
        try:
            from importlib import metadata

            return metadata.version("jax")
        except Exception:  # noqa: BLE001
            return "unknown"


def _settings() -> list:
    """The environment's JAX and XLA settings (``JAX_*``, ``XLA_*``, ``TF_*``): JAX reads
    them at its import, and some change a compiled program."""
    return sorted((k, v) for k, v in os.environ.items() if k.startswith(("JAX_", "XLA_", "TF_")))


def _specs(leaves) -> list:
    """Each argument's shape and dtype (a Python scalar's as NumPy reads it)."""
    return [(np.shape(x), str(x.dtype) if hasattr(x, "dtype") else str(np.asarray(x).dtype)) for x in leaves]


def key(name: str, static, dynamic, level) -> str:
    """The stored file's key (module docstring), the same with ``jax`` imported or not."""
    leaves, tree = lazy_jax.tree_flatten(dynamic)
    import jaxlib

    text = repr((name, store.source_hash(), jax_version(), jaxlib.__version__, _settings(),
                 static, str(tree), _specs(leaves), level))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _one_cpu() -> bool:
    """Whether JAX, once imported, would run on one CPU device (module docstring)."""
    if os.environ.get("JAX_PLATFORMS", "cpu") not in ("", "cpu"):
        return False
    if os.environ.get("JAX_NUM_CPU_DEVICES", "1").strip() not in ("", "1", "-1"):
        return False
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return False
    return all(importlib.util.find_spec(p) is None for p in _PLUGINS)


@functools.cache
def directory() -> Path | None:
    """The store a process without ``jax`` reads (that of :mod:`jaxhlm.precompiled` once JAX
    is configured), or None where this module is not used."""
    import jaxlib

    base = _config.planned_cache_dir()
    if base is None or jaxlib.__version__ != store.PINNED_JAXLIB or not _one_cpu():
        return None
    return base / "jaxhlm-executables"


def jax_free() -> bool:
    """Whether this process has not imported ``jax`` and may run stored programs without it:
    then JAX, once imported, would see one CPU device (what callers use in place of
    ``jax.devices()`` and ``jax.default_backend()``, which would import it)."""
    return not lazy_jax.loaded() and directory() is not None


def key_data(seed) -> np.ndarray | None:
    """``jax.random.key_data(jax.random.key(seed))`` for JAX's default generator, threefry
    2x32 (the seed's high and low 32 bits; the high ones 0 for a type of 32 bits or fewer),
    without importing ``jax``; None where JAX must say (another generator chosen by
    ``JAX_DEFAULT_PRNG_IMPL``, a seed that is not an integer scalar, a Python integer outside
    int64)."""
    if os.environ.get("JAX_DEFAULT_PRNG_IMPL", "threefry2x32") != "threefry2x32":
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        return None
    bits = np.dtype(type(seed)).itemsize * 8 if isinstance(seed, np.integer) else 64
    value = int(seed)
    if not isinstance(seed, np.integer) and not -(1 << 63) <= value < (1 << 63):
        return None
    value &= (1 << 64) - 1
    return np.array([value >> 32 if bits > 32 else 0, value & 0xFFFFFFFF], dtype=np.uint32)


def save(path: Path, compiled, dynamic) -> None:
    """Write the ``.xla`` file of a program JAX compiled in this process (one loaded from a
    store serializes without its machine code: 343 KB instead of 498 KB for sleepstudy's fit,
    and does not run here, so a file evicted alone is written again only by the next
    compilation of its program); nothing where the
    program does not fit this module (an output node it cannot rebuild, no record of
    the arguments it keeps)."""
    jax = lazy_jax.jax
    if not jax.config.jax_enable_x64:   # a process without jax runs with jaxhlm's float64
        return
    try:
        executable = compiled._executable
        kept = sorted(executable._kept_var_idx)
        loaded = compiled.runtime_executable()
        raw = loaded.serialize() if hasattr(loaded, "serialize") else loaded.client.serialize_executable(loaded)
        leaves = lazy_jax.tree_flatten(dynamic)[0]
        inputs = [(tuple(np.shape(leaves[i])), str(np.asarray(leaves[i]).dtype)
                   if not hasattr(leaves[i], "dtype") else str(leaves[i].dtype)) for i in kept]
        info = compiled.out_info
        outputs = [(tuple(s.shape), str(s.dtype)) for s in jax.tree.leaves(info)]
        skel = skeleton(jax.tree.map(lambda s: np.empty(0), info))
        blob = pickle.dumps({"executable": raw, "kept": kept, "inputs": inputs,
                             "outputs": outputs, "skeleton": skel})
    except Exception:  # noqa: BLE001 - this program runs through JAX only
        return
    with contextlib.suppress(OSError):
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as fh:
            fh.write(blob)
        os.replace(fh.name, path)


class _Aval:
    """What jaxlib reads of an abstract value: shape, dtype and weak type."""

    def __init__(self, shape, dtype):
        self.shape, self.dtype, self.weak_type = tuple(shape), np.dtype(dtype), False


class _DLPack:
    """A device array handed to NumPy through DLPack (a CPU buffer; no copy)."""

    def __init__(self, array):
        self.array = array

    def __dlpack__(self, **_):
        from jaxlib import _jax

        return _jax.buffer_to_dlpack_managed_tensor(self.array)

    def __dlpack_device__(self):
        return (1, 0)   # kDLCPU, device 0


_LOCK = threading.Lock()   # one client per process, and each file deserialized on it once
_RUNTIME: list = []


def _runtime():
    """(client, device, sharding) of a CPU client of this process, with the LAPACK kernels
    that compiled programs call registered and loaded (as JAX does when it lowers them)."""
    with _LOCK:
        if not _RUNTIME:
            _RUNTIME.append(_start())
    return _RUNTIME[0]


def _start():
    from jaxlib import _jax, lapack
    from jaxlib import xla_client as xc

    class OneDevice(_jax.SingleDeviceSharding):
        """JAX's SingleDeviceSharding, as much of it as jaxlib reads."""

        memory_kind = None

        def _to_xla_hlo_sharding(self, num_dimensions):
            return xc.HloSharding.replicate()

    client = xc.make_cpu_client()
    for platform, targets in lapack.registrations().items():
        for name, value, api_version in targets:
            xc.register_custom_call_target(name, value, platform, api_version)
    store.prepare_custom_calls()
    device = client.local_devices()[0]
    return client, device, OneDevice(device)


_LOADED: dict = {}


def _load(path: Path, client, device, sharding):
    """The stored file at ``path`` with its executable deserialized on ``client``, and what
    every call reuses: the inputs' abstract values and the outputs' handlers."""
    with _LOCK:
        if path not in _LOADED:
            from jaxlib import _jax
            from jaxlib import xla_client as xc

            with open(path, "rb") as fh:
                stored = pickle.load(fh)
            stored["executable"] = client.deserialize_executable(stored["executable"], xc.DeviceList((device,)))
            stored["avals"] = [_Aval(shape, dtype) for shape, dtype in stored["inputs"]]
            stored["handlers"] = [_jax.array_result_handler(_Aval(shape, dtype), sharding, True, _skip_checks=True)
                                  for shape, dtype in stored["outputs"]]
            with contextlib.suppress(OSError):
                os.utime(path)   # recently used: the last to be evicted
            _LOADED[path] = stored
        return _LOADED[path]


_PATHS: dict = {}


def _path(base: Path, name: str, static, dynamic, leaves, tree, level) -> Path | None:
    """The stored file of a call, or None: remembered per call signature, as a process
    without ``jax`` writes no file (a profile calls its programs hundreds of times)."""
    signature = (name, static, tree, tuple((np.shape(x), getattr(x, "dtype", type(x))) for x in leaves), level)
    if signature not in _PATHS:
        path = base / f"{name}-{key(name, static, dynamic, level)}{SUFFIX}"
        _PATHS[signature] = path if path.exists() else None
    return _PATHS[signature]


def _find(name: str, static, dynamic, level):
    """(the stored file of a call, its flattened arguments), or None where there is none
    or ``jax`` is imported."""
    base = directory()
    if base is None or lazy_jax.loaded():
        return None
    leaves, tree = lazy_jax.tree_flatten(dynamic)
    path = _path(base, name, static, dynamic, leaves, tree, level)
    return None if path is None else (path, leaves)


def has(name: str, static, dynamic, level) -> bool:
    """Whether :func:`call` would find a stored program for these arguments (in a process
    without ``jax``)."""
    try:
        return _find(name, static, dynamic, level) is not None
    except Exception:  # noqa: BLE001 - as call's: the JAX path
        return False


def call(name: str, static, dynamic, level):
    """The outputs of the stored program ``name`` on ``dynamic`` as NumPy arrays in their
    tree, or None where it cannot run without ``jax`` (module docstring)."""
    try:
        found = _find(name, static, dynamic, level)
        if found is None:
            return None
        path, leaves = found
        client, device, sharding = _runtime()
    except Exception:  # noqa: BLE001 - no key, no store, no client: the JAX path
        return None
    try:
        stored = _load(path, client, device, sharding)
    except Exception:  # noqa: BLE001 - unreadable, or written by another jaxlib: the JAX path
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    try:
        from jaxlib import _jax

        inputs = []
        for i, aval in zip(stored["kept"], stored["avals"]):
            x = np.asarray(leaves[i], dtype=aval.dtype, order="C")
            if x.shape != aval.shape:
                return None
            inputs.append(_jax.batched_device_put(aval, sharding, [x], [device], True, False, enable_x64=True))
        results = stored["executable"].execute_sharded(inputs)
        arrays = [np.array(np.from_dlpack(_DLPack(a))) for a in results.consume_with_handlers(stored["handlers"])]
        return rebuild(stored["skeleton"], iter(arrays))
    except Exception:  # noqa: BLE001 - the JAX path instead
        return None
