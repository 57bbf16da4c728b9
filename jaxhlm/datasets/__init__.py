"""Example data sets bundled with jaxhlm: public data of the R package lme4, and eight schools.

``load(name)`` returns a pandas DataFrame with R's factors as pandas categoricals
(levels sorted as R sorts them), so that formulas treat them as lme4 does;
``names()`` lists the data sets.  Source: lme4 (Bates, Maechler, Bolker and Walker),
exported to CSV by R's ``write.csv``; see each data set's help page in lme4.
``eight_schools``: Rubin (1981), the coaching effects y and their standard errors
sigma (``se2`` = sigma^2), as in Gelman et al., Bayesian Data Analysis, section 5.5.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import pandas as pd

from ..errors import DataError

_DATA = resources.files(__package__) / "data"


@lru_cache(maxsize=1)
def _meta() -> dict:
    return json.loads((_DATA / "datasets.json").read_text())


def names() -> list[str]:
    """The names of the bundled data sets."""
    return sorted(_meta())


def load(name: str) -> pd.DataFrame:
    """Load a bundled data set by name (case-insensitive), e.g. ``load("sleepstudy")``."""
    meta = _meta()
    match = {k.lower(): k for k in meta}.get(str(name).lower())
    if match is None:
        raise DataError(f"no bundled data set {name!r}; available: {', '.join(names())}")
    factors = meta[match]["factors"]
    with (_DATA / f"{match}.csv.gz").open("rb") as fh:
        df = pd.read_csv(fh, compression="gzip", dtype={c: str for c in factors})
    for c in factors:
        df[c] = pd.Categorical(df[c])
    return df
