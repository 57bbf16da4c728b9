"""Many GLMM fits at once: one design with many responses, simulation, parametric bootstrap.

As for LMMs (:mod:`jaxhlm.batch`), B responses on one design are B fits of one vmapped
program: :func:`jaxhlm.glmm_fit.fit_program` with the response batched and everything else
(the design's patterns, X, offsets, trials) shared, in chunks of
:func:`jaxhlm.batch.chunk_size` fits (the last one padded with its last response, so
every chunk has one shape and one compilation).  PIRLS and the outer optimiser run as
while loops inside the program; vmapped, a chunk steps until its slowest fit is done.
Inside nothing raises: each fit carries its status (:class:`jaxhlm.optimize.Status`,
with ``pirls_diverged`` and ``separation`` for GLMMs, :func:`jaxhlm.glmm_fit.status`).

Simulation follows lme4's ``simulate.merMod`` for glmer: u ~ N(0, I), b_k = Lambda_k u_k,
eta = offset + X beta + Z b and y ~ the family at mu = g^{-1}(eta) (binomial proportions
of the model's trials, Poisson counts).  Replicate i draws from
``jax.random.fold_in(key, i)``, so a seed gives the same replicates whatever the chunking.
The parametric bootstrap (lme4's ``bootMer``) refits each replicate, starting from the
fit's estimates as lme4's ``refit`` does.
"""

from __future__ import annotations

import dataclasses

from .lazy_jax import jax, jnp
import numpy as np
import pandas as pd

from .batch import (SIMULATE_ELEMENTS, STRAGGLER_AFTER, BatchResult, _put, chunk_size, given_hessian,
                    run_chunks)
from .errors import DataError
from .glmm_fit import default_start, fit_program, stored
from .optimize import Status
from .pirls import linear_predictor
from .pages import small_pages
from .precompiled import Precompiled

CHUNK_CPU = 32
"""GLMM fits per chunk on a CPU (unless ``batch_size`` says otherwise): a vmapped chunk waits
for its slowest PIRLS at every step, so narrower chunks waste less: 1,000 fresh cbpp fits
took 0.88 s in chunks of 32, 0.98 s of 64 and 1.31 s of 128; 1,000 bootstrap refits (warm
starts, the fit's Hessian) 0.46-0.47 s at any of these (medians of 5-6 repeats in one
process, 2-core CPU, 2026-12-03)."""


@dataclasses.dataclass
class GLMMBatchResult(BatchResult):
    """B GLMM fits (the fields of :class:`jaxhlm.batch.BatchResult`, without sigma: the
    scale is 1); ``nagq`` as in :meth:`jaxhlm.GLMM.fit`.  :meth:`coef_table` gives every
    fit's z tests."""

    nagq: int = 1
    has_sigma = False

    @property
    def method(self) -> str:
        return {0: "nAGQ = 0", 1: "Laplace"}.get(self.nagq, f"AGQ (nAGQ = {self.nagq})")

    def coef_table(self) -> pd.DataFrame:
        """Every fit's Wald z tests (glmer's), indexed by (fit, coefficient)."""
        from scipy import special

        z = self.fixef / self.fixef_se
        index = pd.MultiIndex.from_product([range(len(self)), self.fixef_names], names=["fit", "coefficient"])
        return pd.DataFrame({"Estimate": self.fixef.ravel(), "Std. Error": self.fixef_se.ravel(),
                             "z value": z.ravel(), "Pr(>|z|)": 2 * special.ndtr(-np.abs(z.ravel()))},
                            index=index)


def _fit_chunk_program(Y, starts, fresh, hessian0, max_iter, data, st, family, nagq):
    """vmapped fits of the responses Y, each from its row of ``starts`` or, where ``fresh``,
    from the default start (computed only when some fit of the chunk needs it; ``fresh``
    None: no fit of the batch does, and the program holds no default start, whose PIRLS
    with beta inside is a second loop to compile), BFGS from ``hessian0`` (a refit's: the
    original fit's; None: probed); at most ``max_iter`` iterations (an argument: both
    passes of :func:`fit_many` run this one program)."""
    def default_starts():
        default = jax.vmap(lambda y: default_start(data._replace(y=y), st, family, nagq))(Y)
        return jnp.where(fresh[:, None], default, starts)

    if fresh is not None:
        starts = jax.lax.cond(jnp.any(fresh), default_starts, lambda: starts)

    def one(y, x0):
        return fit_program(data._replace(y=y), st, family, nagq, max_iter, x0, hessian0)

    out = jax.vmap(one)(Y, starts)
    return out, jax.vmap(st.lambdas)(out[2])


