"""Simulated data for benchmarks and simulation studies: a design, and responses drawn
from a known ("true") model on it.

The design (:func:`frame`) has ``groups`` subjects with ``obs_per_group`` observations
each, n = groups * obs_per_group rows, and the columns

- ``subject``: the group, 0 .. groups-1 (a grouping factor, as every grouping column is);
- ``item``: when ``items`` > 0, a second factor crossed with subject: observation j of
  subject i sees item (i * obs_per_group + j) mod items, so with obs_per_group = items
  every subject sees every item once (fully crossed);
- ``condition``: "a" or "b", (i + j) mod 2: within subject, balanced when obs_per_group
  is even; within item, balanced when the design is fully crossed and groups is even;
- ``time``: j = 0 .. obs_per_group-1 (a within-subject covariate, as sleepstudy's Days);
- ``x``: a standard normal covariate, drawn once from ``numpy.random.default_rng(seed)``;
- ``y``: a placeholder response (standard normal), replaced by :func:`simulate`'s.

so a formula such as ``y ~ condition + (1 | subject) + (1 | item)`` or
``y ~ time + (time | subject)`` can be fitted on it.

:func:`simulate` draws responses from the model y = X beta + Z b + e,
b ~ N(0, sigma^2 Lambda(theta) Lambda(theta)'), e ~ N(0, sigma^2 I), with parameters
per replicate, by :func:`jaxhlm.batch`'s simulator (lme4's ``simulate.merMod`` with
``newparams``).  Replicate r draws from ``jax.random.fold_in(key, index[r])``: the same
key and index give the same response whatever the batch, chunking or device.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .batch import _simulate_one

COLUMNS = "subject, item, condition, time, x, y"

SIMULATE_ELEMENTS = 1 << 24
"""Responses are drawn in chunks of about this many values (replicates x nobs), to
bound memory; every chunk has the same shape (the last one padded): one compilation."""


def frame(groups: int, obs_per_group: int, items: int = 0, seed: int = 0) -> pd.DataFrame:
    """The design described in the module docstring, as a DataFrame of groups * obs_per_group rows."""
    i = np.repeat(np.arange(groups), obs_per_group)
    j = np.tile(np.arange(obs_per_group), groups)
    rng = np.random.default_rng(seed)
    columns = {"subject": i}
    if items:
        columns["item"] = (i * obs_per_group + j) % items
    columns.update(
        condition=pd.Categorical(np.where((i + j) % 2 == 0, "a", "b"), categories=["a", "b"]),
        time=j.astype(float), x=rng.standard_normal(i.size), y=rng.standard_normal(i.size))
    return pd.DataFrame(columns)


@functools.partial(jax.jit, static_argnames=("st",))
def _draw(key, index, beta, theta, sigma, X, codes, Zs, st):
    one = lambda r, b, t, s: _simulate_one(jax.random.fold_in(key, r), b, t, s, X, codes, Zs, st)
    return jax.vmap(one)(index, beta, theta, sigma)


def simulate(model, fixef, theta, sigma, key, index) -> np.ndarray:
    """Responses (R, nobs) on ``model``'s design, one per entry of ``index`` (R,).

    ``fixef`` (p,) or (R, p), ``theta`` (ntheta,) or (R, ntheta) in lme4's order, and
    ``sigma`` () or (R,) are the true parameters, shared or one set per replicate;
    ``key`` is a ``jax.random.key``.
    """
    index = np.asarray(index, dtype=np.int64)
    R = index.shape[0]
    fixef = np.broadcast_to(np.asarray(fixef, float), (R, model.structure.p))
    ntheta = model.structure.theta_lower().size
    theta = np.broadcast_to(np.asarray(theta, float), (R, ntheta))
    sigma = np.broadcast_to(np.asarray(sigma, float), (R,))
    frame_ = model.frame
    design = (jnp.asarray(frame_.X), tuple(jnp.asarray(t.codes) for t in frame_.terms),
              tuple(jnp.asarray(t.Z) for t in frame_.terms))
    size = max(1, min(R, SIMULATE_ELEMENTS // max(model.nobs, 1)))
    out = np.empty((R, model.nobs))
    for lo in range(0, R, size):
        rows = np.arange(lo, lo + size).clip(max=R - 1)  # the last chunk padded with its last row
        y = _draw(key, jnp.asarray(index[rows]), jnp.asarray(fixef[rows]), jnp.asarray(theta[rows]),
                  jnp.asarray(sigma[rows]), *design, model.structure)
        out[lo:lo + size] = np.asarray(y)[:min(size, R - lo)]
    return out
