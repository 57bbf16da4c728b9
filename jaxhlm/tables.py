"""Names and tables shared by single fits, batches and posteriors (one copy of each).

- :func:`sd_name`, :func:`corr_name`: ``sd(Subject:Days)``, ``corr(Subject:(Intercept),Days)``,
  the names of random-effect SDs and correlations in batches, studies and posteriors;
- :func:`term_covariances`: per term, sigma^2 lambda lambda', the SDs and correlations;
- :func:`sd_corr`, :func:`varcorr`: those as named columns, or as lme4's
  ``as.data.frame(VarCorr(m))``;
- :func:`lme4_variance_names`: lme4's names of the SDs and correlations in ``confint``;
- :func:`singular`: lme4's ``isSingular`` (a scale parameter below 1e-4);
- :func:`status_name`: a fit's status code as a word;
- :func:`ranef`: ``as.data.frame(ranef(m, condVar = TRUE))``.

Each works on arrays (lambda per term, sigma, theta) and on term descriptions with
names (:class:`jaxhlm.frame.TermSpec`), never on a compiled program's static part.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .optimize import Status

SINGULAR_TOL = 1e-4  # lme4's isSingular(tol = 1e-4)


def sd_name(term: str, column: str) -> str:
    """A random-effect SD's name: ``sd(Subject:Days)``."""
    return f"sd({term}:{column})"


def corr_name(term: str, a: str, b: str) -> str:
    """A random-effect correlation's name: ``corr(Subject:(Intercept),Days)``."""
    return f"corr({term}:{a},{b})"


def lme4_variance_names(specs) -> list[tuple[str, str]]:
    """(lme4's ``confint(oldNames = FALSE)`` name, :func:`sd_name`/:func:`corr_name`) of each
    random-effect SD and correlation, per term in the order of its covariance's lower
    triangle, column by column (``sd_(Intercept)|Subject``, ``cor_Days.(Intercept)|Subject``,
    ``sd_Days|Subject``), then ``sigma``."""
    out = []
    for s in present(specs)[0]:
        for c in range(s.p):
            for r in range(c, s.p):
                if r == c:
                    out.append((f"sd_{s.columns[c]}|{s.group}", sd_name(s.name, s.columns[c])))
                elif s.covariance.reports_correlations:
                    out.append((f"cor_{s.columns[r]}.{s.columns[c]}|{s.group}",
                                corr_name(s.name, s.columns[c], s.columns[r])))
    return out + [("sigma", "sigma")]


def status_name(code: int) -> str:
    """The name of a fit's status code (:class:`jaxhlm.optimize.Status`), lower case."""
    return Status(int(code)).name.lower()


def singular(theta: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """lme4's ``isSingular``: any scale parameter (``scales``, a mask) below 1e-4; theta
    (..., ntheta) gives (...)."""
    return np.any(np.asarray(theta)[..., scales] < SINGULAR_TOL, axis=-1)


def term_covariances(lams: Sequence[np.ndarray], sigma: np.ndarray):
    """Per term, from lambda_k (B, p_k, p_k) and sigma (B,): the covariance
    sigma^2 lambda_k lambda_k' (B, p, p), the SDs (B, p) and the correlations (B, p, p),
    NaN where an SD is 0."""
    out = []
    for lam in lams:
        lam = np.asarray(lam)
        cov = np.einsum("bij,bkj->bik", lam, lam) * (np.asarray(sigma) ** 2)[:, None, None]
        sd = np.sqrt(np.einsum("bii->bi", cov))
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = cov / (sd[:, :, None] * sd[:, None, :])
        out.append((cov, sd, corr))
    return out


def present(specs, *per_term):
    """The terms (and their per-term values) that have random effects: without the
    placeholder of a model with none (:class:`jaxhlm.covariance.Absent`)."""
    kept = [k for k, t in enumerate(specs) if t.covariance.nparams]
    return [[seq[k] for k in kept] for seq in (list(specs),) + tuple(list(s) for s in per_term)]


def sd_corr(specs, lams: Sequence[np.ndarray], sigma: np.ndarray):
    """Random-effect SDs (B, k) and correlations (B, c) with their names, for a batch."""
    sds, sd_names, corrs, corr_names = [], [], [], []
    specs, lams = present(specs, lams)
    for t, (_, sd, corr) in zip(specs, term_covariances(lams, sigma)):
        for a, col in enumerate(t.columns):
            sds.append(sd[:, a])
            sd_names.append(sd_name(t.name, col))
        if t.covariance.reports_correlations:
            for a in range(t.p):
                for b in range(a + 1, t.p):
                    corrs.append(corr[:, b, a])
                    corr_names.append(corr_name(t.name, t.columns[a], t.columns[b]))
    empty = np.zeros((np.shape(sigma)[0], 0))
    return (np.stack(sds, 1) if sds else empty, sd_names,
            np.stack(corrs, 1) if corrs else empty, corr_names)


def varcorr(specs, lams: Sequence[np.ndarray], sigma: float) -> pd.DataFrame:
    """``as.data.frame(VarCorr(m))`` from one fit's lambda_k (p, p): variances, then
    covariances (lower triangle, column-major) per term, then the residual."""
    rows = []
    specs, lams = present(specs, lams)
    covs = term_covariances([np.asarray(lam)[None] for lam in lams], np.array([sigma]))
    for t, (cov, sd, corr) in zip(specs, covs):
        for a in range(t.p):
            rows.append((t.name, t.columns[a], None, cov[0, a, a], sd[0, a]))
        if t.covariance.reports_correlations:
            for a in range(t.p):
                for b in range(a + 1, t.p):
                    rows.append((t.name, t.columns[a], t.columns[b], cov[0, b, a], corr[0, b, a]))
    rows.append(("Residual", None, None, sigma ** 2, sigma))
    df = pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])
    for c in ("var1", "var2"):  # missing names are None, as R's NA in as.data.frame(VarCorr)
        df[c] = pd.Series([v if isinstance(v, str) else None for v in df[c]], dtype=object)
    return df


def ranef(terms, b, b_var) -> pd.DataFrame:
    """``as.data.frame(ranef(m, condVar = TRUE))``: one row per term, covariate and level
    (``terms``: the frame's :class:`jaxhlm.frame.Term` list)."""
    parts = []
    terms, b, b_var = present([t.spec for t in terms], terms, b, b_var)[1:]
    if not terms:
        return pd.DataFrame(columns=["grpvar", "term", "grp", "condval", "condsd"])
    for term, bk, vk in zip(terms, b, b_var):
        bk, vk = np.asarray(bk), np.asarray(vk)
        for a, col in enumerate(term.spec.columns):
            parts.append(pd.DataFrame({
                "grpvar": term.spec.group, "term": col, "grp": term.levels,
                "condval": bk[:, a], "condsd": np.sqrt(np.maximum(vk[:, a, a], 0.0))}))
    return pd.concat(parts, ignore_index=True)


def ngroups(specs) -> dict[str, int]:
    """Levels per grouping factor (lme4's ``ngrps``), in the terms' order."""
    out: dict[str, int] = {}
    for t in present(specs)[0]:
        out.setdefault(t.group, t.nlevels)
    return out
