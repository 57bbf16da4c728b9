"""Compiled programs kept on disk, so that a new process skips tracing, lowering and compiling.

JAX's persistent compilation cache (:mod:`jaxhlm._config`) spares a second process
XLA's compilation, but JAX computes that cache's key from the lowered program, so
every process still traces and lowers the fit: about 0.65 s for sleepstudy, most of
a warm process's first fit.  :class:`Precompiled` keys a compiled program by what
determines it instead:

- jaxhlm's source (a hash of every module of the package, subpackages included), JAX's
  and jaxlib's versions,
  the backend and device kind, ``jax_enable_x64`` and ``XLA_FLAGS``;
- the static arguments (their ``repr``: frozen dataclasses of names and integers);
- the tree structure, shapes and dtypes of the array arguments;

and stores the executable (``jax.experimental.serialize_executable``) in
``<JAX's cache directory>/jaxhlm-executables``.  It is used where JAX's cache is
(``JAXHLM_COMPILATION_CACHE``), on a single CPU device (where start-up time
matters, and where it is tested).  A program that calls back into
Python (``jax.pure_callback``) cannot be stored; it is compiled in each process, as
JAX's own cache does.  Anything that goes wrong with a stored file (unreadable,
written by another version) means a normal compilation, never an error.

The store is bounded: after each write, the least recently used files (programs, and the
buckets :mod:`jaxhlm.bucket_choice` records; a load marks a file used) go until the
store holds at most ``JAXHLM_CACHE_MAX_MB`` megabytes (default :data:`DEFAULT_MAX_MB`;
the newest file stays).  JAX's own cache gets the same bound
(``jax_compilation_cache_max_size``, :mod:`jaxhlm._config`), which it enforces alike.

Only a program that XLA compiled in this process is stored: an executable that XLA's
CPU client loaded from JAX's cache does not serialize correctly (it runs, but its
reloaded copy fails with "Function ... not found").  So the program to store is
lowered under a name that carries its stored file's key (``fit_blocks_<key>``):
JAX's cache, which hashes the lowered module and its name, then holds that program
only if this store once compiled it, and a new jaxhlm version, whose programs JAX's
cache may hold under the old names, still compiles and stores them.  When JAX does
report a hit in its cache (``jax.monitoring``'s cache-hit event: the stored file was
deleted but JAX's entry was not), nothing is written.  JAX's cache is never turned off
here: JAX decides once per process whether to use it, so turning it off around one
compilation would turn it off for good.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import pickle
import sys
import tempfile
from pathlib import Path

import jax
import jaxlib
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


def _evict(directory: Path, keep: Path) -> None:
    """Delete the least recently used stored files (oldest modification time: a load
    touches its file) until the store is within :func:`max_bytes`; never ``keep``."""
    files = []
    for p in [*directory.glob("*.pickle"), *directory.glob("*.buckets"), *directory.glob("*.tmp")]:
        # programs, and jaxhlm.bucket_choice's records and their temporary files
        with contextlib.suppress(OSError):
            st = p.stat()
            files.append((st.st_mtime, st.st_size, p))
    total, bound = sum(f[1] for f in files), max_bytes()
    for _, size, p in sorted(files, key=lambda f: f[0]):
        if total <= bound:
            break
        if p != keep:
            with contextlib.suppress(OSError):
                p.unlink()
                total -= size


def source_files() -> list[Path]:
    """Every module of jaxhlm, subpackages included: what a stored program's key hashes."""
    return sorted(Path(__file__).parent.rglob("*.py"))


def _source_hash() -> str:
    """sha256 of :func:`source_files` (computed once per process)."""
    if not _SOURCE_HASH:
        h = hashlib.sha256()
        root = Path(__file__).parent
        for path in source_files():
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
        _SOURCE_HASH.append(h.hexdigest())
    return _SOURCE_HASH[0]


_CACHE_HIT = "/jax/compilation_cache/cache_hits"  # the event JAX records on a hit in its cache


def _directory() -> Path | None:
    """Where executables are stored, or None where JAX's persistent cache is off."""
    base = jax.config.jax_compilation_cache_dir
    if (not base or not jax.config.jax_enable_compilation_cache or jax.device_count() != 1
            or jax.default_backend() != "cpu"):
        return None
    return Path(base) / "jaxhlm-executables"


