"""Many fits at once: one design with many responses, simulation, parametric bootstrap.

A response enters the blocks only through Z_1'y, the last row and column of ``Arr``
and nobs (:func:`jaxhlm.blocks.with_responses`), so B responses on one design are B
copies of those small arrays around one shared design; ``jax.vmap`` of
:func:`jaxhlm.fitting.fit_blocks` fits them all in one compiled program, and a
replicate costs nothing in n.  Batches run in chunks of ``batch_size`` (the last one
padded, so every chunk reuses one compilation) to bound memory, and each chunk's batch
axis is sharded across all visible devices (``jax.sharding``: a one-axis Mesh and
NamedSharding; the design is replicated).  Inside a batch nothing raises: each fit
carries its ``status``.

Simulation follows lme4's ``simulate.merMod``: y* = X beta-hat + Z Lambda-hat u + e
with u ~ N(0, sigma-hat^2 I) and e ~ N(0, sigma-hat^2 I).  Replicate i draws from
``jax.random.fold_in(key, i)``, so the same seed gives the same replicates whatever the
chunking.  The parametric bootstrap (lme4's ``bootMer``, MixedModels.jl's
``parametricbootstrap``) simulates, then refits each replicate.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .blocks import Blocks, response_axes, with_responses
from .fitting import Options, fit_blocks
from .kernel import lambdas
from .optimize import Status
from .results import SINGULAR_TOL, term_covariances

if TYPE_CHECKING:
    from .model import LMM
    from .results import LMMResult


STRAGGLER_AFTER = 20
"""Iterations of the first pass over a batch; fits still running then continue in a
second, smaller batch (vmapped fits step together until the slowest is done, and a
rare slow fit, e.g. a singular one creeping along a flat valley, would otherwise hold
its whole chunk for 100+ steps while the median fit needs under 10)."""


STRAGGLER_CHUNK = 64


@functools.partial(jax.jit, static_argnames=("st", "reml", "options", "axes"))
def _fit_chunk(blocks, theta0, st, reml, options, axes):
    return jax.vmap(lambda b, t: fit_blocks(b, st, reml, options, t),
                    in_axes=(Blocks(*axes), 0))(blocks, theta0)


@dataclasses.dataclass
class BatchResult:
    """B fits of one model: arrays with the batch on the first axis.

    ``objective`` (B,), ``fixef`` and ``fixef_se`` (B, p), ``theta`` (B, ntheta),
    ``sigma`` (B,), ``sd`` (B, k) and ``corr`` (B, c) named by ``sd_names`` and
    ``corr_names`` (the rows of ``varcorr``), ``status``, ``iterations``,
    ``converged`` and ``singular`` (B,).
    """

    model: "LMM"
    reml: bool
    objective: np.ndarray
    fixef: np.ndarray
    fixef_se: np.ndarray
    theta: np.ndarray
    sigma: np.ndarray
    status: np.ndarray
    iterations: np.ndarray
    sd: np.ndarray = dataclasses.field(init=False)
    sd_names: list[str] = dataclasses.field(init=False)
    corr: np.ndarray = dataclasses.field(init=False)
    corr_names: list[str] = dataclasses.field(init=False)

    def __post_init__(self):
        self.sd, self.sd_names, self.corr, self.corr_names = _sd_corr(
            self.model.structure, self.theta, self.sigma)

    @property
    def fixef_names(self) -> list[str]:
        return list(self.model.frame.fixef_names)

    @property
    def converged(self) -> np.ndarray:
        return self.status == Status.CONVERGED

    @property
    def singular(self) -> np.ndarray:
        lower = self.model.structure.theta_lower()
        return np.any(self.theta[:, lower == 0] < SINGULAR_TOL, axis=1)

    def __len__(self) -> int:
        return self.objective.shape[0]

    def to_frame(self) -> pd.DataFrame:
        """One row per fit: objective, fixed effects and SEs, sigma, SDs, correlations, status."""
        cols = {"objective": self.objective}
        for j, name in enumerate(self.fixef_names):
            cols[name] = self.fixef[:, j]
        for j, name in enumerate(self.fixef_names):
            cols[f"se({name})"] = self.fixef_se[:, j]
        cols["sigma"] = self.sigma
        for j, name in enumerate(self.sd_names):
            cols[name] = self.sd[:, j]
        for j, name in enumerate(self.corr_names):
            cols[name] = self.corr[:, j]
        cols.update(converged=self.converged, singular=self.singular,
                    status=[Status(s).name.lower() for s in self.status], iterations=self.iterations)
        return pd.DataFrame(cols)

    def summary(self) -> str:
        """Counts by status, and the mean, SD and quantiles of each estimate over the batch."""
        frame = self.to_frame()
        numeric = frame.drop(columns=["converged", "singular", "status", "iterations"])
        stats = numeric.describe(percentiles=[0.025, 0.5, 0.975]).T[["mean", "std", "2.5%", "50%", "97.5%"]]
        counts = frame["status"].value_counts().to_dict()
        return (f"{len(self)} fits by {'REML' if self.reml else 'ML'} of {self.model.formula}\n"
                f"status: {counts}; singular: {int(self.singular.sum())}\n"
                f"{stats.to_string(float_format=lambda v: f'{v:.5g}')}")

    def confint(self, level: float = 0.95) -> pd.DataFrame:
        """Bootstrap intervals per parameter: percentile and shortest coverage.

        Percentile: the (1-level)/2 and (1+level)/2 quantiles of the converged
        replicates.  Shortest: the narrowest interval holding ``level`` of them
        (MixedModels.jl's ``shortestcovint``).
        """
        frame = self.to_frame()
        frame = frame[frame["converged"]]
        params = self.fixef_names + ["sigma"] + self.sd_names + self.corr_names
        rows = []
        for name in params:
            v = np.sort(frame[name].dropna().to_numpy())
            lo, hi = np.quantile(v, [(1 - level) / 2, (1 + level) / 2])
            k = max(int(np.ceil(level * v.size)), 1)
            widths = v[k - 1:] - v[:v.size - k + 1]
            j = int(np.argmin(widths))
            rows.append((name, lo, hi, v[j], v[j + k - 1]))
        return pd.DataFrame(rows, columns=["parameter", "percentile_lower", "percentile_upper",
                                           "shortest_lower", "shortest_upper"]).set_index("parameter")


def _sd_corr(st, theta: np.ndarray, sigma: np.ndarray):
    """Random-effect SDs and correlations for a batch of theta (names as varcorr's rows)."""
    sds, sd_names, corrs, corr_names = [], [], [], []
    for t, _, sd, corr in term_covariances(st, theta, sigma):
        for a, col in enumerate(t.columns):
            sds.append(sd[:, a])
            sd_names.append(f"sd({t.name}:{col})")
        for a in range(t.p):
            for b in range(a + 1, t.p):
                corrs.append(corr[:, b, a])
                corr_names.append(f"corr({t.name}:{t.columns[a]},{t.columns[b]})")
    empty = np.zeros((theta.shape[0], 0))
    return (np.stack(sds, 1) if sds else empty, sd_names,
            np.stack(corrs, 1) if corrs else empty, corr_names)


def _shard(many: Blocks, axes: Blocks, devices) -> Blocks:
    """Place the batch axis across all devices (a one-axis Mesh, NamedSharding); the
    design's shared arrays are replicated.  One device: a plain transfer."""
    if len(devices) == 1:
        return jax.device_put(many)
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(devices), ("batch",))
    spec = Blocks(*[NamedSharding(mesh, PartitionSpec("batch") if a == 0 else PartitionSpec())
                    for a in axes])
    return jax.device_put(many, spec)


def _put(a, index, b):
    a = np.array(a)
    a[index] = b
    return a


def _run_chunks(model, Y, starts, reml, options, batch_size, progress, fixed=False):
    """vmapped fits of the rows of Y from the rows of ``starts``, chunk by chunk.

    Chunks hold ``batch_size`` fits (``fixed``) or the next power of two above B when
    that is smaller, padded, so that batches of varied sizes share a few compilations;
    always a multiple of the device count."""
    B = Y.shape[0]
    devices = jax.devices()
    ndev = len(devices)
    size = batch_size if fixed else min(batch_size, 1 << max(0, int(B - 1).bit_length()))
    size = -(-size // ndev) * ndev
    design = jax.device_get(model.blocks)
    parts = []
    began = time.perf_counter()
    for lo in range(0, B, size):
        chunk, theta0 = Y[lo:lo + size], starts[lo:lo + size]
        pad = size - chunk.shape[0]
        if pad:  # same shape for every chunk: one compilation
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
            theta0 = np.concatenate([theta0, np.repeat(theta0[-1:], pad, axis=0)])
        many = with_responses(model.frame, model.structure, design, chunk)
        axes = response_axes(many)
        out = jax.device_get(_fit_chunk(_shard(many, axes, devices), jnp.asarray(theta0),
                                        model.structure, bool(reml), options, tuple(axes)))
        parts.append(jax.tree_util.tree_map(lambda a: np.asarray(a)[:size - pad], out))
        if progress:
            done = min(lo + size, B)
            rate = done / (time.perf_counter() - began)
            print(f"\rfitted {done:,}/{B:,} ({rate:,.0f} fits/s)", end="" if done < B else "\n",
                  file=sys.stderr, flush=True)
    return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *parts)


def fit_many(model: "LMM", Y, reml: bool = True, *, batch_size: int = 4096,
             options: Options = Options(), progress: bool = False, theta0=None) -> BatchResult:
    """Fit B responses on the model's design: Y is (B, nobs) or a DataFrame of B columns.

    A response with missing values (NaN) is fitted on its observed rows (its own blocks,
    same shapes), without failing the batch; one with too few observed rows to fit gets
    a non-converged status.  ``theta0``: the start of every fit (default lme4's).
    """
    if isinstance(Y, pd.DataFrame):
        Y = Y.to_numpy(dtype=float).T
    Y = np.atleast_2d(np.asarray(Y, dtype=float))
    if Y.shape[1] != model.nobs:
        raise ValueError(f"each response needs {model.nobs} values (one per observation of the "
                         f"model); got responses of length {Y.shape[1]}")
    if np.isinf(Y).any():
        raise ValueError("responses contain infinite values; use NaN for a missing value")
    if options.method == "auto":
        # Vmapped fits step together until the slowest is done; BFGS's one gradient per
        # step beats Newton's n + 1 there (2x in refits/s on sleepstudy).
        options = dataclasses.replace(options, method="bfgs")
    B = Y.shape[0]
    start = model.structure.theta_start() if theta0 is None else np.asarray(theta0, float)
    starts = np.broadcast_to(start, (B, start.size))
    first = dataclasses.replace(options, max_iter=min(options.max_iter, STRAGGLER_AFTER))
    out = _run_chunks(model, Y, starts, reml, first, batch_size, progress)
    late = np.flatnonzero(out.opt.status == Status.MAX_ITERATIONS)
    if late.size and options.max_iter > first.max_iter:
        rest = dataclasses.replace(options, max_iter=options.max_iter - first.max_iter)
        more = _run_chunks(model, Y[late], out.opt.x[late], reml, rest,
                           min(batch_size, STRAGGLER_CHUNK), False, fixed=True)
        more = more._replace(opt=more.opt._replace(iterations=more.opt.iterations + first.max_iter))
        out = jax.tree_util.tree_map(lambda a, b: _put(a, late, b), out, more)
    return BatchResult(model=model, reml=bool(reml), objective=out.opt.fun,
                       fixef=out.cond.beta, fixef_se=np.sqrt(np.einsum("bii->bi", out.cond.vcov)),
                       theta=out.opt.x, sigma=out.cond.sigma, status=out.opt.status,
                       iterations=out.opt.iterations)


@functools.partial(jax.jit, static_argnames=("st",))
def _simulate_one(key, beta, theta, sigma, X, codes, Zs, st):
    lams = lambdas(theta, st)
    k_e, *k_u = jax.random.split(key, 1 + len(st.terms))
    y = X @ beta + sigma * jax.random.normal(k_e, (X.shape[0],), X.dtype)
    for t, lam, key_u, code, Z in zip(st.terms, lams, k_u, codes, Zs):
        u = sigma * jax.random.normal(key_u, (t.nlevels, t.p), X.dtype)
        b = u @ lam.T
        y = y + jnp.sum(Z * b[code], axis=1)
    return y


def simulate(result: "LMMResult", nsim: int, seed: int = 0) -> np.ndarray:
    """``nsim`` responses from the fitted model (lme4's ``simulate``): array (nsim, nobs)."""
    model = result._model
    st, frame = model.structure, model.frame
    key = jax.random.key(seed)
    args = (jnp.asarray(result.fixef.to_numpy()), jnp.asarray(result.theta),
            jnp.asarray(result.sigma), jnp.asarray(frame.X),
            tuple(jnp.asarray(t.codes) for t in frame.terms),
            tuple(jnp.asarray(t.Z) for t in frame.terms))
    draw = jax.jit(jax.vmap(lambda i: _simulate_one(jax.random.fold_in(key, i), *args, st)))
    return np.array(draw(jnp.arange(nsim)))  # a writable copy


def bootstrap(result: "LMMResult", nsim: int, seed: int = 0, *, batch_size: int = 4096,
              options: Options = Options(), progress: bool = False) -> BatchResult:
    """Parametric bootstrap: simulate ``nsim`` responses, refit each (lme4's ``bootMer``),
    starting each refit at the original estimate as lme4's ``refit`` does."""
    Y = simulate(result, nsim, seed)
    return fit_many(result._model, Y, result.reml, batch_size=batch_size, options=options,
                    progress=progress, theta0=result.theta)
