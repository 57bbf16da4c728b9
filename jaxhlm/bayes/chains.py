"""NUTS chains compiled once: NumPyro's NUTS kernel, run by one jit-compiled loop.

A chain is a pure function of (key, blocks): initial values (NumPyro's
``init_to_median``), ``num_warmup`` iterations of NUTS with NumPyro's windowed
adaptation of the step size (dual averaging) and of a diagonal mass matrix (Stan's
scheme), then ``num_samples * thinning`` iterations of which every ``thinning``-th is
kept.  The transition is NumPyro's own (``numpyro.infer.hmc.hmc(algo="NUTS")``:
multinomial sampling along the trajectory, generalised U-turn criterion, as in Stan);
only the loop around it is ours.

Why not ``numpyro.infer.MCMC``: it re-initialises its kernel on every ``run``, which
builds new closures, so every run with a new seed lowers its programs again and
reloads them from the compilation cache -- about 3 s for sleepstudy, several times
the sampling itself.  Here the chains are one program (warm-up and sampling share one
NUTS body, so it is compiled once), compiled ahead of time by :class:`ChainProgram`,
which reports the compilation time apart and reuses the executable for every later
run with the same shapes: other seeds, or (simulation-based calibration) other
responses on the same design.  ``LMM.sample`` and ``GLMM.sample`` run
:func:`_chains_program`, whose arrays (the data, the priors' parameters, the starting
metric, fixed values) are arguments and whose model is named by a frozen dataclass of
sites, so that :data:`CHAINS` keeps it on disk (:mod:`jaxhlm.precompiled`) for later
processes and other data sets of the bucket.

Chains are mapped by ``jax.vmap`` (``"vectorized"``: one program, chains on a batch
axis), ``lax.map`` (``"sequential"``) or ``jax.shard_map`` over the local devices
(``"parallel"``: each device runs its share of the chains, vectorized, with no
communication).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any, Callable

from ..lazy_jax import jax, jnp, lax
import numpy as np

from ..errors import JaxhlmError
from ..precompiled import Precompiled

CHAIN_METHODS = ("vectorized", "parallel", "sequential")
STATS = ("diverging", "num_steps", "accept_prob")  # per kept iteration, beside the draws


def require_int(name: str, value: Any, low: int) -> None:
    """Raise a :class:`JaxhlmError` naming ``name`` unless ``value`` is an integer >= ``low``."""
    if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low):
        raise JaxhlmError(f"{name} must be an integer >= {low}; got {value!r}")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Iteration counts and NUTS settings of one chain (NumPyro's ``NUTS`` defaults)."""

    num_warmup: int
    num_samples: int
    thinning: int = 1
    target_accept_prob: float = 0.8
    max_tree_depth: int = 10

    def __post_init__(self):
        for name in ("num_warmup", "num_samples", "thinning", "max_tree_depth"):
            require_int(name, getattr(self, name), 0 if name == "num_warmup" else 1)
        if not 0 < self.target_accept_prob < 1:
            raise JaxhlmError(f"target_accept_prob must lie in (0, 1); got {self.target_accept_prob!r}")