_FIT_CHUNK = Precompiled(_fit_chunk_program, (6, 7, 8), "glmm_fit_chunk")


def _run_chunks(model, Y, starts, fresh, hessian0, nagq, max_iter, size, progress):
    st, data = model.bucketed     # nearby designs share the program (jaxhlm.padding)
    program = stored(_FIT_CHUNK, st, model.family)
    Y = model.padded_responses(Y)

    def dispatch(index):
        return program(jnp.asarray(Y[index]), jnp.asarray(starts[index]),
                       None if fresh is None else jnp.asarray(fresh[index]),
                       hessian0, np.int64(max_iter), data, st, model.family, nagq)

    return run_chunks(dispatch, jax.device_get, Y.shape[0], size, progress)


def responses(model, Y) -> np.ndarray:
    """Y as (B, nobs) floats, each response checked as the model's own (the family's rules)."""
    Y = Y.to_numpy(float).T if isinstance(Y, pd.DataFrame) else np.asarray(Y, dtype=float)
    if Y.ndim == 1:
        Y = Y[None]
    if Y.ndim != 2 or Y.shape[1] != model.nobs:
        raise DataError(f"Y must be (B, {model.nobs}) responses on the model's rows; got shape {Y.shape}")
    rows = model.frame.data.index
    for r, y in enumerate(Y):
        if not np.all(np.isfinite(y)):
            raise DataError(f"response {r} of Y has a missing or infinite value in row "
                            f"{rows[int(np.flatnonzero(~np.isfinite(y))[0])]!r}")
        model.family.check(y, model.data.trials, f"(response {r} of Y)", rows)
    return Y


@small_pages()
def fit_many(model, Y, nagq: int = 1, *, batch_size: int | None = None, max_iter: int = 200,
             progress: bool = False, start=None, hessian0=None) -> GLMMBatchResult:
    """Fit B responses (Y, (B, nobs) or a DataFrame of B columns, on the model's response
    scale) on ``model``'s design; ``start``: x0 for every fit (theta, then beta; theta
    alone for nagq=0), else the default start per fit
    (:func:`jaxhlm.glmm_fit.default_start`); ``hessian0``: BFGS's starting Hessian for
    every fit (the deviance's at a nearby optimum), else probed per fit."""
    return _fit_checked(model, responses(model, Y), nagq, batch_size, max_iter, progress, start, hessian0)


def _fit_checked(model, Y, nagq, batch_size, max_iter, progress, start, hessian0) -> GLMMBatchResult:
    """:func:`fit_many` of responses (B, nobs) already checked (or simulated by the family)."""
    B = Y.shape[0]
    if batch_size is None and jax.default_backend() == "cpu":
        batch_size = CHUNK_CPU
    size = chunk_size(B, batch_size, 1)
    k = model.structure.ntheta + (model.structure.p if nagq else 0)
    fresh = np.ones(B, bool) if start is None else None   # None: no default start in the program
    starts = np.zeros((B, k)) if start is None else np.broadcast_to(np.asarray(start, float), (B, k))
    hessian0 = given_hessian(hessian0, k)
    # Vmapped fits step together until the slowest is done: a first pass of at most
    # STRAGGLER_AFTER iterations, then the few fits still running go on in chunks of their own.
    first = min(max_iter, STRAGGLER_AFTER)
    out = _run_chunks(model, Y, starts, fresh, hessian0, nagq, first, size, progress)
    late = np.flatnonzero(out[0][0].status == Status.MAX_ITERATIONS)
    if late.size and max_iter > first:
        resumed = None if fresh is None else np.zeros(late.size, bool)
        more = _run_chunks(model, Y[late], out[0][0].x[late], resumed, hessian0, nagq, max_iter - first, size, False)
        opt = more[0][0]
        more = ((opt._replace(iterations=opt.iterations + first),) + more[0][1:], more[1])
        out = jax.tree_util.tree_map(lambda a, b: _put(a, late, b), out, more)
    (opt, _m, theta, beta, vcov, code, _hessian), lams = out
    return GLMMBatchResult(model=model, reml=False, objective=opt.fun, fixef=beta,
                           fixef_se=np.sqrt(np.einsum("bii->bi", vcov)), theta=theta,
                           sigma=np.ones(B), status=code, iterations=opt.iterations, lams=tuple(lams),
                           nagq=nagq)


