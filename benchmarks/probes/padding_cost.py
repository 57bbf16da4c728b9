"""Probe: what padding to the ladder costs (jaxhlm.padding).  For each model, in one
process: the warm single fit (median of 200) and a bootstrap (median of 3 after a
warm-up), with padding off (``padding.ENABLED = False``), on with the plain ladder
k * 2**s (``padding.SKEW = 0``) and on with the skewed one (the default), alternating.

    python benchmarks/probes/padding_cost.py              # small models, 4,096 refits
    python benchmarks/probes/padding_cost.py --large      # many levels, 512 refits
    python benchmarks/probes/padding_cost.py --pow2       # 64-256 groups of 10, 1,024 refits
"""
import statistics
import sys
import time

import numpy as np
import pandas as pd

import jaxhlm
from jaxhlm import padding


def _longitudinal(subjects: int, visits: int = 8, seed: int = 1) -> pd.DataFrame:
    """A random intercept per subject and AR(1) noise (as benchmarks/structures.py's data)."""
    rng = np.random.default_rng(seed)
    e = np.zeros((subjects, visits))
    e[:, 0] = rng.normal(size=subjects)
    for v in range(1, visits):
        e[:, v] = 0.6 * e[:, v - 1] + 0.8 * rng.normal(size=subjects)
    df = pd.DataFrame({"id": np.repeat(np.arange(subjects), visits).astype(str),
                       "visit": np.tile(np.arange(visits), subjects),
                       "treat": np.repeat(rng.integers(0, 2, subjects), visits)})
    df["y"] = 1 + 0.2 * df.visit + 0.5 * df.treat + np.repeat(rng.normal(size=subjects), visits) + e.reshape(-1)
    return df


sleep = jaxhlm.datasets.load("sleepstudy")
keep = sorted(sleep.Subject.astype(str).unique())[:17]
SMALL = {
    "sleepstudy, 18 subjects (-> 20)": ("Reaction ~ Days + (Days | Subject)", sleep, {}),
    "sleepstudy, 17 subjects (-> 20)": ("Reaction ~ Days + (Days | Subject)",
                                        sleep[sleep.Subject.astype(str).isin(keep)], {}),
    "Penicillin, 24 plates x 6 samples (as is)": ("diameter ~ 1 + (1 | plate) + (1 | sample)",
                                                  jaxhlm.datasets.load("Penicillin"), {}),
    "Pastes, 30 samples (-> 32), 10 batches": ("strength ~ 1 + (1 | sample) + (1 | batch)",
                                               jaxhlm.datasets.load("Pastes"), {}),
}
LARGE = {
    "2,900 subjects x 8 visits, random intercept": ("y ~ visit + treat + (1 | id)", _longitudinal(2900), {}),
    "the same with AR(1) residuals": ("y ~ visit + treat + (1 | id)", _longitudinal(2900),
                                      {"correlation": jaxhlm.AR1("id", "visit")}),
    "1,000 subjects x 8 visits, random slope": ("y ~ visit + treat + (visit | id)", _longitudinal(1000), {}),
}


def _clusters(groups: int, size: int = 10, seed: int = 1) -> pd.DataFrame:
    """A random intercept per group and a covariate (a simulation study's design)."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(groups), size)
    x = rng.normal(size=g.size)
    return pd.DataFrame({"y": x + rng.normal(size=groups)[g] + rng.normal(size=g.size), "x": x,
                         "g": g.astype(str)})


POW2 = {f"{k} groups of 10": ("y ~ x + (1 | g)", _clusters(k), {}) for k in (64, 128, 256)}
SETTINGS = {"off": (False, padding.SKEW), "k 2^s": (True, 0), "skewed": (True, padding.SKEW)}


def median_time(fn, reps):
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


large, pow2 = "--large" in sys.argv, "--pow2" in sys.argv
nsim = 512 if large else 1024 if pow2 else 4096
for name, (formula, df, kw) in (LARGE if large else POW2 if pow2 else SMALL).items():
    row, levels = {}, {}
    for _ in range(2):
        for setting, (enabled, skew) in SETTINGS.items():
            padding.ENABLED, padding.SKEW = enabled, skew
            model = jaxhlm.LMM(formula, df, **kw)
            res = model.fit()
            for _ in range(5):
                model.fit()
            fit = median_time(model.fit, 20 if large else 200)
            res.bootstrap(nsim, seed=0)
            boot = median_time(lambda: res.bootstrap(nsim, seed=1), 3)
            row.setdefault(setting, []).append((fit, boot))
            levels[setting] = [t.nlevels for t in model.bucketed.structure.terms]
    best = {s: min(v) for s, v in row.items()}
    print(f"{name}: " + "; ".join(f"{s} {levels[s]} fit {1e3 * f:.2f} ms, bootstrap {nsim} {b:.3f} s"
                                  for s, (f, b) in best.items()), flush=True)
