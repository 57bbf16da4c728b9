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
responses on the same design.

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

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..errors import JaxhlmError

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
    if method not in CHAIN_METHODS:
        raise JaxhlmError(f"chain_method must be one of {', '.join(map(repr, CHAIN_METHODS))}; got {method!r}")
    vectorized = jax.vmap(run, in_axes=(0, None))
    if num_chains == 1:
        return lambda keys, blocks: jax.tree.map(lambda x: x[None], run(keys[0], blocks))
    if method == "sequential":
        return lambda keys, blocks: lax.map(lambda k: run(k, blocks), keys)
    if method == "vectorized":
        return vectorized
    devices = jax.local_devices()
    n = max(d for d in range(1, min(len(devices), num_chains) + 1) if num_chains % d == 0)
    if n == 1:
        if num_chains > 1:
            warnings.warn(f"chain_method='parallel': JAX sees {len(devices)} local device(s), which cannot "
                          f"share {num_chains} chains; the chains run vectorized on one device",
                          stacklevel=3)
        return vectorized
    mesh = jax.sharding.Mesh(np.asarray(devices[:n]), ("chains",))
    spec = jax.sharding.PartitionSpec("chains")
    return jax.shard_map(vectorized, mesh=mesh, in_specs=(spec, jax.sharding.PartitionSpec()),
                         out_specs=spec, check_vma=False)


class ChainProgram:
    """``fn(*args)`` jit-compiled ahead of time, once per argument shape.

    A call returns ``(result, seconds)``: the result, ready, and a dict of ``compile``
    (tracing, lowering and XLA, or a load from the persistent compilation cache; 0 when
    an executable for these shapes exists already) and ``run`` (the compiled program
    alone, until its result is ready).
    """

    def __init__(self, fn: Callable):
        self._jitted = jax.jit(fn)
        self._compiled: dict[Any, Any] = {}

    def __call__(self, *args) -> tuple[Any, dict[str, float]]:
        signature = jax.tree.structure(args), tuple(
            (jnp.shape(x), jnp.result_type(x)) for x in jax.tree.leaves(args))
        began = time.perf_counter()
        compiled = self._compiled.get(signature)
        if compiled is None:
            compiled = self._compiled[signature] = self._jitted.lower(*args).compile()
        compiled_at = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        return out, {"compile": compiled_at - began, "run": time.perf_counter() - compiled_at}


def chain_keys(seed: int | jax.Array, num_chains: int) -> jax.Array:
    """``num_chains`` independent keys from an integer seed (or a key)."""
    key = jax.random.key(seed) if isinstance(seed, (int, np.integer)) else seed
    return jax.random.split(key, num_chains)
