"""The fitted model, read off the fit's arrays: lme4's ``merMod`` accessors in Python.

Every field has lme4's meaning: ``objective`` is ``REMLcrit(m)`` for a REML fit and
``deviance(m)`` for ML; ``loglik = -objective / 2``; ``aic = objective + 2 k`` and
``bic = objective + k log(n)`` with k = p + length(theta) + 1; ``varcorr`` is
``as.data.frame(VarCorr(m))`` and ``ranef`` is ``as.data.frame(ranef(m, condVar = TRUE))``;
``singular`` is ``isSingular(m)`` (a diagonal theta element below 1e-4).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from typing import Any

import numpy as np
import pandas as pd

from . import lazy_jax, tables
from .batch import bootstrap, simulate
from .fitting import conditional_variances
from .optimize import Status


class InformationCriteria:
    """``loglik``, ``aic`` and ``bic`` (lme4's) of a fit with ``objective`` (-2 log L),
    ``npar`` and ``nobs``: LMM and GLMM results share them."""

    @property
    def loglik(self) -> float:
        return -0.5 * self.objective

    @property
    def aic(self) -> float:
        return self.objective + 2 * self.npar

    @property
    def bic(self) -> float:
        return self.objective + math.log(self.nobs) * self.npar


@dataclasses.dataclass
class LMMResult(InformationCriteria):
    """A fitted linear mixed model (see the module docstring for each field's meaning).

    The tables (``varcorr``, ``ranef``) are built on first access: a fit that only
    needs the estimates does not pay for pandas.
    """

    formula: str
    reml: bool
    objective: float
    nobs: int
    fixef: pd.Series
    vcov: pd.DataFrame
    theta: np.ndarray
    theta_names: list[str]
    sigma: float
    ngroups: dict[str, int]
    singular: bool
    status: int
    iterations: int
    evaluations: int
    gradient: np.ndarray
    dropped_columns: list[str]
    _model: Any = dataclasses.field(repr=False)
    _cond: Any = dataclasses.field(repr=False)
    _options: Any = dataclasses.field(repr=False)
    _lams: Any = dataclasses.field(repr=False)   # lambda_k per term at theta-hat
    prior: Any = None  # the penalty of a posterior-mode fit (jaxhlm.bayes.priors), else None
    _curvature: Any = dataclasses.field(default=None, repr=False)  # the optimiser's Hessian model at theta-hat
    _fitted_by: str | None = dataclasses.field(default=None, repr=False)  # a fit not by a compiled strategy

    @property
    def _method(self) -> str:
        """The strategy the fit ran: resolved for the padded structure it was compiled for,
        or ``"bfgs on the host"`` (:mod:`jaxhlm.host_fit`)."""
        return self._fitted_by or self._options.resolve(self._model.bucketed.structure)

    @functools.cached_property
    def varcorr(self) -> pd.DataFrame:
        return tables.varcorr(self._model.frame.specs, self._lams, self.sigma)

    @functools.cached_property
    def ranef(self) -> pd.DataFrame:
        return tables.ranef(self._model.frame.terms, self._cond.b, self._b_var)

    @property
    def _b_var(self) -> list:
        """b's conditional covariances per term: the fit's, or, where a large fit left them
        out (:func:`jaxhlm.kernel.variances_deferred`), computed now and kept."""
        if len(self._cond.b_var) != len(self._cond.b):
            model = self._model
            if self._fitted_by is not None:   # a fit on the host: its variances too (jaxhlm.blocked_fit)
                b_var = model._host_fit.conditional_variances(self.theta, self.reml)
            else:
                padded = model.bucketed
                out = lazy_jax.to_host(conditional_variances(padded.blocks, padded.structure, self.theta, self.reml))
                b_var = [np.asarray(v)[:t.nlevels] for v, t in zip(out, model.structure.terms)]
            self._cond = self._cond._replace(b_var=b_var)
        return self._cond.b_var

    @property
    def npar(self) -> int:
        """p + length(theta), + 1 for sigma unless it is known."""
        return len(self.fixef) + len(self.theta) + (not self._model.structure.known_sigma)

    @property
    def residual_parameters(self) -> pd.Series:
        """The residual structure's parameters on nlme's scale (AR(1)'s ``Phi``,
        compound symmetry's ``Rho``, varIdent's ratios by level, varPower's ``power``);
        empty without one (:mod:`jaxhlm.residual`)."""
        st = self._model.structure
        if st.residual is None:
            return pd.Series([], dtype=float, name="residual")
        return pd.Series(st.residual.natural(self.theta[st.ntheta_random:]),
                         index=st.residual.param_names(), name="residual")

    @property
    def correlation_parameter(self) -> float | None:
        """The residual correlation's parameter (nlme's ``coef(corStruct, FALSE)``: AR(1)'s
        phi or compound symmetry's rho), None without one."""
        res = self._model.structure.residual
        if res is None or res.correlation is None:
            return None
        return float(self.residual_parameters.iloc[0])

    @property
    def variance_parameters(self) -> pd.Series | None:
        """The variance function's parameters (nlme's ``coef(varStruct, FALSE)``), None without one."""
        res = self._model.structure.residual
        if res is None or res.variance is None:
            return None
        k = res.correlation.nparams if res.correlation is not None else 0
        return self.residual_parameters.iloc[k:]

    @property
    def fixef_se(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self.vcov.to_numpy())), index=self.fixef.index)

    @property
    def converged(self) -> bool:
        return self.status == Status.CONVERGED

    @property
    def status_name(self) -> str:
        return tables.status_name(self.status)

    @classmethod
    def from_arrays(cls, model, out, reml: bool, options, prior=None, fitted_by=None) -> "LMMResult":
        """The result of ``model`` (an :class:`~jaxhlm.model.LMM`) from its fit's arrays
        (:class:`jaxhlm.fitting.FitArrays`, fetched to the host); ``fitted_by`` names an
        optimiser that is not a compiled strategy."""
        st, frame = model.structure, model.frame
        opt, cond = out.opt, out.cond
        theta = np.asarray(opt.x, dtype=float)
        sigma = float(cond.sigma)
        names = frame.fixef_names
        return cls(
            formula=model.formula, reml=reml, objective=float(opt.fun), nobs=frame.nobs,
            fixef=pd.Series(np.asarray(cond.beta), index=names, name="fixef"),
            vcov=pd.DataFrame(np.asarray(cond.vcov), index=names, columns=names),
            theta=theta, theta_names=model.theta_names, sigma=sigma,
            ngroups=tables.ngroups(frame.specs),
            singular=bool(tables.singular(theta, st.scales())),
            status=int(opt.status), iterations=int(opt.iterations),
            evaluations=int(opt.evaluations), gradient=np.asarray(opt.grad, dtype=float),
            dropped_columns=list(frame.dropped_columns), _model=model, _cond=cond,
            _options=options, _lams=[np.asarray(lam) for lam in out.lams], prior=prior,
            _curvature=np.asarray(opt.curvature, dtype=float), _fitted_by=fitted_by)

    def simulate(self, nsim: int, seed: int = 0) -> np.ndarray:
        """Responses drawn from the fitted model: (nsim, nobs) (lme4's ``simulate``);
        replicate i draws from ``fold_in(key(seed), i)``."""
        return simulate(self._model, self.fixef.to_numpy(), self.theta, self.sigma, nsim, seed)

    def bootstrap(self, nsim: int, seed: int = 0, *, batch_size: int | None = None, progress: bool = False):
        """Parametric bootstrap: simulate and refit ``nsim`` times (lme4's ``bootMer``),
        each refit starting at this fit's theta, as lme4's ``refit`` does (and BFGS from
        this fit's Hessian of the criterion, which spares each refit its probing steps)."""
        return bootstrap(self._model, self.fixef.to_numpy(), self.theta, self.sigma, self.reml,
                         nsim, seed, batch_size=batch_size, options=self._options, progress=progress,
                         hessian0=self._curvature)

    def coef_table(self, ddf: str = "satterthwaite") -> pd.DataFrame:
        """The fixed effects' t tests, indexed by coefficient: Estimate, Std. Error, df,
        t value, Pr(>|t|), as lmerTest's ``summary(m, ddf = ...)$coefficients``:
        ``ddf="satterthwaite"`` (:mod:`jaxhlm.inference.satterthwaite`) or
        ``"kenward-roger"`` (SEs from the adjusted covariance, REML fits only;
        :mod:`jaxhlm.inference.kenward_roger`); ``"asymptotic"``: z tests (Estimate,
        Std. Error, z value, Pr(>|z|))."""
        from .inference import coef_table

        return coef_table(self, ddf)

    def anova(self, ddf: str = "satterthwaite") -> pd.DataFrame:
        """Type III F tests of the fixed-effect terms, indexed by term: Sum Sq, Mean Sq,
        NumDF, DenDF, F value, Pr(>F), as lmerTest's ``anova(m, ddf = ...)``
        (:mod:`jaxhlm.inference.fixed`); ``ddf``: ``"satterthwaite"`` or ``"kenward-roger"``."""
        from .inference import anova_table

        return anova_table(self, ddf)

    def confint(self, method: str = "wald", level: float = 0.95, *, nsim: int = 500,
                seed: int = 0) -> pd.DataFrame:
        """lme4's ``confint(m, method, level, oldNames = FALSE)``: rows ``sd_(Intercept)|Subject``,
        ``cor_Days.(Intercept)|Subject``, ..., ``sigma``, then the coefficients; columns
        ``2.5 %``, ``97.5 %``.  ``method="wald"`` (fixed effects only, as lme4),
        ``"profile"`` (likelihood profile, lme4's default) or ``"bootstrap"`` (percentile,
        ``nsim`` replicates); see :mod:`jaxhlm.inference.intervals`."""
        from .inference.intervals import confint

        return confint(self, method, level, nsim, seed)

    def profile(self, cutoff: float | None = None):
        """lme4's ``profile(m)``: zeta = sign(x - x-hat) sqrt(deviance change) of every
        parameter (SDs, correlations, sigma, a residual structure's parameters, fixed
        effects; the ML deviance, as lme4), traced to +-``cutoff``; ``.table``, ``.plot()``
        (:mod:`jaxhlm.inference.profile`)."""
        from .inference.profile import profile

        return profile(self, cutoff)

    def predict(self, newdata: pd.DataFrame | None = None, re_form=None,
                allow_new_levels: bool = False) -> pd.Series:
        """lme4's ``predict(m, newdata, re.form, allow.new.levels)``: x'beta + the chosen
        terms' z'b (``re_form=None``: all; ``"~0"``: none, lme4's ``re.form = NA``; or a
        formula of random terms); unseen levels are an error unless
        ``allow_new_levels=True`` (then b = 0).  See :mod:`jaxhlm.prediction`."""
        from .prediction import predict

        return predict(self, newdata, re_form, allow_new_levels)

    def fitted(self) -> pd.Series:
        """lme4's ``fitted(m)``: X beta + Z b at the model's rows."""
        return self.predict().rename("fitted")

    def residuals(self) -> pd.Series:
        """lme4's ``residuals(m)``: y - fitted (response residuals)."""
        return (self._model.frame.y - self.fitted()).rename("residuals")

    # ------------------------------------------------------------------ output
    def to_dict(self) -> dict[str, Any]:
        """The fit as plain JSON-able data, with the fields of lme4's reference files."""
        return {
            "formula": self.formula, "reml": self.reml, "objective": self.objective,
            "loglik": self.loglik, "aic": self.aic, "bic": self.bic, "nobs": self.nobs,
            "ngroups": self.ngroups,
            "fixef_names": list(self.fixef.index), "fixef": self.fixef.tolist(),
            "fixef_se": self.fixef_se.tolist(), "vcov": self.vcov.to_numpy().tolist(),
            "theta": self.theta.tolist(), "theta_names": self.theta_names, "sigma": self.sigma,
            "varcorr": _records(self.varcorr), "ranef": _records(self.ranef),
            "singular": self.singular, "converged": self.converged, "status": self.status_name,
            "iterations": self.iterations, "evaluations": self.evaluations,
            "gradient": self.gradient.tolist(), "dropped_columns": self.dropped_columns,
            "prior": None if self.prior is None else str(self.prior),
        }

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def _gls_summary(self) -> str:
        """nlme's ``summary(gls)`` layout, for a model without random effects."""
        st = self._model.structure
        lines = [f"Generalized least squares fit by {'REML' if self.reml else 'maximum likelihood'} (jaxhlm)",
                 f"  Model: {self.formula}",
                 f"{'AIC':>10} {'BIC':>10} {'logLik':>10}",
                 f"{self.aic:>10.4f} {self.bic:>10.4f} {self.loglik:>10.4f}", ""]
        if st.residual is not None:
            lines += [_format_residual(st.residual, self.residual_parameters), ""]
        lines += ["Coefficients:", _gls_coefficients(self).to_string(float_format=lambda v: f"{v:.6g}"), "",
                  f"Residual standard error: {self.sigma:.6g}",
                  f"Degrees of freedom: {self.nobs} total; {self.nobs - self.fixef.size} residual"]
        return "\n".join(lines)

    def summary(self, ddf: str | None = "satterthwaite") -> str:
        """A text summary laid out as lmerTest's ``summary(m, ddf = ...)``: the fixed
        effects' t tests with df and p-values (:meth:`coef_table`); ``ddf=None``: lme4's
        ``summary(m)``, t values only (no derivatives computed; posterior modes always)."""
        if not tables.present(self._model.frame.specs)[0]:
            return self._gls_summary()
        crit = "REML criterion at convergence" if self.reml else "deviance"
        tests = ddf is not None and self.prior is None
        table = self.coef_table(ddf) if tests else None
        if tests:
            from .inference.fixed import method_name

            method = method_name(ddf)
        st = self._model.structure
        random = bool(tables.present(self._model.frame.specs)[0])
        lines = [
            f"{'Linear mixed model' if random else 'Generalized least squares'} fit by "
            f"{'REML' if self.reml else 'maximum likelihood'}"
            + (f". t-tests use {method}'s method" if tests and method else "") + " (jaxhlm)",
            f"Formula: {self.formula}",
        ]
        if self.prior is not None:
            lines.append(f"Posterior mode with prior: {self.prior} (criteria include its -2 log-density)")
        if self._model.structure.known_sigma:
            lines.append(f"Residual SD known (sigma = {self.sigma:g}; per-row variances from the weights)")
        lines.append("")
        if self.reml:
            lines.append(f"{crit}: {self.objective:.4f}")
        else:
            lines.append(f"{'AIC':>10} {'BIC':>10} {'logLik':>10} {'deviance':>10}")
            lines.append(f"{self.aic:>10.1f} {self.bic:>10.1f} {self.loglik:>10.1f} {self.objective:>10.1f}")
        if random:
            lines += ["", "Random effects:", _format_varcorr(self.varcorr)]
            groups = ";  ".join(f"{g}, {n}" for g, n in self.ngroups.items())
            lines.append(f"Number of obs: {self.nobs}, groups:  {groups}")
        else:
            lines += ["", f"Residual standard error: {self.sigma:.4g};  number of obs: {self.nobs}"]
        if st.residual is not None:
            lines += ["", _format_residual(st.residual, self.residual_parameters)]
        lines += ["", "Fixed effects:"]
        if tests:
            lines.append(table.to_string(float_format=lambda v: f"{v:.4g}"))
        else:
            fe = pd.DataFrame({"Estimate": self.fixef, "Std. Error": self.fixef_se,
                               "t value": self.fixef / self.fixef_se})
            lines.append(fe.to_string(float_format=lambda v: f"{v:.4f}"))
        lines.append("")
        if self.singular:
            lines.append("boundary (singular) fit: see help('isSingular')")
        grad = float(np.max(np.abs(self.gradient))) if self.gradient.size else 0.0
        lines.append(f"optimizer: {getattr(self._method, 'name', self._method)}, {self.status_name} after {self.iterations} "
                     f"iterations ({self.evaluations} gradient evaluations); max |gradient| {grad:.2e}")
        if self.dropped_columns:
            lines.append(f"dropped aliased fixed-effect columns: {', '.join(self.dropped_columns)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        kind = "REML" if self.reml else "ML"
        return (f"<LMMResult {kind} {self.formula!r}: objective={self.objective:.4f}, "
                f"sigma={self.sigma:.4g}, {self.status_name}>")


def _records(df: pd.DataFrame) -> list[dict]:
    """Rows as dicts, missing values as None (JSON null)."""
    return df.astype(object).where(df.notna(), None).to_dict("records")


def _gls_coefficients(res) -> pd.DataFrame:
    """nlme's ``summary(gls)$tTable``: t tests with the residual df n - p."""
    from scipy import special

    df = res.nobs - res.fixef.size
    t = res.fixef / res.fixef_se
    return pd.DataFrame({"Value": res.fixef, "Std.Error": res.fixef_se, "t-value": t,
                         "p-value": 2 * special.stdtr(df, -np.abs(t))})


def _format_residual(residual, values: pd.Series) -> str:
    """nlme's lines for a residual structure: its class, form and parameters."""
    lines, k = [], 0
    for part, what in ((residual.correlation, "Correlation structure"), (residual.variance, "Variance function")):
        if part is None:
            continue
        form = ", ".join(f"{f.name} = {getattr(part, f.name)!r}" for f in dataclasses.fields(part)
                         if f.name in ("group", "time", "column"))
        vals = values.iloc[k:k + part.nparams]
        k += part.nparams
        lines.append(f"{what}: {part.nlme} ({form})")
        lines.append("  " + "  ".join(f"{name}: {v:.4g}" for name, v in vals.items()))
    return "\n".join(lines)


def _format_varcorr(vc: pd.DataFrame) -> str:
    out = [f" {'Groups':<10} {'Name':<14} {'Variance':>10} {'Std.Dev.':>9} Corr"]
    has2 = vc["var2"].map(lambda v: isinstance(v, str))
    var, corr = vc[~has2], vc[has2]
    last = None
    for _, r in var.iterrows():
        name = r["var1"] if isinstance(r["var1"], str) else ""
        c = corr[(corr["grp"] == r["grp"]) & (corr["var2"] == r["var1"])]
        cs = " ".join(f"{v:5.2f}" for v in c["sdcor"])
        grp = r["grp"] if r["grp"] != last else ""
        last = r["grp"]
        out.append(f" {grp:<10} {name:<14} {r['vcov']:>10.4g} {r['sdcor']:>9.4g} {cs}".rstrip())
    return "\n".join(out)
