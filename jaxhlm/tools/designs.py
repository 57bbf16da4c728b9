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
- ``arm``: "control" or "treated", i mod 2: between subjects (a cluster randomized
  trial's arms, the subjects its clusters);
- ``time``: j = 0 .. obs_per_group-1 (a within-subject covariate, as sleepstudy's Days);
- ``x``: a standard normal covariate, drawn once from ``numpy.random.default_rng(seed)``;
- ``y``: a placeholder response (standard normal), replaced by :func:`simulate`'s.

so a formula such as ``y ~ condition + (1 | subject) + (1 | item)`` or
``y ~ time + (time | subject)`` can be fitted on it.

:func:`simulate` draws responses from the model y = X beta + Z b + e,
b ~ N(0, sigma^2 Lambda(theta) Lambda(theta)'), e ~ N(0, sigma^2 I), with parameters
per replicate: it is :func:`jaxhlm.batch.simulate_responses` (lme4's ``simulate.merMod`` with
``newparams``).  Replicate r draws from ``jax.random.fold_in(key, index[r])``: the same
key and index give the same response whatever the batch, chunking or device.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..batch import simulate_responses as simulate  # noqa: F401  (responses from a true model)

COLUMNS = "subject, item, condition, arm, time, x, y"


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
        arm=pd.Categorical(np.where(i % 2 == 0, "control", "treated"), categories=["control", "treated"]),
        time=j.astype(float), x=rng.standard_normal(i.size), y=rng.standard_normal(i.size))
    return pd.DataFrame(columns)
