"""Response families: what the blocked factor of :mod:`jaxhlm.kernel` means for the likelihood.

| file | family | lme4 / MixedModels.jl |
| --- | --- | --- |
| ``gaussian.py`` | :class:`Gaussian`: profiled ML/REML criterion, sigma-hat, the marginal log-likelihood, draws of b | ``lmer``; ``LinearMixedModel`` |
| ``binomial.py`` | ``Binomial``: proportions of trials (logit, probit, cloglog) | ``glmer(family = binomial)`` |
| ``poisson.py`` | ``Poisson``: counts (log), offsets | ``glmer(family = poisson)`` |
| ``links.py`` | the links: inverse, derivative, link | R's ``make.link`` |

A family is a frozen dataclass (a static argument of compiled fits) with

- ``objective(theta, blocks, st, reml, penalty)``: the criterion minimised over theta
  (``reml`` a boolean that may be traced: a program's argument, not its key);
- ``conditional(theta, blocks, st, reml, penalty, modes=True)``: beta-hat, sigma-hat,
  vcov(beta) and (``modes``) the conditional modes of b (:class:`jaxhlm.kernel.Conditional`);
- ``marginal_loglik(theta, beta, sigma, blocks, st)`` and
  ``draw_ranef(key, theta, beta, sigma, blocks, st)`` for NUTS.

A GLMM family (:class:`~jaxhlm.families.binomial.Binomial` says how to add one) has a
``link`` and ``variance``, ``loglik_kernel`` and ``log_normalizer`` (:func:`loglik`),
``start``, ``check``, ``sample`` (``trials=None``: one trial, a unit weight, per row),
``at_bound`` and ``canonical``; :mod:`jaxhlm.pirls` reweights the blocks per iteration, and
:class:`Gaussian` speaks this protocol too (with sigma given).
"""

from .gaussian import GAUSSIAN, Gaussian

__all__ = ["GAUSSIAN", "Gaussian", "loglik"]


def loglik(family, y, mu, trials):
    """log p(y | mu) of a GLMM family, row by row: its kernel (the terms with mu) plus its
    normalizer (the rest)."""
    return family.loglik_kernel(y, mu, trials) + family.log_normalizer(y, trials)
