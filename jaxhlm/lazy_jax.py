"""JAX, imported when jaxhlm first uses it, so that a process that only runs stored programs never imports it.

Importing ``jax`` takes 0.25-0.35 s on a 2-core CPU beyond its compiled extension
(``jaxlib._jax``, 0.07 s), and a whole process that fits one model from a stored program
(:mod:`jaxhlm.stored_run`) needs the extension alone.  So jaxhlm's modules do not import
``jax`` at their top; they write::

    from .lazy_jax import jax, jnp, lax

and these names are :class:`LazyModule` proxies: the first attribute looked up through one
imports the module (``jax.numpy``, ...), and every lookup returns that module's attribute.
Module-level code must not look anything up through them (no ``@jax.jit`` at a module's
top: :func:`jaxhlm.kernel.dense_parts` shows the pattern, a function built on first call).

jaxhlm's process-wide settings (float64, the compilation cache: :func:`jaxhlm._config.configure`)
must hold before any program is traced, whoever imports ``jax`` first: the user, a library, or a
proxy.  :func:`after_import` registers them; they run as soon as ``jax`` has been imported (an import
hook, :class:`_AfterJax`, runs them right after ``jax``'s own module has executed), or at once when
``jax`` is imported already.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.util
import sys
import threading

_CALLBACKS: list = []
_READY = threading.Event()   # jax imported and every callback run
_LOCK = threading.RLock()


class LazyModule:
    """A module imported on its first attribute lookup (``LazyModule("jax.numpy").zeros``)."""

    __slots__ = ("_name", "_module")

    def __init__(self, name: str):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_module", None)

    def __getattr__(self, attr: str):
        module = self._module
        if module is None:
            from .collector import paused

            with paused():   # jax's import, 0.03-0.04 s faster without the collector
                module = importlib.import_module(self._name)
            _run_callbacks()   # jax imported before the hook was installed (or by this lookup)
            object.__setattr__(self, "_module", module)
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<lazily imported {self._name}>"


jax = LazyModule("jax")
jnp = LazyModule("jax.numpy")
lax = LazyModule("jax.lax")
scipy_special = LazyModule("jax.scipy.special")
scipy_linalg = LazyModule("jax.scipy.linalg")


def lazy_jit(fun=None, **options):
    """``jax.jit(fun, **options)``, built on the first call: a decorator for module-level
    functions (``@jax.jit`` there would import ``jax`` with the module)."""
    if fun is None:
        return functools.partial(lazy_jit, **options)
    built: list = []

    @functools.wraps(fun)
    def call(*args, **kwargs):
        if not built:
            built.append(jax.jit(fun, **options))
        return built[0](*args, **kwargs)

    return call


def value_and_grad(fun):
    """``jax.value_and_grad(fun)`` (with respect to the first argument), built when called."""

    @functools.wraps(fun)
    def call(*args):
        return jax.value_and_grad(fun)(*args)

    return call


def load() -> None:
    """Import ``jax`` now, with jaxhlm's settings applied, as a first attribute lookup would."""
    getattr(jax, "config")


def loaded() -> bool:
    """Whether ``jax`` has been imported in this process (by anyone) and configured."""
    return _READY.is_set()


def after_import(callback) -> None:
    """Run ``callback()`` once ``jax`` is imported: now if it is, else right after its import."""
    with _LOCK:
        ready = _READY.is_set()
        if not ready:
            _CALLBACKS.append(callback)
    if ready:
        callback()
    else:
        _run_callbacks()


def _imported() -> bool:
    """Whether ``jax``'s import has finished (not merely begun, in this or another thread)."""
    module = sys.modules.get("jax")
    spec = getattr(module, "__spec__", None)
    return module is not None and hasattr(module, "config") and not getattr(spec, "_initializing", False)


def _run_callbacks(imported: bool = False) -> None:
    """Run the callbacks once ``jax``'s import has finished (``imported``: the hook says so,
    from inside that import).  A callback that fails is reported as a warning: it must not
    make ``import jax`` itself fail."""
    if _READY.is_set() or not (imported or _imported()):
        return
    with _LOCK:
        if _READY.is_set():
            return
        while _CALLBACKS:
            callback = _CALLBACKS.pop(0)
            try:
                callback()
            except Exception as err:  # noqa: BLE001 - the user's import of jax goes on
                import warnings

                warnings.warn(f"jaxhlm could not apply its JAX settings ({callback!r}): {err}",
                              RuntimeWarning, stacklevel=2)
        _READY.set()


class _ThenCallbacks(importlib.abc.Loader):
    """``jax``'s own loader, then the callbacks; the module keeps its own loader."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        try:
            self.loader.exec_module(module)
        finally:
            spec = getattr(module, "__spec__", None)
            if spec is not None:
                spec.loader = self.loader
            module.__loader__ = self.loader
        _run_callbacks(imported=True)


class _AfterJax(importlib.abc.MetaPathFinder):
    """Finds ``jax`` through the other finders and wraps its loader (:class:`_ThenCallbacks`)."""

    _searching = threading.local()

    def find_spec(self, name, path=None, target=None):
        if name != "jax" or _READY.is_set() or getattr(self._searching, "on", False):
            return None
        self._searching.on = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self._searching.on = False
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenCallbacks(spec.loader)
        return spec


def install_hook() -> None:
    """Arrange for :func:`after_import`'s callbacks to run when ``jax`` is imported."""
    if "jax" in sys.modules:   # imported, or being imported by another thread (then it runs them)
        _run_callbacks()
    if not _READY.is_set() and not any(isinstance(f, _AfterJax) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterJax())


def tree_flatten(tree):
    """(leaves, tree structure) of a pytree: ``jax.tree_util.tree_flatten`` once ``jax`` is
    imported; before, by jaxlib's registry, the one ``jax.tree_util`` uses (the same leaves
    and structure), or, under a jaxlib without it where it is, through ``jax``."""
    if not loaded():
        try:
            from jaxlib import _jax

            registry = _jax.pytree.default_registry()
        except (ImportError, AttributeError):
            registry = None
        if registry is not None:
            return registry.flatten(tree)
    return jax.tree_util.tree_flatten(tree)


def tree_map(f, tree, *rest):
    """``jax.tree_util.tree_map(f, tree, *rest)`` by jaxlib's registry, without importing ``jax``."""
    leaves, treedef = tree_flatten(tree)
    others = [treedef.flatten_up_to(r) for r in rest]
    return treedef.unflatten([f(*xs) for xs in zip(leaves, *others)])


def is_traced(tree) -> bool:
    """Whether any leaf of ``tree`` is a JAX tracer (inside jit, vmap or grad): never before
    ``jax`` is imported."""
    if not loaded():
        return False
    Tracer = jax.core.Tracer
    return any(isinstance(leaf, Tracer) for leaf in tree_flatten(tree)[0])


def to_host(tree):
    """``jax.device_get(tree)``; a tree of host arrays as it is while ``jax`` is not imported."""
    return jax.device_get(tree) if loaded() else tree
