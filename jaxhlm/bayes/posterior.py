"""Full posteriors by NumPyro NUTS on the marginal likelihood of the PLS kernel.

The random effects b are integrated out analytically: NUTS explores only
(beta, sigma, SDs, correlation factors), with the likelihood
p(y | beta, sigma, theta) of :func:`jaxhlm.families.gaussian.marginal_loglik` (the same blocked
factorization as the ML fit) and the priors of :class:`jaxhlm.bayes.priors.Priors`.  Each
term's relative covariance factor is lambda_k = diag(s_k) L_k / sigma, with s_k its
SDs and L_k the Cholesky factor of its correlation matrix (LKJ); so theta is a
smooth function of the sampled parameters.  Integrating b out removes the funnel of
hierarchical models (b's scale tied to its SD), which is what makes NUTS struggle on
explicit random effects (eight schools).  b is drawn afterwards, one draw per
posterior draw, from its exact Gaussian conditional (:func:`jaxhlm.families.gaussian.draw_ranef`).

The chains are NumPyro's NUTS kernel in one compiled program (:mod:`jaxhlm.bayes.chains`):
vectorized (``chain_method="vectorized"``: the chain on a vmapped axis), in parallel
over devices (``"parallel"``) or one after another (``"sequential"``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..lazy_jax import jax, jnp, lazy_jit
import numpy as np
import pandas as pd

from ..errors import JaxhlmError
from ..families import GAUSSIAN
from ..tables import sd_corr
from .chains import ChainProgram, Schedule, chain, chain_keys, require_int
from .priors import Priors, ResolvedPriors

QUANTILES = (0.025, 0.25, 0.5, 0.75, 0.975)


@dataclasses.dataclass(frozen=True)
class LMMSites:
    """What the NumPyro model of an LMM is, apart from its arrays: the structure, each
    term's (name, columns, covariance) and the fixed effects' names (hashable, a static
    argument of the stored chains, :mod:`jaxhlm.bayes.chains`)."""

    structure: Any
    terms: tuple
    fixef_names: tuple[str, ...]

    @classmethod
    def of(cls, model, structure=None) -> "LMMSites":
        """The model's sites, on its own structure or (``structure``) its bucket's."""
        return cls(structure or model.structure,
                   tuple((t.name, t.columns, t.covariance) for t in model.frame.specs),
                   tuple(model.frame.fixef_names))

    def model(self, priors: ResolvedPriors):
        """The NumPyro model: priors on (beta, sigma, each term's covariance sites), b
        integrated out (:func:`numpyro_model`); its argument is the blocks."""
        import numpyro

        st = self.structure

        def fn(blocks):
            beta = jnp.stack([numpyro.sample(name, d) for name, d in zip(self.fixef_names, priors.fixef)])
            sigma = (numpyro.sample("sigma", priors.sigma) if priors.sigma is not None
                     else jnp.asarray(blocks.sigma, beta.dtype))
            theta = jnp.concatenate([
                covariance.sample(numpyro.sample, name, columns, sds, conc, jnp.asarray(sigma))
                for (name, columns, covariance), sds, conc in zip(self.terms, priors.sd, priors.lkj)]
                + ([] if st.residual is None else [st.residual.sample(numpyro.sample)]))
            numpyro.factor("marginal_loglik", GAUSSIAN.marginal_loglik(theta, beta, sigma, blocks, st))

        return fn


def numpyro_model(model, priors: ResolvedPriors):
    """The NumPyro model: priors on (beta, sigma, each term's covariance sites), b integrated out.

    Sites: one per fixed effect (named by its coefficient), ``sigma`` (unless known),
    and each term's covariance sites (:meth:`jaxhlm.covariance.Covariance.sites`: for
    lme4's terms one SD per column, :func:`jaxhlm.tables.sd_name`, and one LKJ
    Cholesky factor per vector term).  Condition on sites
    (``numpyro.handlers.condition``) to fix parameters.  The blocks are the model's
    argument, so one compiled sampler serves every response on the design
    (:class:`Sampler`), and, padded (:mod:`jaxhlm.padding`, exact), every design of its bucket.
    """
    return LMMSites.of(model).model(priors)


def site_names(model) -> list[str]:
    """The sampled sites of :func:`numpyro_model`: the names ``fixed`` takes."""
    names = list(model.frame.fixef_names) + ([] if model.structure.known_sigma else ["sigma"])
    for t in model.frame.specs:
        names += t.covariance.sites(t.name, t.columns)
    if model.structure.residual is not None:
        names += model.structure.residual.sites()
    return names


def theta_of(specs, values: dict[str, jnp.ndarray], sigma: jnp.ndarray, residual=None) -> jnp.ndarray:
    """theta (..., ntheta) from the terms' sampled sites (arrays with leading axes), then
    the residual structure's (:mod:`jaxhlm.residual`) if there is one."""
    get = lambda site, _: jnp.asarray(values[site])  # noqa: E731
    return jnp.concatenate([t.covariance.sample(get, t.name, t.columns, [None] * t.p, 1.0, sigma)
                            for t in specs] + ([] if residual is None else [residual.sample(get)]),
                           axis=-1)


def ess_bulk(x: np.ndarray) -> float:
    """Bulk effective sample size of draws x (chains, draws): rank-normalise the pooled
    draws, z = Phi^{-1}((rank - 3/8) / (S + 1/4)), split each chain in halves and take
    NumPyro's (Geyer) ESS of z (Vehtari, Gelman, Simpson, Carpenter and Buerkner 2021,
    "Rank-normalization, folding, and localization", Bayesian Analysis 16(2); Stan's
    and rstan's ``ess_bulk``)."""
    from numpyro.diagnostics import effective_sample_size
    from scipy import stats

    C, D = x.shape
    z = stats.norm.ppf((stats.rankdata(x.reshape(-1)) - 0.375) / (x.size + 0.25)).reshape(C, D)
    half = D // 2
    split = np.concatenate([z[:, :half], z[:, D - half:]], axis=0)
    return float(effective_sample_size(split))


@dataclasses.dataclass
class Posterior:
    """Posterior draws of a model's parameters: ``samples[name]`` is (chains, draws).

    Names as the ML fit's: fixed-effect coefficients, ``sigma``, ``sd(term:column)`` and
    ``corr(term:a,b)``.  ``raw`` holds NumPyro's sites (the LKJ Cholesky factors
    ``L_corr(term)`` among them); ``stats`` the sampler's statistics per kept draw,
    (chains, draws): ``diverging``, ``num_steps`` (leapfrog steps) and ``accept_prob``.
    ``divergences`` counts divergent transitions; ``seconds`` holds the wall times of
    compilation (0 when a compiled sampler was reused) and of warm-up plus sampling.
    """

    model: Any
    samples: dict[str, np.ndarray]
    raw: dict[str, np.ndarray] = dataclasses.field(repr=False)
    stats: dict[str, np.ndarray] = dataclasses.field(repr=False)
    divergences: int
    seconds: dict[str, float]
    num_chains: int

    @property
    def names(self) -> list[str]:
        return list(self.samples)

    def summary(self) -> pd.DataFrame:
        """One row per parameter: mean, sd, quantiles, r_hat (split Gelman-Rubin) and ess
        (bulk effective sample size, :func:`ess_bulk`)."""
        from numpyro.diagnostics import split_gelman_rubin

        rows = []
        for name, x in self.samples.items():
            flat = x.reshape(-1)
            q = np.quantile(flat, QUANTILES)
            finite = np.isfinite(flat).all() and np.ptp(flat) > 0
            rhat = float(split_gelman_rubin(x)) if finite and x.shape[1] >= 4 else np.nan
            ess = ess_bulk(x) if finite and x.shape[1] >= 4 else np.nan
            rows.append([name, flat.mean(), flat.std(ddof=1), *q, rhat, ess])
        cols = ["parameter", "mean", "sd"] + [f"q{100 * p:g}" for p in QUANTILES] + ["r_hat", "ess"]
        return pd.DataFrame(rows, columns=cols).set_index("parameter")

    def ranef(self, seed: int = 0, summary: bool = True):
        """The posterior of b: one exact conditional draw per posterior draw (batched).

        ``summary=True``: a DataFrame like ``ranef`` (grpvar, term, grp) with the posterior
        mean, sd and quantiles of each b; ``False``: per term, an array
        (chains, draws, ell_k, p_k).
        """
        st, blocks = self.model.structure, self.model.blocks
        C, D = next(iter(self.samples.values())).shape
        beta = jnp.stack([jnp.asarray(self.samples[n]) for n in self.model.frame.fixef_names], -1)
        sigma = (jnp.asarray(self.samples["sigma"]) if "sigma" in self.samples
                 else jnp.full((C, D), float(blocks.sigma)))
        theta = theta_of(self.model.frame.specs, self.raw, sigma, st.residual)
        keys = jax.random.split(jax.random.key(seed), C * D)
        flat = lambda a: a.reshape((C * D,) + a.shape[2:])  # noqa: E731
        draw = jax.jit(jax.vmap(lambda k, th, b, s: GAUSSIAN.draw_ranef(k, th, b, s, blocks, st)))
        draws = [np.asarray(d).reshape((C, D) + d.shape[1:])
                 for d in draw(keys, flat(theta), flat(beta), flat(sigma))]
        if not summary:
            return {t.name: d for t, d in zip(self.model.frame.specs, draws)}
        return ranef_table(self.model.frame.terms, draws)

    def to_arviz(self):
        """An ``arviz.InferenceData``: ``posterior`` holds :attr:`samples` (chain, draw),
        ``sample_stats`` the sampler's ``diverging``, ``n_steps`` and ``acceptance_rate``
        (ArviZ's names for :attr:`stats`).  Needs arviz (``pip install 'jaxhlm[arviz]'``)."""
        try:
            import arviz as az
        except ImportError:
            raise JaxhlmError("to_arviz needs arviz: pip install 'jaxhlm[arviz]'") from None
        names = {"diverging": "diverging", "num_steps": "n_steps", "accept_prob": "acceptance_rate"}
        return az.from_dict(posterior=self.samples,
                            sample_stats={names[k]: v for k, v in self.stats.items()})

    def __repr__(self) -> str:
        C, D = next(iter(self.samples.values())).shape
        return (f"<Posterior of {self.model.formula!r}: {C} chains x {D} draws, "
                f"{self.divergences} divergences>")


def ranef_table(terms, draws) -> pd.DataFrame:
    """lme4's ``ranef`` layout (grpvar, term, grp) with the posterior mean, sd and quantiles
    of each b, from per-term draws (chains, draws, ell_k, p_k)."""
    parts = []
    for term, d in zip(terms, draws):
        d = d.reshape((-1,) + d.shape[2:])
        for a, col in enumerate(term.spec.columns):
            q = np.quantile(d[:, :, a], QUANTILES, axis=0)
            parts.append(pd.DataFrame({
                "grpvar": term.spec.group, "term": col, "grp": term.levels,
                "mean": d[:, :, a].mean(0), "sd": d[:, :, a].std(0, ddof=1),
                **{f"q{100 * p:g}": q[i] for i, p in enumerate(QUANTILES)}}))
    return pd.concat(parts, ignore_index=True)


def initial_inverse_mass(model, fixed: dict[str, Any]) -> dict:
    """A diagonal starting metric for NUTS, from the REML fit's asymptotic scales.

    NUTS starts warm-up with the identity metric in the unconstrained space, where
    beta's scale (its standard error, e.g. 7.5 for sleepstudy's intercept) and log
    sigma's (about 1 / sqrt(2 n)) differ by 100x: until the first adaptation window
    ends, trajectories need hundreds of steps.  Starting from Var(beta_j) ~ SE_j^2,
    Var(log sigma) ~ 1 / (2 n), Var(log s_k) ~ 1 / (2 ell_k) and Var of each
    correlation coordinate ~ 1 / ell_k removes most of that cost; warm-up still
    adapts the metric as usual.  Falls back to the identity (None) when the fit fails.
    """
    res = model.fit(reml=True)
    se = res.fixef_se.to_numpy()
    if not (res.converged and np.all(np.isfinite(se)) and np.all(se > 0)):
        return None
    metric = {(name,): jnp.asarray([se[j] ** 2]) for j, name in enumerate(model.frame.fixef_names)}
    if not model.structure.known_sigma:
        metric[("sigma",)] = jnp.asarray([1.0 / (2 * model.nobs)])
    for t in model.frame.specs:
        metric.update(t.covariance.inverse_mass(t.name, t.columns, t.nlevels))
    return {k: v for k, v in metric.items() if k[0] not in fixed}


class Sampler:
    """A compiled NUTS sampler for a model and priors: :meth:`run` draws a posterior.

    The chains (initial values, warm-up, sampling) are one program
    (:mod:`jaxhlm.bayes.chains`), compiled on the first run and reused by every later run
    with another seed.  Arguments as :func:`sample`; ``precondition=False`` starts warm-up from the
    identity metric instead of :func:`initial_inverse_mass`.
    """

    def __init__(self, model, priors: Priors | None = None, *, num_warmup: int = 1000,
                 num_samples: int = 1000, num_chains: int = 4, chain_method: str = "vectorized",
                 fixed: dict[str, Any] | None = None, target_accept_prob: float = 0.8,
                 thinning: int = 1, precondition: bool = True):
        require_int("num_chains", num_chains, 1)
        schedule = Schedule(num_warmup, num_samples, thinning, target_accept_prob)
        resolved = (priors or Priors()).resolve(model)
        unknown = sorted(set(fixed or {}) - set(site_names(model)))
        if unknown:
            raise JaxhlmError(f"fixed: no parameter named {unknown[0]!r}; the model's are "
                              f"{', '.join(map(repr, site_names(model)))}")
        self._fixed = {k: jnp.asarray(v, jnp.float64) for k, v in (fixed or {}).items()}
        self._metric = initial_inverse_mass(model, fixed or {}) if precondition else None
        self.model, self.fixed, self.num_chains = model, dict(fixed or {}), num_chains
        padded = model.bucketed
        self._blocks = padded.blocks
        arrays = resolved.arrays() if padded.structure.builtin else None
        self._program = ChainProgram.chains(LMMSites.of(model, padded.structure), schedule, chain_method,
                                            num_chains, arrays or resolved, arrays is not None)

    def run(self, seed: int = 0) -> Posterior:
        """Draw a posterior: a fresh warm-up and draws for chain keys split from ``seed``."""
        (raw, stats), seconds = self._program(jax.random.key_data(chain_keys(seed, self.num_chains)), self._blocks,
                                              self._metric, self._fixed)
        raw = {k: np.asarray(v) for k, v in raw.items()}
        stats = {k: np.asarray(v) for k, v in stats.items()}
        return Posterior(self.model, _named(self.model, raw, self.fixed), raw, stats,
                         int(stats["diverging"].sum()),
                         {"compile": seconds["compile"], "warmup_and_sampling": seconds["run"]},
                         self.num_chains)


def sample(model, priors: Priors | None = None, *, num_warmup: int = 1000,
           num_samples: int = 1000, num_chains: int = 4, seed: int = 0,
           chain_method: str = "vectorized", fixed: dict[str, Any] | None = None,
           target_accept_prob: float = 0.8, thinning: int = 1) -> Posterior:
    """Draw from the posterior of (beta, sigma, SDs, correlations) by NUTS.

    ``priors``: :class:`jaxhlm.bayes.priors.Priors` (default: its documented defaults).
    ``fixed``: values for sites held fixed (conditioned on), e.g. ``{"sigma": 25.6}``.
    Each chain starts near the prior's median (NumPyro's ``init_to_median``), warms
    up for ``num_warmup`` iterations (step size and diagonal metric adapted as in
    Stan; the metric starts from :func:`initial_inverse_mass`) and keeps every
    ``thinning``-th of the next ``num_samples * thinning``.  ``chain_method``:
    ``"vectorized"`` (one program, chains batched), ``"parallel"`` (chains shared
    over the local devices) or ``"sequential"``.  ``seconds`` on the result:
    ``compile`` and ``warmup_and_sampling``; :class:`Sampler` compiles once for
    several runs.
    """
    return Sampler(model, priors, num_warmup=num_warmup, num_samples=num_samples,
                   num_chains=num_chains, chain_method=chain_method, fixed=fixed,
                   target_accept_prob=target_accept_prob, thinning=thinning).run(seed)


@lazy_jit(static_argnums=(0, 1))
def _lambdas_of_draws(specs, st, sites: dict, sigma):
    """lambda_k (C * D, p_k, p_k) per term from the covariance sites' draws (C, D, ...);
    compiled once per model and shape, so a sampler's later runs compile nothing."""
    theta = theta_of(specs, sites, sigma)
    return jax.vmap(st.lambdas)(theta.reshape(-1, st.ntheta_random))


def _named(model, raw: dict[str, np.ndarray], fixed: dict[str, Any]) -> dict[str, np.ndarray]:
    """The draws under the ML fit's names: fixed effects, sigma, then each term's SDs and
    correlations (:func:`jaxhlm.tables.sd_corr`, from the theta the sites give).  Fixed
    sites join ``raw``, broadcast to (chains, draws)."""
    C, D = next(iter(raw.values())).shape[:2]
    raw.update({k: np.broadcast_to(np.asarray(v, float), (C, D) + np.shape(v)) for k, v in fixed.items()
                if k not in raw})
    out = {name: raw[name] for name in model.frame.fixef_names}
    sigma = raw["sigma"] if "sigma" in raw else np.full((C, D), float(model.blocks.sigma))
    if not model.structure.known_sigma:
        out["sigma"] = sigma
    sites = {k: raw[k] for t in model.frame.specs for k in t.covariance.sites(t.name, t.columns)}
    lams = [np.asarray(lam) for lam in _lambdas_of_draws(model.frame.specs, model.structure, sites, sigma)]
    sd, sd_names, corr, corr_names = sd_corr(model.frame.specs, lams, sigma.reshape(-1))
    out.update({n: sd[:, j].reshape(C, D) for j, n in enumerate(sd_names)})
    out.update({n: corr[:, j].reshape(C, D) for j, n in enumerate(corr_names)})
    if model.structure.residual is not None:
        out.update({k: raw[k] for k in model.structure.residual.sites()})
    return out


@dataclasses.dataclass
class Calibration:
    """Simulation-based calibration: the rank of each true value among L posterior draws.

    ``ranks`` has one row per replicate and one column per parameter, values in 0..L;
    for a correct sampler each column is uniform on 0..L (Talts, Betancourt, Simpson,
    Vehtari and Gelman 2018, "Validating Bayesian inference algorithms with
    simulation-based calibration", arXiv:1804.06788).
    """

    ranks: pd.DataFrame
    draws: int
    divergences: int

    def chi_square(self, bins: int = 10) -> pd.DataFrame:
        """Pearson's chi-square test of uniform ranks per parameter, in ``bins`` equal bins
        of the L + 1 possible ranks (L + 1 must be a multiple of ``bins``)."""
        from scipy import stats

        if (self.draws + 1) % bins:
            raise JaxhlmError(f"L + 1 = {self.draws + 1} ranks do not split into {bins} equal bins")
        rows = []
        for name in self.ranks.columns:
            counts = np.bincount(self.ranks[name].to_numpy() * bins // (self.draws + 1), minlength=bins)
            stat, p = stats.chisquare(counts)
            rows.append((name, float(stat), bins - 1, float(p)))
        return pd.DataFrame(rows, columns=["parameter", "statistic", "dof", "p_value"]).set_index("parameter")


def calibrate(model, priors: Priors | None = None, *, reps: int = 200, seed: int = 0,
              num_warmup: int = 500, draws: int = 99, thin: int = 10) -> Calibration:
    """Simulation-based calibration of NUTS on the model's design.

    For each of ``reps`` replicates: draw (beta, sigma, SDs, correlations) from the
    prior, simulate y = X beta + Z b + e from them (b ~ N(0, Sigma);
    :func:`jaxhlm.batch.simulate_responses`), sample the posterior (one chain, ``num_warmup``
    warm-up iterations, ``draws * thin`` draws kept every ``thin``-th, so that they are
    nearly independent) and record the rank of each true value among the ``draws`` draws.
    The replicates' chains are one compiled program, vectorized over replicates (the
    responses are a batched argument; the design's blocks are shared).
    """
    from numpyro.infer import Predictive

    from ..batch import simulate_responses
    from ..blocks import response_axes, with_responses

    st, frame = model.structure, model.frame
    model._plain("calibrate()")
    if frame.weights is not None:
        raise JaxhlmError("calibrate simulates y with residual variance sigma^2; it does not "
                          "support weights or known residual variances")
    fn = numpyro_model(model, (priors or Priors()).resolve(model))
    key_prior, key_sim, key_mcmc = jax.random.split(jax.random.key(seed), 3)
    truth = {k: np.asarray(v)[None] for k, v in
             Predictive(fn, num_samples=reps)(key_prior, model.blocks).items()}  # (1, reps, ...)
    named = _named(model, dict(truth), {})
    beta = jnp.stack([jnp.asarray(named[n][0]) for n in frame.fixef_names], -1)
    sigma = jnp.asarray(named["sigma"][0]) if "sigma" in named else jnp.full(reps, float(model.blocks.sigma))
    theta = theta_of(frame.specs, {k: v[0] for k, v in truth.items()}, sigma)
    Y = simulate_responses(model, beta, theta, sigma, key_sim, np.arange(reps))
    many = with_responses(frame, st, jax.device_get(model.blocks), Y)
    run = chain(fn, Schedule(num_warmup, draws, thin))
    program = ChainProgram(jax.vmap(run, in_axes=(0, response_axes(many))))
    (raw, stats), _ = program(jax.random.split(key_mcmc, reps), many)
    post = _named(model, {k: np.asarray(v) for k, v in raw.items()}, {})   # (reps, draws)
    ranks = {name: (x < named[name][0][:, None]).sum(axis=1) for name, x in post.items()}
    return Calibration(pd.DataFrame(ranks), draws, int(np.asarray(stats["diverging"]).sum()))
