"""Simulation studies: power, bias, RMSE and coverage of a fixed effect, over a grid of
effect sizes and designs, every data set fitted in batches.

A study (``configs/study/*.toml``, schema :class:`Study`) names a formula, the true
model (``[truth]``: every fixed effect but the tested one, theta by lme4's names, sigma;
``family = "binomial"`` or ``"poisson"`` (and ``link``) for a GLMM, whose data sets are
drawn as lme4's ``simulate`` draws them and fitted by ``GLMM.fit_many``, Laplace), the test (``[test]``: the fixed-effect ``term``, whose one coefficient is tested
for being 0, the ``method`` and ``level``) and the grid (``[grid]``: the effects, i.e. the
true values of the tested coefficient, and the designs: ``groups`` x ``obs_per_group`` x
``items`` of :func:`jaxhlm.tools.designs.frame`).  For each design and effect, ``nsim`` data
sets are drawn from the true model and fitted with ``LMM.fit_many`` (``GLMM.fit_many``):

- ``wald``: reject when |beta-hat / se| > z_{1 - level/2} (a Wald z test on the
  coefficient, with se from the fit's vcov; REML fits unless ``reml = false``; a GLMM's
  z test is glmer's ``summary``);
- ``satterthwaite``, ``kenward-roger`` (Gaussian only): the t test of lmerTest's ``summary`` with that
  method's df (and, for Kenward-Roger, its adjusted se; REML fits), reject when
  p <= level (simr's ``fixed(term, "t")`` and ``fixed(term, "kr")``), from the batch's
  :meth:`jaxhlm.batch.BatchResult.coef_table`;
- ``lrt``: the likelihood ratio 2 (l_full - l_null) (ML fits of the model and of the model
  without the term, both batched) against chi^2_1's 1 - level quantile;
- ``bootstrap``: the parametric bootstrap LRT (pbkrtest's ``PBmodcomp``): for each data
  set, ``nboot`` data sets drawn from its fitted null model are fitted by both models,
  p = (1 + #{LR* >= LR}) / (1 + nboot), reject when p <= level; 2 nsim (1 + nboot) fits
  per cell, so keep nsim x nboot moderate (and nboot + 1 a multiple of 1 / level).

Per cell, over the N data sets whose fits converged (S is the number of rejections,
d_i = beta-hat_i - beta, with Monte Carlo standard errors as in Morris, White & Crowther,
Stat. Med. 2019, table 6):

    power    = S / N                         MCSE sqrt(power (1 - power) / N),
                                             95% Clopper-Pearson interval (as simr's)
    bias     = mean(d)                       MCSE sd(d) / sqrt(N)
    RMSE     = sqrt(mean(d^2))               MCSE sd(d^2) / (2 RMSE sqrt(N))
    coverage = mean(|d| <= z_{1-level/2} se) MCSE sqrt(coverage (1 - coverage) / N)

from the fits the test uses (ML for ``lrt`` and ``bootstrap``).  A second table gives
bias, RMSE and (fixed effects) coverage for every parameter: fixed effects, random-effect
SDs and correlations, sigma.

Randomness: data set i of design d is drawn from fold_in(fold_in(key(seed), 0), d) and
index i (:func:`jaxhlm.tools.designs.simulate`), the same draws of b and e for every effect of
a design (common random numbers: the power curve is smooth in the effect, and its
points are paired); bootstrap draws come from fold_in(key(seed), 1).  A study is
reproduced exactly from its config and seed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from .configs import ConfigError, check, load, nonempty, positive


@dataclasses.dataclass(frozen=True)
class Truth:
    """The true model: its family (and link: empty for the family's canonical one), fixed
    effects and theta by name, sigma (Gaussian only)."""

    fixef: dict[str, float]
    theta: dict[str, float]
    sigma: float = dataclasses.field(default=1.0, metadata=check(lambda v: v > 0, "positive"))
    family: Literal["gaussian", "binomial", "poisson"] = "gaussian"
    link: str = ""

    @property
    def gaussian(self) -> bool:
        return self.family == "gaussian"


@dataclasses.dataclass(frozen=True)
class Hypothesis:
    """The tested fixed-effect term and the test."""

    term: str
    method: Literal["wald", "satterthwaite", "kenward-roger", "lrt", "bootstrap"] = "wald"
    level: float = dataclasses.field(default=0.05, metadata=check(lambda v: 0 < v < 1, "between 0 and 1"))
    nboot: int = dataclasses.field(default=99, metadata=positive())


@dataclasses.dataclass(frozen=True)
class Grid:
    """Effects (true values of the tested coefficient) and design sizes, crossed."""

    effects: tuple[float, ...] = dataclasses.field(metadata=nonempty())
    groups: tuple[int, ...] = dataclasses.field(metadata=nonempty(check(lambda v: v >= 2, "at least 2")))
    obs_per_group: tuple[int, ...] = dataclasses.field(metadata=positive(nonempty=True))
    items: tuple[int, ...] = dataclasses.field(default=(0,), metadata=nonempty(check(lambda v: v >= 0,
                                                                                     "0 or more")))


@dataclasses.dataclass(frozen=True)
class Study:
    """A simulation study (see the module docstring); ``configs/study/*.toml``."""

    name: str
    formula: str
    truth: Truth
    test: Hypothesis
    grid: Grid
    nsim: int = dataclasses.field(default=1000, metadata=positive())
    seed: int = 0
    reml: bool = True
    batch_size: int = dataclasses.field(default=0, metadata=check(lambda v: v >= 0, "0 or more"))  # 0: jaxhlm's chunks
    description: str = ""

    @property
    def null_formula(self) -> str:
        return f"{self.formula} - {self.test.term}"

    def designs(self) -> list[tuple[int, int, int]]:
        g = self.grid
        return [(n, m, i) for n in g.groups for m in g.obs_per_group for i in g.items]


def load_study(path) -> Study:
    """Read a study and check it against its model: the term, the names in ``[truth]``."""
    study = load(path, Study)
    truth = study.truth
    if not truth.gaussian:
        from ..families.links import LINKS

        if study.test.method in ("satterthwaite", "kenward-roger"):
            raise ConfigError(f"{path}: test.method {study.test.method!r} is a t test for Gaussian models; "
                              f"a {truth.family} study takes 'wald' (z), 'lrt' or 'bootstrap'")
        if truth.link and truth.link not in LINKS:
            raise ConfigError(f"{path}: truth.link {truth.link!r} is not one of {', '.join(LINKS)}")
    elif truth.link not in ("", "identity"):
        raise ConfigError(f"{path}: truth.link {truth.link!r}: a Gaussian study has the identity link")
    full, null, coef = _frames(study, path)
    names = [n for n in full.fixef_names if n != coef]
    given = study.truth.fixef
    if coef in given:
        raise ConfigError(f"{path}: truth.fixef['{coef}'] is the tested coefficient; its values come "
                          "from grid.effects, remove it from [truth.fixef]")
    _same_names(given, names, f"{path}: truth.fixef", "the model's other fixed effects")
    _same_names(study.truth.theta, full.theta_names, f"{path}: truth.theta",
                "the model's theta (lme4's names; for (1 | g), theta = SD of g's effects / sigma, "
                "for a GLMM the SD itself)")
    return study


def _frames(study: Study, path):
    """Model frames of the full and null model on the smallest design; the tested coefficient."""
    from . import designs
    from ..errors import JaxhlmError
    from ..frame import build

    g = study.grid
    for items in sorted(set(g.items), reverse=True):  # the last one checked is used below
        df = designs.frame(min(g.groups), min(g.obs_per_group), items, study.seed)
        try:
            full = build(study.formula, df)
        except JaxhlmError as err:
            raise ConfigError(f"{path}: formula {study.formula!r} does not fit the simulated design "
                              f"with items = {items} (columns: {designs.COLUMNS}; no item when items "
                              f"= 0): {' '.join(str(err).split())}") from None
    try:
        null = build(study.null_formula, df)
    except JaxhlmError as err:
        raise ConfigError(f"{path}: test.term {study.test.term!r}: {' '.join(str(err).split())}") from None
    gone = [n for n in full.fixef_names if n not in null.fixef_names]
    if len(gone) != 1:
        raise ConfigError(
            f"{path}: test.term {study.test.term!r} must be a fixed-effect term of the formula with one "
            f"coefficient; removing it drops {len(gone)} ({', '.join(gone) or 'none'}) of "
            f"{', '.join(full.fixef_names)}")
    return full, null, gone[0]


def _same_names(given: dict, wanted: list[str], where: str, what: str) -> None:
    unknown = [k for k in given if k not in wanted]
    missing = [k for k in wanted if k not in given]
    if unknown or missing:
        parts = ([f"unknown {', '.join(repr(k) for k in unknown)}"] if unknown else []) + (
            [f"missing {', '.join(repr(k) for k in missing)}"] if missing else [])
        raise ConfigError(f"{where}: {'; '.join(parts)}; {what} are: "
                          f"{', '.join(repr(k) for k in wanted)}")


# ---------------------------------------------------------------------- running
class Progress:
    """A one-line progress bar on stderr: fits done, fits per second, the cell."""

    def __init__(self, total: int, label: str, stream=None, width: int = 30):
        self.total, self.label, self.stream, self.width = total, label, stream or sys.stderr, width
        self.done, self.began = 0, time.perf_counter()

    def update(self, fits: int, cell: str) -> None:
        self.done += fits
        frac = self.done / self.total
        bar = "#" * round(frac * self.width)
        rate = self.done / max(time.perf_counter() - self.began, 1e-9)
        print(f"\r{self.label} [{bar:<{self.width}}] {frac:4.0%} {self.done:,}/{self.total:,} fits "
              f"({rate:,.0f}/s) {cell}   ", end="", file=self.stream, flush=True)

    def close(self) -> None:
        print(file=self.stream, flush=True)


def fits_per_cell(study: Study) -> int:
    n, t = study.nsim, study.test
    return {"lrt": 2 * n, "bootstrap": 2 * n * (1 + t.nboot)}.get(t.method, n)


def run(study: Study, out_dir, *, plots: bool = True, log=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run every cell; write the cell table, the parameter table, JSON and the power curve.
    The progress bar goes to ``log`` (default stderr)."""
    import jax

    from . import designs
    from ..frame import build

    log = log or sys.stderr

    designs_ = study.designs()
    progress = Progress(len(designs_) * len(study.grid.effects) * fits_per_cell(study),
                        f"study {study.name}", log)
    root = jax.random.key(study.seed)
    cells, params, seconds = [], [], []
    for d, (groups, m, items) in enumerate(designs_):
        df = designs.frame(groups, m, items, study.seed)
        full = _model(study, study.formula, df)
        null = _model(study, study.null_formula, df) if study.test.method in ("lrt", "bootstrap") else None
        names = full.frame.fixef_names
        null_frame = null.frame if null is not None else build(study.null_formula, df)
        j = next(i for i, n in enumerate(names) if n not in null_frame.fixef_names)  # the tested one
        theta = np.array([study.truth.theta[n] for n in full.frame.theta_names])
        data_key = jax.random.fold_in(jax.random.fold_in(root, 0), d)
        for k, effect in enumerate(study.grid.effects):
            began = time.perf_counter()
            beta = np.array([effect if i == j else study.truth.fixef[n] for i, n in enumerate(names)])
            Y = _simulate(full, beta, theta, study.truth.sigma, data_key, np.arange(study.nsim))
            where = f"{groups} groups x {m} obs{f' x {items} items' if items else ''}, effect {effect:g}"
            boot_key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(root, 1), d), k)
            fit, reject, usable = _test(study, full, null, j, Y, boot_key,
                                        lambda fits, where=where: progress.update(fits, where))
            design = dict(groups=groups, obs_per_group=m, items=items, effect=effect)
            cells.append({**design, "nobs": full.nobs, "nsim": study.nsim, "n_used": int(usable.sum()),
                          **_power(reject[usable]),
                          **_accuracy(fit.fixef[usable, j], fit.fixef_se[usable, j], effect,
                                      study.test.level)})
            params += _parameters(fit, usable, beta, theta, study.truth.sigma, study.test.level, design)
            seconds.append(time.perf_counter() - began)
    progress.close()
    cells, params = pd.DataFrame(cells), pd.DataFrame(params)
    _write(study, Path(out_dir), cells, params, seconds, plots, log)
    return cells, params


def warmup(study: Study, log=None) -> None:
    """Compile, and keep on disk, every program a run of ``study`` uses, before it runs:
    each design of the grid at its first effect, with one chunk of data sets
    (:func:`jaxhlm.batch.chunk_size` of ``nsim``), whose programs are the full run's
    (same buckets, same chunk shapes; ``jaxhlm warmup CONFIG.toml``)."""
    import io
    import tempfile

    from ..batch import chunk_size

    small = dataclasses.replace(study, nsim=min(study.nsim, chunk_size(study.nsim, study.batch_size or None)),
                                grid=dataclasses.replace(study.grid, effects=study.grid.effects[:1]))
    with tempfile.TemporaryDirectory() as out:
        run(small, out, plots=False, log=log or io.StringIO())


def _model(study: Study, formula: str, df: pd.DataFrame):
    """The study's model on a design: an LMM, or a GLMM of the truth's family (whose
    placeholder response is made a valid one: 0, 1, 0, ...)."""
    from ..glmm import GLMM
    from ..model import LMM

    truth = study.truth
    if truth.gaussian:
        return LMM(formula, df)
    return GLMM(formula, df.assign(y=(np.arange(len(df)) % 2).astype(float)), family=truth.family,
                link=truth.link or None)


def _fit_many(model, Y, reml: bool, batch_size):
    """``fit_many`` of an LMM (REML or ML) or of a GLMM (Laplace, ML always)."""
    from ..glmm import GLMM

    if isinstance(model, GLMM):
        return model.fit_many(Y, batch_size=batch_size)
    return model.fit_many(Y, reml, batch_size=batch_size)


def _simulate(model, beta, theta, sigma, key, index) -> np.ndarray:
    """Responses from the true model (per replicate parameters allowed): the LMM's
    (:func:`jaxhlm.tools.designs.simulate`) or the GLMM's (lme4's ``simulate`` for glmer)."""
    from . import designs
    from ..glmm import GLMM
    from ..glmm_batch import simulate_responses

    if isinstance(model, GLMM):
        return simulate_responses(model, beta, theta, key, index)
    return designs.simulate(model, beta, theta, sigma, key, index)


def _test(study: Study, full, null, j: int, Y: np.ndarray, boot_key, tick):
    """The fits the estimates come from, and per data set: rejected?, usable (fits converged)?"""
    t, B = study.test, study.batch_size or None
    if t.method == "wald":
        fit = _fit_many(full, Y, study.reml, B)
        tick(len(Y))
        z = stats.norm.ppf(1 - t.level / 2)
        return fit, np.abs(fit.fixef[:, j] / fit.fixef_se[:, j]) > z, fit.converged
    if t.method in ("satterthwaite", "kenward-roger"):
        fit = _fit_many(full, Y, study.reml, B)
        tick(len(Y))
        p = fit.coef_table(t.method, batch_size=B)["Pr(>|t|)"].to_numpy().reshape(len(Y), -1)[:, j]
        return fit, p <= t.level, fit.converged & np.isfinite(p)
    fit, fit0 = _fit_many(full, Y, False, B), _fit_many(null, Y, False, B)
    tick(2 * len(Y))
    lr = np.maximum(fit0.objective - fit.objective, 0.0)
    usable = fit.converged & fit0.converged
    if t.method == "lrt":
        return fit, lr > stats.chi2.ppf(1 - t.level, 1), usable
    p = _bootstrap_p(study, full, null, fit0, lr, boot_key, tick)
    return fit, p <= t.level, usable & np.isfinite(p)


def _bootstrap_p(study: Study, full, null, fit0, lr: np.ndarray, key, tick) -> np.ndarray:
    """Parametric-bootstrap p-values of the LR statistics ``lr`` (nsim,): for data set s,
    ``nboot`` responses from its fitted null model (replicate s * nboot + b of ``key``),
    each fitted by both models; p = (1 + #{LR* >= LR_s}) / (1 + #converged).
    Data sets go in groups of about one chunk of fits (``batch_size``; 0: jaxhlm's chunk)."""
    from ..batch import max_chunk

    nboot = study.test.nboot
    B = study.batch_size or None
    per = max(1, max_chunk(B) // nboot)
    p = np.full(lr.shape[0], np.nan)
    for lo in range(0, lr.shape[0], per):
        sims = np.arange(lo, min(lo + per, lr.shape[0]))
        rows = np.repeat(sims, nboot)
        index = rows * nboot + np.tile(np.arange(nboot), sims.size)
        Yb = _simulate(null, fit0.fixef[rows], fit0.theta[rows], fit0.sigma[rows], key, index)
        fb, fb0 = _fit_many(full, Yb, False, B), _fit_many(null, Yb, False, B)
        tick(2 * len(Yb))
        ok = (fb.converged & fb0.converged).reshape(sims.size, nboot)
        star = np.maximum(fb0.objective - fb.objective, 0.0).reshape(sims.size, nboot)
        exceed = ((star >= lr[sims, None]) & ok).sum(axis=1)
        n_ok = ok.sum(axis=1)
        p[sims] = np.where(n_ok > 0, (1 + exceed) / (1 + np.maximum(n_ok, 1)), np.nan)
    return p


# ---------------------------------------------------------------------- summaries
def _power(reject: np.ndarray) -> dict:
    """Power, its MCSE and its 95% Clopper-Pearson (exact binomial) interval."""
    n, k = reject.size, int(reject.sum())
    power = k / n if n else math.nan
    lower = float(stats.beta.ppf(0.025, k, n - k + 1)) if k > 0 else 0.0
    upper = float(stats.beta.ppf(0.975, k + 1, n - k)) if k < n else 1.0
    return {"power": power, "power_mcse": math.sqrt(power * (1 - power) / n) if n else math.nan,
            "power_lower": lower if n else math.nan, "power_upper": upper if n else math.nan}


def _accuracy(est: np.ndarray, se: np.ndarray, truth: float, level: float) -> dict:
    """Bias, RMSE and Wald-interval coverage of one parameter with their MCSEs (module docstring)."""
    n = est.size
    if n < 2:
        return dict.fromkeys(["mean", "bias", "bias_mcse", "rmse", "rmse_mcse", "emp_se", "mean_se",
                              "coverage", "coverage_mcse"], math.nan)
    d = est - truth
    rmse = float(np.sqrt(np.mean(d ** 2)))
    out = {"mean": float(est.mean()), "bias": float(d.mean()),
           "bias_mcse": float(d.std(ddof=1) / math.sqrt(n)), "rmse": rmse,
           "rmse_mcse": float((d ** 2).std(ddof=1) / (2 * rmse * math.sqrt(n))) if rmse > 0 else 0.0,
           "emp_se": float(est.std(ddof=1)), "mean_se": math.nan, "coverage": math.nan,
           "coverage_mcse": math.nan}
    if se is not None:
        cover = np.abs(d) <= stats.norm.ppf(1 - level / 2) * se
        c = float(cover.mean())
        out.update(mean_se=float(se.mean()), coverage=c, coverage_mcse=math.sqrt(c * (1 - c) / n))
    return out


def _parameters(fit, usable, beta, theta, sigma, level, design: dict) -> list[dict]:
    """One row per parameter: fixed effects (with coverage), random-effect SDs and
    correlations, sigma; truth from the true theta and sigma."""
    import jax.numpy as jnp

    from ..tables import sd_corr

    lams = [np.asarray(lam)[None] for lam in fit.model.structure.lambdas(jnp.asarray(theta))]
    sd, sd_names, corr, corr_names = sd_corr(fit.model.specs, lams, np.array([sigma if fit.has_sigma else 1.0]))
    rows = []
    for i, name in enumerate(fit.fixef_names):
        rows.append((name, beta[i], fit.fixef[usable, i], fit.fixef_se[usable, i]))
    for i, name in enumerate(sd_names):
        rows.append((name, sd[0, i], fit.sd[usable, i], None))
    for i, name in enumerate(corr_names):
        rows.append((name, corr[0, i], fit.corr[usable, i], None))
    if fit.has_sigma:
        rows.append(("sigma", sigma, fit.sigma[usable], None))
    return [{**design, "parameter": name, "truth": float(truth), **_accuracy(est, se, truth, level)}
            for name, truth, est, se in rows]


def _write(study: Study, out_dir: Path, cells, params, seconds, plots, log) -> None:
    from .bench import machine

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"study-{study.name}"
    cells.to_csv(f"{stem}.csv", index=False)
    params.to_csv(f"{stem}-parameters.csv", index=False)
    info = {"config": dataclasses.asdict(study), "null_formula": study.null_formula,
            "machine": machine(), "seconds_per_cell": seconds, "seconds": sum(seconds),
            "cells": json.loads(cells.to_json(orient="records"))}
    Path(f"{stem}.json").write_text(json.dumps(info, indent=1))
    written = [f"{stem}.csv", f"{stem}-parameters.csv", f"{stem}.json"]
    if plots:
        from . import plots as _plots

        title = f"{study.name}: {study.test.method} test of {study.test.term}, level {study.test.level:g}"
        written += [str(p) for p in _plots.power_curve(cells, stem, title, study.test.level, log)]
    print("wrote " + ", ".join(str(p) for p in written), file=log)


def main(config, out_dir, plots: bool = True) -> pd.DataFrame:
    """``jaxhlm study CONFIG``: load, check and run a study; the cell table."""
    return run(load_study(config), out_dir, plots=plots)[0]


COLUMNS_SHOWN = ["groups", "obs_per_group", "items", "effect", "n_used", "power", "power_mcse",
                 "bias", "bias_mcse", "rmse", "coverage", "coverage_mcse"]
"""The cell table's columns the command line prints."""
