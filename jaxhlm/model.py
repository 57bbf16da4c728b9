"""``LMM``: a linear mixed model from an lme4 formula and a DataFrame (lme4's ``lmer``)."""

from __future__ import annotations

import dataclasses
import functools

from . import lazy_jax
from .lazy_jax import jax, jnp
import numpy as np
import pandas as pd

from . import blocks as _blocks
from . import frame as _frame
from . import bucket_choice, padding
from .batch import fit_many
from .bayes import priors as _priors
from .families import GAUSSIAN
from .errors import JaxhlmError
from .fitting import Options, fit_blocks
from .kernel import variances_deferred
from .pages import small_pages
from .residual import whiten as _whiten
from .results import LMMResult
from .start import moment_start

DEVICE_PUT_FROM = 1 << 20  # bytes


def _placed(blocks: _blocks.Blocks) -> _blocks.Blocks:
    """Large blocks go to the device once; small ones travel with each call, which costs
    less than a separate transfer (a quarter of a sleepstudy fit's time).  Before ``jax``
    is imported they stay on the host (:mod:`jaxhlm.stored_run` copies them per call)."""
    large = sum(np.asarray(a).nbytes for a in lazy_jax.tree_flatten(blocks)[0]) > DEVICE_PUT_FROM
    return jax.device_put(blocks) if large and lazy_jax.loaded() else blocks


