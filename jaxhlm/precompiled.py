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

A program made with ``without_jax=True`` (an LMM's single fit, its Satterthwaite and
Kenward-Roger tests and its profile, the batched fit, the simulator; a GLMM's single fit) is also stored as the bare XLA executable, which
:mod:`jaxhlm.stored_run` runs in a process that has not imported ``jax``; such a call
tries that first, and compiles (importing ``jax``) only when it finds nothing.  What keys a
program besides its arguments (jaxhlm's source, the pinned jaxlib) and the LAPACK kernels a
loaded program needs are in :mod:`jaxhlm.store`.

The store is bounded: after each write, the least recently used files (programs, and the
buckets :mod:`jaxhlm.bucket_choice` records; a load marks a file used) go until the
store holds at most ``JAXHLM_CACHE_MAX_MB`` megabytes (default :data:`jaxhlm.store.DEFAULT_MAX_MB`;
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
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jaxlib
import numpy as np

from . import _config, lazy_jax, stored_run
from .collector import paused
from .store import PINNED_JAXLIB, max_bytes, prepare_custom_calls, source_hash
from .lazy_jax import jax

def _evict(directory: Path, keep: Path) -> None:
    """Delete the least recently used stored files (oldest modification time: a load
    touches its file) until the store is within :func:`max_bytes`; never ``keep``."""
    files = []
    for p in [*directory.glob("*.pickle"), *directory.glob("*" + stored_run.SUFFIX),
              *directory.glob("*.buckets"), *directory.glob("*.tmp")]:
        # programs (JAX's and jaxhlm.stored_run's), jaxhlm.bucket_choice's records, temporary files
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


_CACHE_HIT = "/jax/compilation_cache/cache_hits"  # the event JAX records on a hit in its cache


def _directory() -> Path | None:
    """Where executables are stored, or None where JAX's persistent cache is off."""
    base = jax.config.jax_compilation_cache_dir
    if (not base or not jax.config.jax_enable_compilation_cache or jax.device_count() != 1
            or jax.default_backend() != "cpu"):
        return None
    return Path(base) / "jaxhlm-executables"


def store_directory() -> Path | None:
    """:func:`_directory`, found without importing ``jax`` where :mod:`jaxhlm.stored_run`
    may run the stored programs (the same directory)."""
    if not lazy_jax.loaded():
        planned = stored_run.directory()
        if planned is not None:
            return planned
        if _config.planned_cache_dir() is None and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
            return None   # no cache will be on (JAXHLM_COMPILATION_CACHE=0): nothing to import jax for
    return _directory()


def _leaf_spec(leaf) -> tuple:
    """(shape, dtype, weak type) of an argument: what its compiled program is specialised
    to.  The dtype itself, not its name: ``str(dtype)`` was two thirds of a call's key,
    which a profile computes at each of its 1,500 calls."""
    if not hasattr(leaf, "dtype"):
        leaf = np.asarray(leaf)
    return (leaf.shape, leaf.dtype, getattr(leaf, "weak_type", False))


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
    elements = sum(int(np.size(leaf)) for leaf in lazy_jax.tree_flatten(args)[0])
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


def prepare_together(calls) -> None:
    """Compile (or load) several programs before their first calls, ``calls`` a list of
    (program, args), in threads: XLA compiles with Python's lock released, so one
    program's compilation overlaps another's tracing and compilation.  Only stored
    programs (:class:`Precompiled`; a ``jax.jit`` function compiles on its first call), and
    not those that a process without ``jax`` runs through :mod:`jaxhlm.stored_run`; where
    two or more are left, ``jax`` is imported here, before the threads.  Nothing raises
    here: a program that fails to compile fails at its first call, in the caller's thread."""
    calls = [(program, args) for program, args in calls
             if isinstance(program, Precompiled) and not program.runs_stored(*args)]
    if len(calls) < 2:
        return
    lazy_jax.load()   # once, here, not in the threads

    def prepare(call):
        try:
            call[0].executable(*call[1])
        except Exception:  # noqa: BLE001 - the first call compiles it again, and raises there
            pass

    with ThreadPoolExecutor(len(calls)) as pool:
        list(pool.map(prepare, calls))


class Precompiled:
    """``jitted(*args)`` through an in-memory and an on-disk store of compiled programs.

    Calling this object returns what ``jax.jit(fun, static_argnums=static_argnums,
    compiler_options=...)(*args)`` returns (that function is :attr:`jitted`), with XLA
    compiler options ``cpu_options`` on a CPU backend only (e.g. :data:`OLDER_EMITTERS`),
    and ``level(args)`` (e.g. :func:`by_size` of the dynamic arguments), when given, as
    XLA's backend optimisation level of each call on a CPU (a stored program per level).
    ``depends`` names other packages whose code the program traces (e.g. ``"numpyro"``):
    their versions key the stored file, as JAX's and jaxhlm's do.  ``without_jax``: the
    program is also stored for :mod:`jaxhlm.stored_run`, which runs it (NumPy arrays out)
    while ``jax`` is not imported, for callers that need nothing else of JAX.
    """

    def __init__(self, fun, static_argnums: tuple[int, ...], name: str, *,
                 cpu_options: dict | None = None, level=None, depends: tuple[str, ...] = (),
                 without_jax: bool = False):
        self.fun = fun
        self.without_jax = without_jax
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
        level = self._level(dynamic)
        key = (static, tree, tuple(_leaf_spec(leaf) for leaf in leaves), level)
        compiled = self._memory.get(key)
        if compiled is None:
            compiled = self._memory[key] = self._load_or_compile(key, args)
        return compiled, dynamic, level

    def _level(self, dynamic):
        """XLA's optimisation level of a call (``level``, on a CPU only), or None."""
        if self.level is None:
            return None
        if not lazy_jax.loaded():   # JAX's backend, once imported, is the one CPU (jaxhlm.stored_run)
            return self.level(dynamic)
        return self.level(dynamic) if jax.default_backend() == "cpu" else None

    def runs_stored(self, *args) -> bool:
        """Whether a call with ``args`` would run through :mod:`jaxhlm.stored_run` (no
        ``jax`` imported yet, and the program stored for it)."""
        if not self.without_jax or self.depends or lazy_jax.loaded():
            return False
        static, dynamic = self._split(args)
        return stored_run.has(self.name, static, dynamic, self._level(dynamic))

    def __call__(self, *args):
        if self.without_jax and not self.depends and not lazy_jax.loaded():
            static, dynamic = self._split(args)
            out = stored_run.call(self.name, static, dynamic, self._level(dynamic))
            if out is not None:
                return out
        compiled, dynamic, level = self._stored(args)
        if compiled is False:  # not storable: JAX's own jit and caches
            prepare_custom_calls()
            return self._jitted_at(level)(*args)
        return compiled(*dynamic)

    def executable(self, *args):
        """The compiled program for ``args``, a function of their dynamic (not static)
        arguments, without running it: loaded or compiled and stored as a call would,
        or, where it cannot be stored, compiled ahead of time by JAX's jit."""
        compiled, _, level = self._stored(args)
        if compiled is not False:
            return compiled
        prepare_custom_calls()
        with paused():
            lowered = self._jitted_at(level).lower(*args)
        return lowered.compile()

    def file_key(self, key) -> str:
        """The stored file's name: a hash of everything the compiled program depends on."""
        static, tree, specs, level = key
        device = jax.devices()[0]
        text = repr((self.name, source_hash(), jax.__version__, jaxlib.__version__,
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

    def _without_jax_path(self, directory: Path, key, args) -> Path | None:
        """The file :mod:`jaxhlm.stored_run` keeps this program in, or None where it runs
        through JAX only."""
        if not self.without_jax or self.depends:
            return None
        static, dynamic = self._split(args)
        return directory / f"{self.name}-{stored_run.key(self.name, static, dynamic, key[3])}{stored_run.SUFFIX}"

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
            prepare_custom_calls()
            loaded = serialize_executable.deserialize_and_load(*stored)
            for used in (path, self._without_jax_path(directory, key, args)):
                if used is not None:   # recently used, with its stored_run file: the last to be evicted
                    with contextlib.suppress(OSError):
                        os.utime(used)
            return loaded
        except FileNotFoundError:
            pass
        except Exception:  # unreadable or stale: compile again
            with contextlib.suppress(OSError):
                path.unlink()
        prepare_custom_calls()   # before JAX's lowering, which would import scipy.linalg for them
        with paused():   # tracing and lowering: the collector finds nothing to free there
            lowered = self._named(file_key, key[3]).lower(*args)
        if "callback" in lowered.as_text():
            return False
        hits, me = [], threading.get_ident()

        def listen(event, **_):   # this thread's compilation (:func:`prepare_together` runs several)
            if event == _CACHE_HIT and threading.get_ident() == me:
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
            xla = self._without_jax_path(directory, key, args)
            if xla is not None:   # a file evicted alone is written again only here: one loaded
                stored_run.save(xla, compiled, self._split(args)[1])   # from a store has no machine code
            _evict(directory, path)
        except Exception:  # a read-only cache directory, or a program that does not serialize
            pass
        return compiled