def chain(model_fn: Callable, schedule: Schedule, inverse_mass_matrix: dict | None = None,
          init_strategy: Callable | None = None) -> Callable:
    """One NUTS chain as a pure function ``run(key, blocks) -> (draws, stats)``.

    ``model_fn(blocks)`` is a NumPyro model.  ``draws`` maps each latent site to its
    kept values in the constrained space, shape (num_samples, ...); ``stats`` maps
    each of :data:`STATS` to shape (num_samples,).  Warm-up and sampling run in one
    loop over num_warmup + num_samples * thinning iterations with one NUTS transition
    in its body (NumPyro's kernel switches adaptation off by the iteration count); the
    unconstrained draws go to a buffer, slot ``(i - num_warmup) // thinning``, so that
    warm-up iterations only overwrite slot 0 before the first kept draw does.
    """
    from numpyro.infer import init_to_median
    from numpyro.infer.hmc import hmc
    from numpyro.infer.util import initialize_model

    init_strategy = init_strategy or init_to_median(num_samples=15)
    W, D, T = schedule.num_warmup, schedule.num_samples, schedule.thinning

    def run(key, blocks):
        key_init, key_kernel = jax.random.split(key)
        info, potential_gen, constrain_gen, _ = initialize_model(
            key_init, model_fn, model_args=(blocks,), dynamic_args=True, init_strategy=init_strategy)
        init_kernel, transition = hmc(potential_fn_gen=potential_gen, algo="NUTS")
        state = init_kernel(info, W, inverse_mass_matrix=inverse_mass_matrix, dense_mass=[],
                            target_accept_prob=schedule.target_accept_prob,
                            max_tree_depth=schedule.max_tree_depth, model_args=(blocks,),
                            rng_key=key_kernel)
        kept = lambda s: (s.z, {name: getattr(s, name) for name in STATS})  # noqa: E731
        buffer = jax.tree.map(lambda x: jnp.zeros((D,) + jnp.shape(x), jnp.result_type(x)), kept(state))

        def body(i, carry):
            state, buffer = carry
            state = transition(state, model_args=(blocks,))
            slot = jnp.clip((i - W) // T, 0, D - 1)
            buffer = jax.tree.map(lambda b, x: lax.dynamic_update_index_in_dim(b, x, slot, 0),
                                  buffer, kept(state))
            return state, buffer

        _, (z, stats) = lax.fori_loop(0, W + D * T, body, (state, buffer))
        return jax.vmap(constrain_gen(blocks))(z), stats

    return run


def map_chains(run: Callable, method: str, num_chains: int) -> Callable:
    """``run(key, blocks)`` mapped over a leading axis of ``num_chains`` keys.

    The outputs gain that leading chain axis.  ``"parallel"`` shards the chains over
    the largest number of local devices that divides ``num_chains``; with one device
    it warns and runs them vectorized.  A single chain runs unbatched whatever the
    method: under ``vmap`` NUTS's branches (``lax.cond``) become selects that compute
    both sides, which doubles the compilation time.
    """
    method = resolve_method(method, num_chains)
    vectorized = jax.vmap(run, in_axes=(0, None))
    if num_chains == 1:
        return lambda keys, blocks: jax.tree.map(lambda x: x[None], run(keys[0], blocks))
    if method == "sequential":
        return lambda keys, blocks: lax.map(lambda k: run(k, blocks), keys)
    if method == "vectorized":
        return vectorized
    devices = jax.local_devices()
    n = _shards(len(devices), num_chains)
    mesh = jax.sharding.Mesh(np.asarray(devices[:n]), ("chains",))
    spec = jax.sharding.PartitionSpec("chains")
    return jax.shard_map(vectorized, mesh=mesh, in_specs=(spec, jax.sharding.PartitionSpec()),
                         out_specs=spec, check_vma=False)


def _chains_program(key_data, data, priors, inverse_mass_matrix, fixed, sites, schedule: Schedule,
                    method: str, num_chains: int):
    """The chains of :func:`chain` for the NumPyro model ``sites.model(priors)`` (``fixed``:
    values of conditioned sites), mapped by :func:`map_chains`: a pure function of its
    arrays (the chains' keys as ``jax.random.key_data``, data, the priors' parameters, the
    starting metric, the fixed values) given its static description (``sites``, a frozen
    dataclass, and the schedule)."""
    import numpyro

    keys = jax.random.wrap_key_data(key_data)
    fn = sites.model(priors.distributions())
    if fixed:
        fn = numpyro.handlers.condition(fn, data=fixed)
    return map_chains(chain(fn, schedule, inverse_mass_matrix), method, num_chains)(keys, data)


CHAINS = Precompiled(_chains_program, (5, 6, 7, 8), "nuts_chains", depends=("numpyro",))
"""NUTS chains kept on disk by :mod:`jaxhlm.precompiled`, keyed by the model's sites, the
schedule and the shapes (an LMM's: its bucket's, :mod:`jaxhlm.padding`), so that a later
process, or another data set of the bucket, loads them instead of tracing and lowering
NumPyro's kernel again (about 4 s) and, with an empty cache, compiling it (sleepstudy's two
vectorized chains: 25.9 s to compile, 1.0 s to load; README, "First calls")."""


def _shards(devices: int, num_chains: int) -> int:
    """The largest number of devices, at most ``devices``, that divides ``num_chains``."""
    return max(d for d in range(1, min(devices, num_chains) + 1) if num_chains % d == 0)


def resolve_method(method: str, num_chains: int) -> str:
    """``method``, checked; ``"parallel"`` becomes ``"vectorized"``, with a warning, where the
    local devices cannot share the chains (:func:`map_chains`)."""
    if method not in CHAIN_METHODS:
        raise JaxhlmError(f"chain_method must be one of {', '.join(map(repr, CHAIN_METHODS))}; got {method!r}")
    devices = len(jax.local_devices())
    if method == "parallel" and num_chains > 1 and _shards(devices, num_chains) == 1:
        warnings.warn(f"chain_method='parallel': JAX sees {devices} local device(s), which cannot "
                      f"share {num_chains} chains; the chains run vectorized on one device", stacklevel=4)
        return "vectorized"
    return method


class ChainProgram:
    """A program compiled ahead of time, once per argument shape: ``fn(*args)`` by JAX's
    jit, or, for :meth:`chains`, :data:`CHAINS` through :mod:`jaxhlm.precompiled`.

    A call returns ``(result, seconds)``: the result, ready, and a dict of ``compile``
    (tracing, lowering and XLA, a load from the persistent compilation cache, or of a
    stored program; 0 when an executable for these shapes exists already) and ``run`` (the
    compiled program alone, until its result is ready).
    """

    def __init__(self, fn: Callable | None = None, *, static: tuple = (), priors=None):
        self._jitted = None if fn is None else jax.jit(fn)
        self._static = tuple(static)
        self._priors = priors
        self._compiled: dict[Any, Any] = {}

    @classmethod
    def chains(cls, sites, schedule: Schedule, method: str, num_chains: int, priors,
               storable: bool) -> "ChainProgram":
        """The chains of :func:`_chains_program` for ``priors``, called with (key data,
        data, metric, fixed): stored (:data:`CHAINS`, the priors an argument) where
        ``storable`` (jaxhlm's own covariance structures and family, and priors in their
        ``arrays()`` form: what the key names is what runs); else jitted with the priors
        in its closure (a user's distribution need not be a pytree)."""
        static = (sites, schedule, resolve_method(method, num_chains), num_chains)
        if storable:
            return cls(static=static, priors=priors)
        return cls(lambda key_data, data, metric, fixed: _chains_program(key_data, data, priors, metric, fixed,
                                                                         *static))

    def __call__(self, *args) -> tuple[Any, dict[str, float]]:
        if self._jitted is None:  # the stored chains: their priors after (key data, data)
            args = args[:2] + (self._priors,) + args[2:]
        signature = jax.tree.structure(args), tuple(
            (jnp.shape(x), jnp.result_type(x)) for x in jax.tree.leaves(args))
        began = time.perf_counter()
        compiled = self._compiled.get(signature)
        if compiled is None:
            compiled = self._compiled[signature] = (
                self._jitted.lower(*args).compile() if self._jitted is not None
                else CHAINS.executable(*args, *self._static))
        compiled_at = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        return out, {"compile": compiled_at - began, "run": time.perf_counter() - compiled_at}


def chain_keys(seed: int | jax.Array, num_chains: int) -> jax.Array:
    """``num_chains`` independent keys from an integer seed (or a key)."""
    key = jax.random.key(seed) if isinstance(seed, (int, np.integer)) else seed
    return jax.random.split(key, num_chains)
