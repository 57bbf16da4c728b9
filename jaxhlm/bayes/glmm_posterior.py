"""Full posteriors of a GLMM by NumPyro's NUTS, the random effects sampled explicitly.

When y | b is not Gaussian, b cannot be integrated out in closed form (the LMM's route,
:mod:`jaxhlm.bayes.posterior`).  Of the two ways left, the Laplace-approximate marginal
(with an importance-sampling correction) and sampling b with the other parameters,
jaxhlm takes the second, exact one, non-centred as rstanarm and brms do: per term
u_k ~ N(0, I) (ell_k x p_k) and b_k = u_k Lambda_k' with Lambda_k = diag(s_k) L_k, the
term's SDs and LKJ Cholesky factor (the LMM's sites, with sigma = 1), so the prior
geometry in u is isotropic and the hierarchical funnel of a centred b is avoided.  The
likelihood is the family's, sum_i log p(y_i | mu_i), mu = g^{-1}(offset + X beta + Z b),
on the same arrays as the fit (:class:`jaxhlm.pirls.GLMMData`).  Priors:
:class:`jaxhlm.bayes.priors.Priors` on the link scale.  Checked against Stan on cbpp
(``tests/reference/glmm/cbpp_nuts.stan``) within Monte Carlo error.

The sites are the fixed effects, the SD and LKJ sites of each term, and ``u(term)``;
:class:`GLMMPosterior` names the draws as the fit does and gives b's posterior.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..lazy_jax import jax, jnp
import numpy as np

from ..families import loglik
from ..glmm_fit import own_code
from ..pirls import linear_predictor
from ..tables import sd_corr
from .chains import ChainProgram, Schedule, chain_keys, require_int
from .posterior import Posterior, _lambdas_of_draws, ranef_table
from .priors import Priors


def u_site(term: str) -> str:
    return f"u({term})"


@dataclasses.dataclass(frozen=True)
class GLMMSites:
    """What the NumPyro model of a GLMM is, apart from its arrays: the structure, each
    term's (name, columns, covariance), the fixed effects' names and the family (hashable,
    a static argument of the stored chains, :mod:`jaxhlm.bayes.chains`)."""

    structure: Any
    terms: tuple
    fixef_names: tuple[str, ...]
    family: Any

    @classmethod
    def of(cls, model) -> "GLMMSites":
        return cls(model.structure, tuple((t.name, t.columns, t.covariance) for t in model.frame.specs),
                   tuple(model.frame.fixef_names), model.family)

    def model(self, priors):
        """The NumPyro model (module docstring): priors on beta and each term's covariance
        sites, u ~ N(0, I), and the family's log-likelihood at eta; its argument is the
        model's :class:`jaxhlm.pirls.GLMMData`."""
        import numpyro
        import numpyro.distributions as dist

        st, family = self.structure, self.family

        def fn(data):
            beta = jnp.stack([numpyro.sample(name, d) for name, d in zip(self.fixef_names, priors.fixef)])
            one = jnp.asarray(1.0, beta.dtype)
            theta = jnp.concatenate([covariance.sample(numpyro.sample, name, columns, sds, conc, one)
                                     for (name, columns, covariance), sds, conc
                                     in zip(self.terms, priors.sd, priors.lkj)])
            b = [numpyro.sample(u_site(name), dist.Normal(0.0, 1.0).expand([term.nlevels, term.p]).to_event(2))
                 @ lam.T for (name, _, _), term, lam in zip(self.terms, st.terms, st.lambdas(theta))]
            mu = family.link.inverse(linear_predictor(beta, b, data))
            numpyro.factor("loglik", jnp.sum(loglik(family, data.y, mu, data.trials)))

        return fn


@dataclasses.dataclass
class GLMMPosterior(Posterior):
    """Posterior draws of a GLMM (:class:`jaxhlm.bayes.posterior.Posterior`'s fields and
    summary); ``raw`` holds the u draws, :meth:`ranef` b's posterior."""

    def ranef(self, seed: int = 0, summary: bool = True):
        """b = u Lambda' per draw: per term (chains, draws, ell_k, p_k) (``summary=False``),
        or lme4's ``ranef`` layout with the posterior mean, sd and quantiles (``seed``
        unused: the draws are the chains')."""
        model = self.model
        specs, st = model.frame.specs, model.structure
        C, D = next(iter(self.samples.values())).shape
        sites = {k: self.raw[k] for t in specs for k in t.covariance.sites(t.name, t.columns)}
        lams = _lambdas_of_draws(specs, st, sites, np.ones((C, D)))
        draws = {t.name: np.einsum("nja,nba->njb", self.raw[u_site(t.name)].reshape((C * D,) + term),
                                   np.asarray(lam)).reshape((C, D) + term)
                 for t, lam, term in zip(specs, lams, [(x.nlevels, x.p) for x in st.terms])}
        if not summary:
            return draws
        return ranef_table(model.frame.terms, [draws[t.name] for t in specs])


def _named(model, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Draws under the fit's names: fixed effects, then each term's SDs and correlations."""
    C, D = next(iter(raw.values())).shape[:2]
    out = {name: raw[name] for name in model.frame.fixef_names}
    specs = model.frame.specs
    sites = {k: raw[k] for t in specs for k in t.covariance.sites(t.name, t.columns)}
    lams = [np.asarray(lam) for lam in _lambdas_of_draws(specs, model.structure, sites, np.ones((C, D)))]
    sd, sd_names, corr, corr_names = sd_corr(specs, lams, np.ones(C * D))
    out.update({n: sd[:, j].reshape(C, D) for j, n in enumerate(sd_names)})
    out.update({n: corr[:, j].reshape(C, D) for j, n in enumerate(corr_names)})
    return out


def sample(model, priors: Priors | None = None, *, num_warmup: int = 1000, num_samples: int = 1000,
           num_chains: int = 4, seed: int = 0, chain_method: str = "vectorized",
           target_accept_prob: float = 0.8, thinning: int = 1) -> GLMMPosterior:
    """NUTS draws of (beta, SDs, correlations, u) (module docstring), the chains in one
    compiled program (:mod:`jaxhlm.bayes.chains`), starting at the prior's medians and
    warming up as Stan does (step size and diagonal metric)."""
    require_int("num_chains", num_chains, 1)
    schedule = Schedule(num_warmup, num_samples, thinning, target_accept_prob)
    resolved = (priors or Priors()).resolve(model)
    arrays = resolved.arrays() if own_code(model.structure, model.family) else None
    program = ChainProgram.chains(GLMMSites.of(model), schedule, chain_method, num_chains, arrays or resolved,
                                  arrays is not None)
    (raw, stats), seconds = program(jax.random.key_data(chain_keys(seed, num_chains)), jax.device_put(model.data),
                                    None, {})
    raw = {k: np.asarray(v) for k, v in raw.items()}
    stats = {k: np.asarray(v) for k, v in stats.items()}
    return GLMMPosterior(model, _named(model, raw), raw, stats, int(stats["diverging"].sum()),
                         {"compile": seconds["compile"], "warmup_and_sampling": seconds["run"]}, num_chains)