_LAPACK_SOURCES = ("scipy.linalg.cython_blas", "scipy.linalg.cython_lapack")
"""The two Cython modules whose ``__pyx_capi__`` jaxlib reads BLAS's and LAPACK's
function pointers from (``jaxlib/cpu/lapack.cc``, ``GetLapackKernelsFromScipy``)."""


def _prepare_custom_calls() -> None:
    """Load the LAPACK kernels that compiled CPU programs call (cholesky, eigh).

    JAX does this when it lowers a program that uses them; a program loaded from disk
    was never lowered in this process, and would call null pointers (a segfault).

    jaxlib imports ``scipy.linalg.cython_lapack`` for them, and Python imports the
    package ``scipy.linalg`` first: 0.1-0.2 s here, most of a stored bootstrap's or
    batch's first call in a new process.  The two extension modules are loaded from
    their files instead (35 ms; scipy's top package, ``scipy._lib`` and ``scipy._cyutility``,
    which they need, are imported as usual), in ``sys.modules`` only while jaxlib reads them: a
    later ``import scipy.linalg.cython_lapack`` loads the same module object (Cython
    keeps one per process) into its package as usual.  Anything unexpected falls back
    to jaxlib's own import.
    """
    from jaxlib import lapack

    loaded = [] if "scipy.linalg" in sys.modules else _load_extensions(_LAPACK_SOURCES)
    try:
        lapack.prepare_lapack_call("potrf_ffi", np.dtype(np.float64))  # once per process
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


def _leaf_spec(leaf) -> tuple:
    if not hasattr(leaf, "dtype"):
        leaf = np.asarray(leaf)
    return (leaf.shape, str(leaf.dtype), getattr(leaf, "weak_type", False))


OLDER_EMITTERS = {"xla_cpu_use_fusion_emitters": False}
"""XLA's older CPU emitters, for the programs that work on cross-product blocks (an LMM's
fits, its batches' chunks, the simulator and the inference programs): XLA compiles them
in about half the time and runs them about as fast.  Empty compilation cache, 2-core CPU,
jax 0.9.2 (``benchmarks/probes/unroll.py``, ``benchmarks/README.md``, "Compilation"):

- a single fit: XLA 2.0-2.7 s -> 1.0-1.5 s (sleepstudy, Penicillin, Pastes), warm fit
  0.7-1.3 ms either way;
- a chunk of 128 bootstrap refits: XLA 1.9-3.6 s -> 1.8-2.4 s; warm chunk, alternating
  in one process: sleepstudy 21 against 22 ms, Penicillin 23 against 21 ms, Pastes 27
  against 34 ms;
- the first Kenward-Roger table of Exam: 3.5-4.1 s -> 2.4-2.7 s.

A GLMM's batch programs keep the newer emitters (PIRLS works on the rows, and VerbAgg's
warm fit ran 35% slower with the older ones); its single fit, mostly compilation on a
first call, takes the older ones (:data:`jaxhlm.glmm_fit.FIT`)."""


SMALL_ELEMENTS = 1_000_000
"""A single fit's or test's arrays with fewer elements than this in all are compiled
without LLVM's optimisations, the others at level 1 (:func:`by_size`)."""


def by_size(args) -> int | None:
    """XLA's backend optimisation level for a call of a single-fit program: 0 (no LLVM
    optimisation) when its arrays hold fewer than :data:`SMALL_ELEMENTS` elements, else
    1.  Level 0 compiles in about half the time and runs the program's own
    loops 1-4 times slower (LAPACK's kernels are unaffected); on a first call, which is
    mostly compilation, small fits gain.  Fresh processes, empty cache, 2-core CPU,
    2026-12-03 (first fit, its XLA time, warm fit; the blocks' elements):

    - sleepstudy (292): 1.80 -> 1.39 s, XLA 0.87 -> 0.47 s, warm 2.0 -> 4.2 ms;
    - Penicillin (619): 1.46 -> 1.15 s, 0.67 -> 0.39 s, 1.7 -> 1.8 ms;
    - AR(1) residuals, 3,000 subjects x 8 (86,205): 1.73 -> 1.39 s, 0.82 -> 0.48 s,
      13.5 -> 31.8 ms;
    - Exam's Kenward-Roger table (1,516): 1.92-2.02 -> 1.23 s, 2 -> 3 ms warm;
      Satterthwaite's 1.25-1.28 -> 0.74 s, 2 ms either way;
    - a crossed design of 60,000 rows (``benchmarks/crossed.py``; 337,000): 3.86-3.97 s
      -> 2.60 s, XLA 2.0-2.5 s -> 0.81 s, warm 0.53-0.59 -> 0.70 s (2026-12-04);
    - InstEval (10.1 million): 4.58 -> 4.29 s, XLA 2.41 -> 0.84 s, but warm 1.26 -> 2.50 s.

    Larger programs take level 1, which compiles faster than XLA's default and runs as
    fast (2026-12-04, first fit and warm fit, default against 1: the crossed design
    3.86-3.89 s against 3.44-3.48 s, warm 0.53 against 0.46-0.58 s; InstEval 6.02 s
    against 4.82 s, warm 1.75 against 1.56 s)."""
    elements = sum(int(np.size(leaf)) for leaf in jax.tree.leaves(args))
    return 0 if elements < SMALL_ELEMENTS else 1