class LMM:
    """A linear mixed model ``y = X beta + Z b + e``, ``b ~ N(0, sigma^2 Lambda Lambda')``.

    ``LMM(formula, data)`` builds the model frame and the cross-product blocks once
    (lme4's ``lFormula`` and ``mkLmerDevfun``); :meth:`fit` optimises the profiled
    objective (lme4's ``lmer``).

    ``weights``: prior weights (a column name or values; row i has residual variance
    sigma^2 / w_i, lme4's ``weights =``).  ``residual_variance``: known residual
    variances s_i^2 (a column name or values), so sigma is not estimated: the
    meta-analysis model y_i ~ N(x_i'beta + z_i'b, s_i^2), e.g. eight schools,
    ``LMM("y ~ 1 + (1 | school)", df, residual_variance="se2")``.  ``correlation``,
    ``variance``: a residual correlation structure and a variance function
    (:mod:`jaxhlm.residual`; nlme's ``lme(..., correlation =, weights =)``), e.g.
    ``correlation=jaxhlm.AR1(group="Subject", time="Days")``.  Example::

        model = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", sleepstudy)
        res = model.fit(reml=True)
        print(res.summary())
    """

    @small_pages()   # a large design's arrays: a first touch of huge pages stalled 0.4-1.1 s (jaxhlm.pages)
    def __init__(self, formula: str, data: pd.DataFrame, *, weights=None, residual_variance=None,
                 correlation=None, variance=None):
        self._setup(formula, _frame.build(formula, data, weights, residual_variance), correlation, variance)

    def _setup(self, formula: str, frame, correlation, variance) -> None:
        self.formula = formula
        self.frame = frame
        if correlation is None and variance is None:
            self.structure, self._host_blocks = _blocks.build(self.frame)
        else:   # nlme's correlation= and weights=: the model carries its rows (jaxhlm.residual)
            residual, self._host_blocks = _whiten.bind(self.frame, correlation, variance)
            self.structure = dataclasses.replace(self.frame.structure, residual=residual)

    def _plain(self, what: str) -> None:
        """Refuse what residual structures do not support yet, naming it."""
        if self.structure.residual is not None:
            raise JaxhlmError(f"{what} is not available yet for models with a residual structure "
                              "(correlation= or variance=); fit() and its tables are")

    @property
    def blocks(self) -> _blocks.Blocks:
        """The cross-product blocks (:mod:`jaxhlm.blocks`) of this model's own shapes."""
        return self._placed_blocks if lazy_jax.loaded() else self._host_blocks

    @functools.cached_property
    def _placed_blocks(self) -> _blocks.Blocks:
        return _placed(self._host_blocks)

    @property
    def bucketed(self) -> padding.Bucketed:
        """The blocks padded to their bucket (:mod:`jaxhlm.padding`): what :meth:`fit` and
        :meth:`fit_many` compile for, so that models of nearby sizes share one program."""
        return self._placed_bucketed if lazy_jax.loaded() else self._host_bucketed

    @functools.cached_property
    def _host_bucketed(self) -> padding.Bucketed:
        st = self.structure
        choose = functools.partial(bucket_choice.choose, bucket_choice.kind("lmm", st))
        if st.residual is not None:   # the class sets (jaxhlm.residual.whiten)
            return _whiten.bucket(st, self._host_blocks, choose)
        return padding.bucket(st, self._host_blocks, choose)

    @functools.cached_property
    def _placed_bucketed(self) -> padding.Bucketed:
        out = self._host_bucketed
        return dataclasses.replace(out, blocks=_placed(out.blocks))

    @functools.cached_property
    def _group_fit(self):
        """The model's groups for a fit on the host (:mod:`jaxhlm.group_fit`), or None
        where the compiled program fits it."""
        from .group_fit import GroupFit

        return GroupFit.of(self)

    @functools.cached_property
    def _host_fit(self):
        """The model's fit on the host: by its groups where they are small
        (:attr:`_group_fit`), else by its blocked factor (:mod:`jaxhlm.blocked_fit`), or
        None where the compiled program fits it."""
        if self._group_fit is not None:
            return self._group_fit
        from .blocked_fit import BlockedFit

        return BlockedFit.of(self)

    @functools.cached_property
    def independent_groups(self):
        """The model's rows in independent groups
        (:class:`jaxhlm.independent_groups.Groups`) where they are small, for
        Kenward-Roger's tests and the profile on the host; else None."""
        from .independent_groups import Groups

        return Groups.of(self.frame, self.structure)

    @functools.cached_property
    def theta_start(self) -> np.ndarray:
        """Where :meth:`fit` starts: Henderson's moment estimates for the intercepts'
        variances, lme4's start for the rest (:func:`jaxhlm.start.moment_start`)."""
        return moment_start(self.frame, self.structure)

    @property
    def nobs(self) -> int:
        return self.frame.nobs

    @property
    def fixef_names(self) -> list[str]:
        return list(self.frame.fixef_names)

    @property
    def specs(self):
        """The random-effects terms with their names (:class:`jaxhlm.frame.TermSpec`)."""
        return self.frame.specs

    @property
    def theta_names(self) -> list[str]:
        """lme4's names of theta (``getME(m, "theta")``'s names), then the residual
        structure's (nlme's names, for parameters on the optimiser's scale)."""
        res = self.structure.residual
        return self.frame.theta_names + ([] if res is None else res.param_names())

    def objective(self, theta, reml: bool = True, prior=None) -> float:
        """The REML criterion (or ML deviance) at ``theta``, in lme4's order of theta; with a
        ``prior`` (:mod:`jaxhlm.priors`), that plus the prior's -2 log-density."""
        return float(GAUSSIAN.objective(jnp.asarray(theta, dtype=jnp.float64), self.blocks,
                                        self.structure, bool(reml), _priors.penalty(prior, self)))

    def fit(self, reml: bool = True, *, options: Options = Options(), prior=None,
            start=None) -> LMMResult:
        """Fit by REML (default, as lme4) or by maximum likelihood (``reml=False``).

        ``prior``: a penalty on the covariance parameters, giving the posterior mode
        instead (blme's ``blmer``), e.g. ``jaxhlm.priors.zero_avoiding()``.
        ``start``: theta to start the optimiser from, in lme4's order (lme4's ``start =``);
        default :attr:`theta_start`.  lme4 starts at lambda_k = I:
        ``start=model.structure.theta_start()``.

        The fit runs on the host in NumPy, compiling nothing, where the rows fall into small
        independent groups (:mod:`jaxhlm.group_fit`: one grouping factor, nested factors,
        residual structures within them) and for other Gaussian models of lme4's
        covariances without a residual structure (:mod:`jaxhlm.blocked_fit`: crossed
        designs), unless ``options`` names a strategy (or ``JAXHLM_HOST_FIT=0``);
        elsewhere one compiled program does it.
        """
        penalty = _priors.penalty(prior, self)
        theta0 = self.theta_start if start is None else np.asarray(start, dtype=float)
        if theta0.shape != (self.structure.ntheta,):
            raise ValueError(f"start must have {self.structure.ntheta} values (theta, in lme4's "
                             f"order); got shape {theta0.shape}")
        if penalty is None and options.method == "auto" and self._host_fit is not None:
            out = self._host_fit.fit(bool(reml), options, theta0)   # on the host: nothing to compile
            return LMMResult.from_arrays(self, out, bool(reml), options, penalty, fitted_by="bfgs on the host")
        padded = self.bucketed
        out = fit_blocks(padded.blocks, padded.structure, bool(reml), options, theta0, penalty)
        return LMMResult.from_arrays(self, padding.unpad(lazy_jax.to_host(out), self.structure),
                                     bool(reml), options, penalty)

    def sample(self, priors=None, *, num_warmup: int = 1000, num_samples: int = 1000,
               num_chains: int = 4, seed: int = 0, chain_method: str = "vectorized", **nuts):
        """Posterior draws by NumPyro NUTS on the marginal likelihood (see :func:`jaxhlm.bayes.posterior.sample`)."""
        from .bayes import posterior as _posterior

        return _posterior.sample(self, priors, num_warmup=num_warmup, num_samples=num_samples,
                      num_chains=num_chains, seed=seed, chain_method=chain_method, **nuts)

    def fit_many(self, Y, reml: bool = True, *, batch_size: int | None = None,
                 options: Options = Options(), progress: bool = False):
        """Fit many responses on this design at once (see :func:`jaxhlm.batch.fit_many`)."""
        return fit_many(self, Y, reml, batch_size=batch_size, options=options, progress=progress)

    def warmup(self, reml: bool = True, *, nsim: int = 0, responses: int = 0,
               inference: bool = False) -> "LMM":
        """Compile, and keep on disk (:mod:`jaxhlm.precompiled`), the programs that
        ``fit(reml)`` (none where the fit runs on the host, :mod:`jaxhlm.host_fit`; with
        ``ranef``'s conditional variances where a large compiled fit leaves
        them to their first use, :func:`jaxhlm.kernel.variances_deferred`),
        ``fit().bootstrap(nsim)`` and ``fit_many`` of ``responses``
        responses will run (their compiled programs, which those calls reach once the
        host has had its share of their fits, :func:`jaxhlm.batch.fit_many`; in this process,
        at once), by running each once on one chunk of simulated responses
        (:func:`jaxhlm.batch.chunk_size`: the same program as the full batch's), and with
        ``inference`` those of the fit's tests and intervals (Satterthwaite's and, for
        REML, Kenward-Roger's tables, not with a residual structure; the profile; these two
        compile nothing where the model's rows fall into small independent groups,
        :mod:`jaxhlm.independent_groups`, and are left out there).  Every
        model of the same bucket (:mod:`jaxhlm.padding`; with a residual structure, through
        its class sets, :func:`jaxhlm.residual.whiten.bucket`) then starts warm, in this process and in later ones:
        ``jaxhlm warmup DATA FORMULA --nsim N --inference``."""
        from . import batch
        from .batch import chunk_size

        res = self.fit(reml)
        if variances_deferred(self.bucketed.structure):
            res.ranef
        plain = self.structure.residual is None   # Kenward-Roger: not with one
        if inference:
            res.coef_table("satterthwaite")
            compiled = self.independent_groups is None
            if reml and not self.structure.known_sigma and plain and compiled:
                res.coef_table("kenward-roger")
            if not self.structure.known_sigma and compiled:
                res.profile()
        # The batches' compiled programs, which a first batch leaves to the host while it can
        # (jaxhlm.batch.HOST_BUDGET); compiled here, later batches in this process run them.
        compiled = dataclasses.replace(res._options, method="bfgs")
        if nsim:
            batch.bootstrap(self, res.fixef.to_numpy(), res.theta, res.sigma, reml, min(nsim, chunk_size(nsim)),
                            options=compiled, hessian0=res._curvature)
        if responses:
            self.fit_many(res.simulate(min(responses, chunk_size(responses))), reml, options=compiled)
        return self

    def __repr__(self) -> str:
        return f"LMM({self.formula!r}, nobs={self.nobs})"

