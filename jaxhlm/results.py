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
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .optimize import Status

if TYPE_CHECKING:
    from .fitting import FitArrays
    from .model import LMM

SINGULAR_TOL = 1e-4  # lme4's isSingular(tol = 1e-4)


@dataclasses.dataclass
class LMMResult:
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
    _model: "LMM" = dataclasses.field(repr=False)
    _cond: Any = dataclasses.field(repr=False)
    _options: Any = dataclasses.field(repr=False)
    prior: Any = None  # the penalty of a posterior-mode fit (jaxhlm.priors), else None

    @property
    def _method(self) -> str:
        return self._options.resolve(self._model.structure)

    @functools.cached_property
    def varcorr(self) -> pd.DataFrame:
        return _varcorr(self._model.structure, self.theta, self.sigma)

    @functools.cached_property
    def ranef(self) -> pd.DataFrame:
        return _ranef(self._model.frame, self._cond.b, self._cond.b_var)

    @property
    def npar(self) -> int:
        """p + length(theta), + 1 for sigma unless it is known."""
        return len(self.fixef) + len(self.theta) + (self._model.structure.sigma is None)

    @property
    def loglik(self) -> float:
        return -0.5 * self.objective

    @property
    def aic(self) -> float:
        return self.objective + 2 * self.npar

    @property
    def bic(self) -> float:
        return self.objective + math.log(self.nobs) * self.npar

    @property
    def fixef_se(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self.vcov.to_numpy())), index=self.fixef.index)

    @property
    def converged(self) -> bool:
        return self.status == Status.CONVERGED

    @property
    def status_name(self) -> str:
        return Status(self.status).name.lower()

    @classmethod
    def from_arrays(cls, model: "LMM", out: "FitArrays", reml: bool, options,
                    prior=None) -> "LMMResult":
        st, frame = model.structure, model.frame
        opt, cond = out.opt, out.cond
        theta = np.asarray(opt.x, dtype=float)
        sigma = float(cond.sigma)
        names = frame.fixef_names
        lower = st.theta_lower()
        return cls(
            formula=model.formula, reml=reml, objective=float(opt.fun), nobs=frame.nobs,
            fixef=pd.Series(np.asarray(cond.beta), index=names, name="fixef"),
            vcov=pd.DataFrame(np.asarray(cond.vcov), index=names, columns=names),
            theta=theta, theta_names=st.theta_names(), sigma=sigma,
            ngroups=_ngroups(frame),
            singular=bool(np.any(theta[lower == 0] < SINGULAR_TOL)),
            status=int(opt.status), iterations=int(opt.iterations),
            evaluations=int(opt.evaluations), gradient=np.asarray(opt.grad, dtype=float),
            dropped_columns=list(frame.dropped_columns), _model=model, _cond=cond,
            _options=options, prior=prior)

    def simulate(self, nsim: int, seed: int = 0) -> np.ndarray:
        """Responses drawn from the fitted model: (nsim, nobs) (lme4's ``simulate``)."""
        from .batch import simulate

        return simulate(self, nsim, seed)

    def bootstrap(self, nsim: int, seed: int = 0, *, batch_size: int = 4096, progress: bool = False):
        """Parametric bootstrap: simulate and refit ``nsim`` times (lme4's ``bootMer``)."""
        from .batch import bootstrap

        return bootstrap(self, nsim, seed, batch_size=batch_size, options=self._options,
                         progress=progress)

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

    def summary(self) -> str:
        """A text summary laid out as lme4's ``summary(m)``."""
        crit = "REML criterion at convergence" if self.reml else "deviance"
        lines = [
            f"Linear mixed model fit by {'REML' if self.reml else 'maximum likelihood'} (jaxhlm)",
            f"Formula: {self.formula}",
        ]
        if self.prior is not None:
            lines.append(f"Posterior mode with prior: {self.prior} (criteria include its -2 log-density)")
        if self._model.structure.sigma is not None:
            lines.append(f"Residual SD known (sigma = {self._model.structure.sigma:g}; per-row variances from the weights)")
        lines.append("")
        if self.reml:
            lines.append(f"{crit}: {self.objective:.4f}")
        else:
            lines.append(f"{'AIC':>10} {'BIC':>10} {'logLik':>10} {'deviance':>10}")
            lines.append(f"{self.aic:>10.1f} {self.bic:>10.1f} {self.loglik:>10.1f} {self.objective:>10.1f}")
        lines += ["", "Random effects:", _format_varcorr(self.varcorr)]
        groups = ";  ".join(f"{g}, {n}" for g, n in self.ngroups.items())
        lines.append(f"Number of obs: {self.nobs}, groups:  {groups}")
        lines += ["", "Fixed effects:"]
        fe = pd.DataFrame({"Estimate": self.fixef, "Std. Error": self.fixef_se,
                           "t value": self.fixef / self.fixef_se})
        lines.append(fe.to_string(float_format=lambda v: f"{v:.4f}"))
        lines.append("")
        if self.singular:
            lines.append("boundary (singular) fit: see help('isSingular')")
        grad = float(np.max(np.abs(self.gradient))) if self.gradient.size else 0.0
        lines.append(f"optimizer: {self._method}, {self.status_name} after {self.iterations} "
                     f"iterations ({self.evaluations} gradient evaluations); max |gradient| {grad:.2e}")
        if self.dropped_columns:
            lines.append(f"dropped aliased fixed-effect columns: {', '.join(self.dropped_columns)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        kind = "REML" if self.reml else "ML"
        return (f"<LMMResult {kind} {self.formula!r}: objective={self.objective:.4f}, "
                f"sigma={self.sigma:.4g}, {self.status_name}>")


def term_covariances(st, theta: np.ndarray, sigma: np.ndarray):
    """Per term: (covariance sigma^2 lambda_k lambda_k', SDs, correlations) for a batch.

    ``theta`` is (B, ntheta), ``sigma`` (B,); the covariance is (B, p, p), the SDs
    (B, p), the correlations (B, p, p) (NaN where an SD is 0).
    """
    out, i = [], 0
    for t in st.terms:
        lam = np.zeros((theta.shape[0], t.p, t.p))
        for k, (r, c) in enumerate(t.tri_indices):
            lam[:, r, c] = theta[:, i + k]
        i += t.ntheta
        cov = np.einsum("bij,bkj->bik", lam, lam) * (sigma ** 2)[:, None, None]
        sd = np.sqrt(np.einsum("bii->bi", cov))
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = cov / (sd[:, :, None] * sd[:, None, :])
        out.append((t, cov, sd, corr))
    return out


def _varcorr(st, theta: np.ndarray, sigma: float) -> pd.DataFrame:
    """``as.data.frame(VarCorr(m))``: variances, then covariances (lower triangle,
    column-major) per term, then the residual."""
    rows = []
    for t, cov, sd, corr in term_covariances(st, theta[None, :], np.array([sigma])):
        for a in range(t.p):
            rows.append((t.name, t.columns[a], None, cov[0, a, a], sd[0, a]))
        for a in range(t.p):
            for b in range(a + 1, t.p):
                rows.append((t.name, t.columns[a], t.columns[b], cov[0, b, a], corr[0, b, a]))
    rows.append(("Residual", None, None, sigma ** 2, sigma))
    df = pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])
    for c in ("var1", "var2"):  # missing names are None, as R's NA in as.data.frame(VarCorr)
        df[c] = pd.Series([v if isinstance(v, str) else None for v in df[c]], dtype=object)
    return df


def _ranef(frame, b, b_var) -> pd.DataFrame:
    """``as.data.frame(ranef(m, condVar = TRUE))``: one row per term, covariate and level."""
    parts = []
    for term, bk, vk in zip(frame.terms, b, b_var):
        bk, vk = np.asarray(bk), np.asarray(vk)
        for a, col in enumerate(term.spec.columns):
            parts.append(pd.DataFrame({
                "grpvar": term.spec.group, "term": col, "grp": term.levels,
                "condval": bk[:, a], "condsd": np.sqrt(np.maximum(vk[:, a, a], 0.0))}))
    return pd.concat(parts, ignore_index=True)


def _ngroups(frame) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in frame.terms:
        out.setdefault(t.spec.group, t.spec.nlevels)
    return out


def _records(df: pd.DataFrame) -> list[dict]:
    """Rows as dicts, missing values as None (JSON null)."""
    return df.astype(object).where(df.notna(), None).to_dict("records")


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