def level_one(args) -> int:
    """XLA's backend optimisation level 1 for every call: an LMM's batch programs (the
    chunk of vmapped fits, the simulator).  They compile faster than at XLA's default
    and run as fast.  Fresh processes, empty cache, 2-core CPU, 2026-12-04, default
    against 1 (``/tmp`` probe, alternating): 2,000 responses of a 120-row design, first
    ``fit_many`` 1.10-1.12 against 1.05-1.06 s, warm 21.2 against 21.2-21.8 ms; a
    sleepstudy ``bootstrap(1000)``, first call 1.41-1.50 against 1.30-1.35 s, warm
    67.1-69.2 against 67.7-78.3 ms (one outlier; median 69.8)."""
    return 1


PINNED_JAXLIB = "0.9.2"
"""The jaxlib that ``pyproject.toml`` pins, whose XLA knows every option used here."""

_KNOWN_OPTIONS: dict[str, bool] = {}


def known_options(options: dict) -> dict:
    """``options`` without the XLA compile options that this jaxlib does not know.  XLA
    drops options between releases, and JAX then refuses the compilation ("No such compile
    option"): jaxlib 0.11.2's CPU compiler has no ``xla_cpu_use_fusion_emitters``, so under
    it every fit failed (the GPU machine's CPU side, 2026-12-04).  Under the pinned jaxlib
    all are known; under another, each is tried once per process on a one-operation
    program, and dropped if refused (its programs then compile with XLA's defaults)."""
    if jaxlib.__version__ == PINNED_JAXLIB:
        return options
    for name, value in options.items():
        if name not in _KNOWN_OPTIONS:
            try:
                jax.jit(lambda x: x + 1, compiler_options={name: value}).lower(np.float64(1.0)).compile()
                _KNOWN_OPTIONS[name] = True
            except Exception:  # noqa: BLE001 - any refusal means: leave the option out
                _KNOWN_OPTIONS[name] = False
    return {name: value for name, value in options.items() if _KNOWN_OPTIONS[name]}