def _draw_program(key_data, index, beta, theta, data, st, family):
    """Responses at (beta, theta) per replicate ``index``: b_k = u_k Lambda_k' with u_k ~
    N(0, I) (ell_k, p_k), then the family's draw at mu.  JAX's partitionable threefry draws
    each element from its index, so the own levels and rows draw the same values whatever
    the padding (:func:`simulate_responses`), up to the last bit of mu: XLA may fuse
    x beta_1 + beta_0 into one multiply-add in its vectorised loop and not in its
    remainder, which moves with the row count.  A 0/1 draw (u < mu) is then the same;
    Poisson's rejection sampler (means above 10) takes another path for some draws
    (0.12% of the counts of a 333-row design, ``tests/test_buckets.py``).  A data set
    and seed give the same draws in every run (its bucket is fixed)."""
    key = jax.random.wrap_key_data(key_data)

    def one(r, beta, theta):
        k_y, *k_u = jax.random.split(jax.random.fold_in(key, r), 1 + len(st.terms))
        b = [jax.random.normal(k, (t.nlevels, t.p), beta.dtype) @ lam.T
             for k, t, lam in zip(k_u, st.terms, st.lambdas(theta))]
        return family.sample(k_y, family.link.inverse(linear_predictor(beta, b, data)), data.trials)

    return jax.vmap(one)(index, beta, theta)


_DRAW = Precompiled(_draw_program, (5, 6), "glmm_simulate")
"""The simulator, compiled and stored (:mod:`jaxhlm.precompiled`): a later process loads it."""


@small_pages()
def simulate_responses(model, fixef, theta, key, index) -> np.ndarray:
    """Responses (R, nobs) on ``model``'s design, one per entry of ``index`` (R,), at
    ``fixef`` (p,) or (R, p) and ``theta`` (ntheta,) or (R, ntheta) (shared or one set per
    replicate); replicate r draws from ``fold_in(key, index[r])`` (module docstring)."""
    index = np.asarray(index, dtype=np.int64)
    R = index.shape[0]
    st, data = model.bucketed   # the bucket's program; JAX's partitionable threefry draws the
    # own rows and levels the same values whatever the padding (jaxhlm.batch.simulate_responses)
    fixef = np.broadcast_to(np.asarray(fixef, float), (R, st.p))
    theta = np.broadcast_to(np.asarray(theta, float), (R, st.ntheta))
    if jnp.issubdtype(getattr(key, "dtype", np.uint32), jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    key = np.asarray(key)
    size = min(chunk_size(R), max(1, SIMULATE_ELEMENTS // max(data.y.shape[0], 1)))
    if np.all(model.data.trials == 1):   # one trial per row: the family's simpler sampler (0/1 draws)
        data = data._replace(trials=None)
    out = np.empty((R, model.nobs))
    for lo in range(0, R, size):
        at = np.arange(lo, lo + size).clip(max=R - 1)
        y = stored(_DRAW, st, model.family)(key, index[at], fixef[at], theta[at], data, st, model.family)
        out[lo:lo + size] = np.asarray(y)[:min(size, R - lo), :model.nobs]
    return out


def simulate(model, fixef, theta, nsim: int, seed: int = 0) -> np.ndarray:
    """``nsim`` responses (nsim, nobs) at (beta, theta) on ``model``'s design (module docstring)."""
    return simulate_responses(model, fixef, theta, jax.random.key(seed), np.arange(nsim))


def bootstrap(result, nsim: int, seed: int = 0, *, batch_size: int | None = None,
              progress: bool = False) -> GLMMBatchResult:
    """Parametric bootstrap of a GLMM fit: simulate, then refit from its estimates (as lme4's
    ``refit``), BFGS starting from the deviance's Hessian there (nagq >= 1)."""
    model = result._model
    Y = simulate(model, result.fixef.to_numpy(), result.theta, nsim, seed)
    start = result.theta if result.nagq == 0 else np.concatenate([result.theta, result.fixef.to_numpy()])
    hessian0 = None if result.nagq == 0 else result._hessian
    return _fit_checked(model, Y, result.nagq, batch_size, max_iter=200, progress=progress, start=start,
                        hessian0=hessian0)
