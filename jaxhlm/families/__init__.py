"""Response families: what the blocked factor of :mod:`jaxhlm.kernel` means for the likelihood.

| file | family | lme4 / MixedModels.jl |
| --- | --- | --- |
| ``gaussian.py`` | :class:`Gaussian`: profiled ML/REML criterion, sigma-hat, the marginal log-likelihood, draws of b | ``lmer``; ``LinearMixedModel`` |

A family is a frozen dataclass (a static argument of compiled fits) with

- ``objective(theta, blocks, st, reml, penalty)``: the criterion minimised over theta;
- ``conditional(theta, blocks, st, reml, penalty)``: beta-hat, sigma-hat, vcov(beta) and
  the conditional modes of b (:class:`jaxhlm.kernel.Conditional`);
- ``marginal_loglik(theta, beta, sigma, blocks, st)`` and
  ``draw_ranef(key, theta, beta, sigma, blocks, st)`` for NUTS.

To add one (the GLMM families: binomial, Poisson), write a new file with such a class,
built on :func:`jaxhlm.kernel.factorize` (PIRLS reweights the blocks per iteration),
and pass it as ``family=`` to :func:`jaxhlm.fitting.fit_blocks`.
"""

from .gaussian import GAUSSIAN, Gaussian

__all__ = ["GAUSSIAN", "Gaussian"]