class Precompiled:
    """``jitted(*args)`` through an in-memory and an on-disk store of compiled programs.

    Calling this object returns what ``jax.jit(fun, static_argnums=static_argnums,
    compiler_options=...)(*args)`` returns (that function is :attr:`jitted`), with XLA
    compiler options ``cpu_options`` on a CPU backend only (e.g. :data:`OLDER_EMITTERS`),
    and ``level(args)`` (e.g. :func:`by_size` of the dynamic arguments), when given, as
    XLA's backend optimisation level of each call on a CPU (a stored program per level).
    ``depends`` names other packages whose code the program traces (e.g. ``"numpyro"``):
    their versions key the stored file, as JAX's and jaxhlm's do.
    """

    def __init__(self, fun, static_argnums: tuple[int, ...], name: str, *,
                 cpu_options: dict | None = None, level=None, depends: tuple[str, ...] = ()):
        self.fun = fun
        self.depends = tuple(depends)
        self.static_argnums = tuple(static_argnums)
        self.name = name
        self.cpu_options = dict(cpu_options or {})
        self.level = level
        self._jits: dict = {}
        self._memory: dict = {}

    def _jit(self, fun, level: int | None = None):
        options = {}
        if jax.default_backend() == "cpu":
            options = known_options({**self.cpu_options,
                                     **({} if level is None else {"xla_backend_optimization_level": level})})
        return jax.jit(fun, static_argnums=self.static_argnums,
                       **({"compiler_options": options} if options else {}))

    @property
    def jitted(self):
        """``jax.jit`` of the program with this backend's compiler options (not stored)."""
        return self._jitted_at(None)

    def _jitted_at(self, level: int | None):
        key = (jax.default_backend(), level)
        if key not in self._jits:
            self._jits[key] = self._jit(self.fun, level)
        return self._jits[key]

    def for_structure(self, st):
        """This program, stored, for a structure of jaxhlm's own covariances; else JAX's
        jit alone (a user's covariance class may change under the same ``repr``)."""
        return self if st.builtin else self.jitted

    def _split(self, args):
        static = tuple(args[i] for i in self.static_argnums)
        dynamic = tuple(a for i, a in enumerate(args) if i not in self.static_argnums)
        return static, dynamic

    def _stored(self, args):
        """(the stored or loaded executable for ``args``, or False where it cannot be
        stored; the dynamic arguments; the optimisation level)."""
        static, dynamic = self._split(args)
        leaves, tree = jax.tree.flatten(dynamic)
        level = self.level(dynamic) if self.level is not None and jax.default_backend() == "cpu" else None
        key = (static, tree, tuple(_leaf_spec(leaf) for leaf in leaves), level)
        compiled = self._memory.get(key)
        if compiled is None:
            compiled = self._memory[key] = self._load_or_compile(key, args)
        return compiled, dynamic, level

    def __call__(self, *args):
        compiled, dynamic, level = self._stored(args)
        if compiled is False:  # not storable: JAX's own jit and caches
            return self._jitted_at(level)(*args)
        return compiled(*dynamic)

    def executable(self, *args):
        """The compiled program for ``args``, a function of their dynamic (not static)
        arguments, without running it: loaded or compiled and stored as a call would,
        or, where it cannot be stored, compiled ahead of time by JAX's jit."""
        compiled, _, level = self._stored(args)
        return self._jitted_at(level).lower(*args).compile() if compiled is False else compiled

    def file_key(self, key) -> str:
        """The stored file's name: a hash of everything the compiled program depends on."""
        static, tree, specs, level = key
        device = jax.devices()[0]
        text = repr((self.name, _source_hash(), jax.__version__, jaxlib.__version__,
                     device.platform, device.device_kind, jax.config.jax_enable_x64,
                     os.environ.get("XLA_FLAGS", ""), static, str(tree), specs, level,
                     [(name, importlib.import_module(name).__version__) for name in self.depends]))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def _named(self, file_key: str, level: int | None):
        """The program jitted under a name that carries its file's key (module docstring)."""
        fun = self.fun

        def program(*args):
            return fun(*args)

        program.__name__ = program.__qualname__ = f"{self.name}_{file_key[:16]}"
        return self._jit(program, level)

    def _load_or_compile(self, key, args):
        from jax.experimental import serialize_executable

        directory = _directory()
        if directory is None:
            return False
        file_key = self.file_key(key)
        path = directory / f"{self.name}-{file_key}.pickle"
        try:
            with open(path, "rb") as fh:
                stored = pickle.load(fh)
            _prepare_custom_calls()
            loaded = serialize_executable.deserialize_and_load(*stored)
            with contextlib.suppress(OSError):
                os.utime(path)   # recently used: the last to be evicted
            return loaded
        except FileNotFoundError:
            pass
        except Exception:  # unreadable or stale: compile again
            with contextlib.suppress(OSError):
                path.unlink()
        lowered = self._named(file_key, key[3]).lower(*args)
        if "callback" in lowered.as_text():
            return False
        hits = []

        def listen(event, **_):
            if event == _CACHE_HIT:
                hits.append(event)

        jax.monitoring.register_event_listener(listen)
        try:
            compiled = lowered.compile()
        finally:
            jax.monitoring.unregister_event_listener(listen)
        if hits:  # loaded from JAX's cache: it would not serialize correctly (module docstring)
            return compiled
        try:
            blob = pickle.dumps(serialize_executable.serialize(compiled))
            directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=directory, delete=False) as fh:
                fh.write(blob)
            os.replace(fh.name, path)
            _evict(directory, path)
        except Exception:  # a read-only cache directory, or a program that does not serialize
            pass
        return compiled
