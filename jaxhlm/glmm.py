"""``GLMM``: a generalized linear mixed model from an lme4 formula (lme4's ``glmer``).

``GLMM(formula, data, family="binomial" | "poisson", link=None, weights=None)`` builds the
model frame once (:mod:`jaxhlm.frame`) and the arrays of :mod:`jaxhlm.pirls`;
:meth:`GLMM.fit` maximises the Laplace approximation (``nagq=1``, lme4's default) over
(theta, beta) together, or over theta alone with beta inside PIRLS (``nagq=0``, glmer's
first stage), from lme4's start (:func:`jaxhlm.glmm_fit.default_start`). Responses as R
takes them: a 0/1 or a count column, ``cbind(successes, failures)``, or a proportion with
``weights=`` the trials; ``offset(expr)`` terms in the formula enter the linear predictor.

``nagq`` > 1: adaptive Gauss-Hermite quadrature (:mod:`jaxhlm.quadrature`, which says on
which footing lme4 reports its likelihood then).  Many responses, simulation and the
parametric bootstrap: :mod:`jaxhlm.glmm_batch`; NUTS: :mod:`jaxhlm.bayes.glmm_posterior`.
A fit's status (:func:`status`) flags PIRLS divergence and separation, with a warning.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import warnings

from .lazy_jax import jax, jnp
import numpy as np
import pandas as pd

from . import frame as _frame
from . import bucket_choice, lazy_jax, padding, tables
from .blocks import pattern
from .errors import DataError, FormulaError, JaxhlmError
from .families.binomial import Binomial
from .families.links import LINKS
from .families.poisson import Poisson
from .glmm_fit import CONDITIONAL_VARIANCES, FIT, deviance_at, stored
from .optimize import Status
from .pages import small_pages
from .pirls import GLMMData
from .quadrature import check_scalar_term
from .results import InformationCriteria

FAMILIES = {"binomial": Binomial, "poisson": Poisson}
RESPONSE, TRIALS, OFFSET = "glmm_response_", "glmm_trials_", "glmm_offset_"
_FUNCTIONS = {"log": np.log, "exp": np.exp, "sqrt": np.sqrt, "log1p": np.log1p, "abs": np.abs}


def _split_call(text: str, name: str):
    """The argument of each top-level ``name(...)`` in text, and the text without them."""
    args, out, i = [], [], 0
    for m in re.finditer(rf"\b{name}\s*\(", text):
        if m.start() < i:
            continue
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            j += 1
        args.append(text[m.end():j - 1])
        out.append(text[i:m.start()])
        i = j
    out.append(text[i:])
    return args, "".join(out)


def _evaluate(expr: str, data: pd.DataFrame, what: str) -> np.ndarray:
    try:
        value = eval(expr, {"__builtins__": {}, **_FUNCTIONS}, {c: data[c].to_numpy() for c in data.columns
                                                                 if isinstance(c, str)})
    except NameError as e:
        raise FormulaError(f"{what} {expr!r}: {e} (not a column of the data)") from None
    except Exception as e:  # noqa: BLE001 - the user's expression
        raise FormulaError(f"{what} {expr!r} could not be evaluated: {e}") from None
    return np.broadcast_to(np.asarray(value, dtype=float), (len(data),)).copy()


def _family(family, link):
    if isinstance(family, str):
        if family not in FAMILIES:
            raise JaxhlmError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
        cls = FAMILIES[family]
        if link is None:
            return cls()
        if link not in LINKS:
            raise JaxhlmError(f"unknown link {link!r}; known: {', '.join(LINKS)}")
        return cls(LINKS[link]())
    return family


class GLMM:
    """A generalized linear mixed model (lme4's ``glmer``); see the module docstring.

    Example::

        cbpp = jaxhlm.datasets.load("cbpp")
        res = jaxhlm.GLMM("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp,
                          family="binomial").fit()
        print(res.summary())
    """

    @small_pages()   # a large design's arrays on ordinary pages, as LMM's (jaxhlm.pages)
    def __init__(self, formula: str, data: pd.DataFrame, family="binomial", *, link=None, weights=None):
        if not isinstance(data, pd.DataFrame):
            raise DataError(f"data must be a pandas DataFrame, not {type(data).__name__}")
        if not isinstance(formula, str) or formula.count("~") != 1:
            raise FormulaError(f"a GLMM formula is 'response ~ terms'; got {formula!r}")
        self.formula = formula
        self.family = _family(family, link)
        self.offsets = []
        lhs, rhs = formula.split("~")
        lhs = lhs.strip()
        self.offsets, rhs = _split_call(rhs, "offset")
        rhs = re.sub(r"\+\s*\+", "+", rhs).strip().strip("+").strip() or "1"
        d = data.copy()
        bound, rest = _split_call(lhs, "cbind")
        if bound:
            parts = [p.strip() for p in bound[0].split(",")]
            if len(parts) != 2 or rest.strip():
                raise FormulaError(f"write a binomial response as cbind(successes, failures); got {lhs!r}")
            k, f = (_evaluate(p, data, "cbind() argument") for p in parts)
            n = k + f
            with np.errstate(invalid="ignore", divide="ignore"):
                d[RESPONSE] = np.where(n > 0, k / np.where(n > 0, n, 1), np.nan)
            d[TRIALS] = n
            if np.any(k < 0) or np.any(f < 0):
                row = int(np.flatnonzero((k < 0) | (f < 0))[0])
                raise DataError(f"cbind({bound[0]}): negative successes or failures in row "
                                f"{data.index[row]!r} ({k[row]:g}, {f[row]:g})")
        else:
            d[RESPONSE] = _evaluate(lhs, data, "response")
            if weights is None:
                d[TRIALS] = 1.0
            else:
                d[TRIALS] = (data[weights].to_numpy(float) if isinstance(weights, str)
                             else np.asarray(weights, float))
        d[OFFSET] = sum((_evaluate(o, data, "offset") for o in self.offsets), np.zeros(len(data)))
        self.frame = _frame.build(f"{RESPONSE} ~ {rhs}", d, residual=False)
        fd = self.frame.data
        y, trials = self.frame.y, fd[TRIALS].to_numpy(float)
        self.family.check(y, trials, lhs, fd.index)
        st = self.frame.structure
        if st.known_sigma:
            raise JaxhlmError("a GLMM has no residual variance to fix")
        frame0 = dataclasses.replace(self.frame, X=self.frame.X[:, :0])
        self.structure = st
        self.data = GLMMData(pattern(self.frame), pattern(frame0), self.frame.X, fd[OFFSET].to_numpy(float),
                             y, trials, tuple(t.codes.astype(np.int32) for t in self.frame.terms),
                             tuple(t.Z for t in self.frame.terms))

    @functools.cached_property
    def bucketed(self) -> tuple:
        """(structure, data) padded to their bucket (:func:`jaxhlm.padding.bucket_glmm`):
        what :meth:`fit`, ``ranef`` and :meth:`fit_many` compile for, so that GLMMs of
        nearby sizes share one program."""
        kind = bucket_choice.kind("glmm", self.structure, self.family)
        return padding.bucket_glmm(self.structure, self.data, functools.partial(bucket_choice.choose, kind))

    def padded_responses(self, Y: np.ndarray) -> np.ndarray:
        """Responses (B, nobs) with the bucket's padded rows (zero trials) appended as 0."""
        return padding.grow(Y, self.bucketed[1].y.shape[0], axis=1)

    @property
    def nobs(self) -> int:
        return self.frame.nobs

    @property
    def specs(self):
        return self.frame.specs

    @property
    def fixef_names(self) -> list[str]:
        return self.frame.fixef_names

    def offset(self, newdata: pd.DataFrame | None = None) -> np.ndarray:
        """The offset terms' sum on the model's rows or on ``newdata``."""
        if newdata is None:
            return self.frame.data[OFFSET].to_numpy(float)
        return sum((_evaluate(o, newdata, "offset") for o in self.offsets), np.zeros(len(newdata)))

    def sample(self, priors=None, *, num_warmup: int = 1000, num_samples: int = 1000, num_chains: int = 4,
               seed: int = 0, chain_method: str = "vectorized", target_accept_prob: float = 0.8,
               thinning: int = 1):
        """The posterior by NUTS, b sampled explicitly and non-centred
        (:mod:`jaxhlm.bayes.glmm_posterior`); ``priors``: :class:`jaxhlm.bayes.priors.Priors`
        (defaults on the link scale)."""
        from .bayes.glmm_posterior import sample

        return sample(self, priors, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                      seed=seed, chain_method=chain_method, target_accept_prob=target_accept_prob,
                      thinning=thinning)

    def fit_many(self, Y, nagq: int = 1, *, batch_size: int | None = None, max_iter: int = 200,
                 progress: bool = False):
        """Fit B responses on this design in vmapped chunks (:func:`jaxhlm.glmm_batch.fit_many`):
        Y (B, nobs) on the model's response scale (0/1, proportions of the trials, counts)."""
        from .glmm_batch import fit_many

        return fit_many(self, Y, self._nagq(nagq), batch_size=batch_size, max_iter=max_iter,
                        progress=progress)

    def warmup(self, nagq: int = 1, *, nsim: int = 0, responses: int = 0) -> "GLMM":
        """Compile, and keep on disk (:mod:`jaxhlm.precompiled`), the programs that
        ``fit(nagq)``, its ``ranef``, ``fit().bootstrap(nsim)`` and ``fit_many`` of
        ``responses`` responses will run, by running each once on one chunk (the full
        batch's program: :func:`jaxhlm.batch.chunk_size`).  Every GLMM of the same bucket
        (:func:`jaxhlm.padding.bucket_glmm`) then starts warm, in this process and in later
        ones: ``jaxhlm warmup DATA FORMULA --family binomial --nsim N``."""
        from .batch import chunk_size
        from .glmm_batch import CHUNK_CPU

        res = self.fit(nagq)
        res.ranef
        batch = CHUNK_CPU if jax.default_backend() == "cpu" else None
        if nsim:
            res.bootstrap(min(nsim, chunk_size(nsim)))
        if responses:
            self.fit_many(res.simulate(min(responses, chunk_size(responses, batch))), nagq)
        return self

    def objective(self, theta, beta=None, nagq: int = 1) -> float:
        """-2 log L at (theta, beta) by the Laplace approximation (``nagq=1``) or adaptive
        Gauss-Hermite quadrature with ``nagq`` nodes; beta=None: beta inside PIRLS (nAGQ = 0)."""
        inside = beta is None
        beta = jnp.zeros(self.structure.p) if inside else jnp.asarray(beta, float)
        return float(deviance_at(jnp.asarray(theta, float), beta, self.data, self.structure, self.family,
                                inside, self._nagq(nagq, inside)))

    def _nagq(self, nagq, inside: bool = False) -> int:
        if not isinstance(nagq, (int, np.integer)) or nagq < 0:
            raise JaxhlmError(f"nagq must be a whole number >= 0; got {nagq!r}")
        if nagq > 1:
            if inside:
                raise JaxhlmError(f"nagq={nagq}: quadrature needs beta (beta=None is nAGQ = 0's criterion)")
            check_scalar_term(self.structure, nagq)
        return int(nagq)

    def fit(self, nagq: int = 1, *, max_iter: int = 200) -> "GLMMResult":
        """Fit by the Laplace approximation (``nagq=1``, glmer's default), adaptive
        Gauss-Hermite quadrature with ``nagq`` > 1 nodes (one scalar random-effects term,
        :mod:`jaxhlm.quadrature`), or with beta inside PIRLS (``nagq=0``, glmer's ``nAGQ = 0``)."""
        nagq = self._nagq(nagq)
        st, data = self.bucketed
        out = stored(FIT, st, self.family)(data, st, self.family, nagq, int(max_iter))
        res = GLMMResult.from_arrays(self, lazy_jax.to_host(out), nagq)
        if not res.converged:
            warnings.warn(f"GLMM fit of {self.formula}: {tables.status_name(res.status)} "
                          f"({_STATUS_MEANING.get(res.status, 'see res.status')})", stacklevel=2)
        return res


_STATUS_MEANING = {
    Status.MAX_ITERATIONS: "the optimiser's iteration limit was reached; raise max_iter",
    Status.NONFINITE: "the deviance was not finite along the way",
    Status.LINE_SEARCH_FAILED: "no decrease found; the optimum may be imprecise",
    Status.PIRLS_DIVERGED: "the conditional modes (PIRLS) did not converge",
    Status.SEPARATION: "fitted means numerically at 0 or 1 (rates at 0): complete or quasi-complete "
                       "separation; estimates on the link scale diverge",
}

@dataclasses.dataclass
class GLMMResult(InformationCriteria):
    """A fitted GLMM: lme4's accessors (``fixef``, ``vcov``, ``theta``, ``VarCorr``, ``ranef``),
    ``objective`` = -2 log L of the approximation, ``loglik``, ``aic``, ``bic``."""

    formula: str
    family: object
    nagq: int
    objective: float
    nobs: int
    fixef: pd.Series
    vcov: pd.DataFrame
    theta: np.ndarray
    theta_names: list
    status: int
    iterations: int
    pirls_iterations: int
    singular: bool
    _model: object = dataclasses.field(repr=False)
    _b: list = dataclasses.field(repr=False)
    _eta: np.ndarray = dataclasses.field(repr=False)
    _hessian: np.ndarray = dataclasses.field(repr=False)   # of the deviance at the optimum
    _b_var_cache: list | None = dataclasses.field(default=None, repr=False)
    _lams: list | None = dataclasses.field(default=None, repr=False)   # lambda_k per term at theta-hat

    @classmethod
    def from_arrays(cls, model: GLMM, out, nagq: int) -> "GLMMResult":
        opt, m, theta, beta, vcov, code, hessian, lams = out
        names = model.frame.fixef_names
        st = model.structure
        m = m._replace(eta=m.eta[:model.nobs], b=[b[:t.nlevels] for b, t in zip(m.b, st.terms)])  # own rows, levels
        return cls(model.formula, model.family, nagq, float(opt.fun), model.nobs,
                   pd.Series(np.asarray(beta), index=names, name="fixef"),
                   pd.DataFrame(np.asarray(vcov), index=names, columns=names),
                   np.asarray(theta, float), model.frame.theta_names, int(code),
                   int(opt.iterations), int(m.iterations),
                   bool(tables.singular(np.asarray(theta), st.scales())), model,
                   [np.asarray(b) for b in m.b], np.asarray(m.eta), np.asarray(hessian),
                   _lams=[np.asarray(lam) for lam in lams])

    @property
    def _b_var(self) -> list:
        """b's conditional covariances per term (lme4's ``condVar``), computed on first use
        by a program of their own (:func:`jaxhlm.pirls.conditional_variances`)."""
        if self._b_var_cache is None:
            model = self._model
            st, data = model.bucketed
            b = [padding.grow(b, t.nlevels) for b, t in zip(self._b, st.terms)]   # padded levels' modes: 0
            out = stored(CONDITIONAL_VARIANCES, st, model.family)(
                jnp.asarray(self.theta), jnp.asarray(self.fixef.to_numpy()), [jnp.asarray(x) for x in b],
                data, st, model.family)
            self._b_var_cache = [np.asarray(v)[:t.nlevels] for v, t in zip(jax.device_get(out), model.structure.terms)]
        return self._b_var_cache

    @property
    def converged(self) -> bool:
        return self.status == Status.CONVERGED

    @property
    def npar(self) -> int:
        return self.fixef.size + self.theta.size

    @property
    def fixef_se(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self.vcov.to_numpy())), index=self.fixef.index)

    @property
    def varcorr(self) -> pd.DataFrame:
        """``as.data.frame(VarCorr(m))`` (no residual row: the scale is fixed at 1)."""
        lams = self._lams if self._lams is not None else self._model.structure.lambdas(jnp.asarray(self.theta))
        vc = tables.varcorr(self._model.frame.specs, [np.asarray(l) for l in lams], 1.0)
        return vc[vc.grp != "Residual"].reset_index(drop=True)

    @property
    def ranef(self) -> pd.DataFrame:
        """``as.data.frame(ranef(m, condVar = TRUE))``: the conditional modes of b and their
        SDs from the Laplace factor at the mode, Lambda (L L')^{-1} Lambda' (beta held)."""
        return tables.ranef(self._model.frame.terms, self._b, self._b_var)

    def predict(self, newdata: pd.DataFrame | None = None, type: str = "link", re_form=None,
                allow_new_levels: bool = False) -> pd.Series:
        """lme4's ``predict(m, newdata, type, re.form, allow.new.levels)`` for glmer: the
        linear predictor offset + x' beta + the chosen terms' z' b (``type="link"``, lme4's
        default) or the mean g^{-1}(eta) (``type="response"``); ``re_form`` and new levels as
        :meth:`jaxhlm.LMMResult.predict` (:mod:`jaxhlm.prediction`).  Offsets are evaluated
        on ``newdata``."""
        from .prediction import linear_predictor

        if type not in ("link", "response"):
            raise JaxhlmError(f"type={type!r}: use 'link' or 'response'")
        model = self._model
        eta = linear_predictor(model.frame, self.fixef.to_numpy(), self._b, newdata, re_form,
                               allow_new_levels)
        if model.offsets or newdata is None:
            eta = eta + model.offset(newdata)
        if type == "response":
            eta = pd.Series(np.asarray(self.family.link.inverse(jnp.asarray(eta.to_numpy()))), index=eta.index)
        return eta.rename("predict")

    def fitted(self, type: str = "response") -> pd.Series:
        """lme4's ``fitted(m)``: the means mu at the model's rows (``type="link"``: eta)."""
        return self.predict(type=type).rename("fitted")

    def simulate(self, nsim: int, seed: int = 0) -> np.ndarray:
        """``nsim`` responses (nsim, nobs) from the fitted model (lme4's ``simulate``), on the
        model's response scale; replicate i draws from ``fold_in(key(seed), i)``."""
        from .glmm_batch import simulate

        return simulate(self._model, self.fixef.to_numpy(), self.theta, nsim, seed)

    def bootstrap(self, nsim: int, seed: int = 0, *, batch_size: int | None = None,
                  progress: bool = False):
        """Parametric bootstrap (lme4's ``bootMer``): simulate ``nsim`` responses and refit
        each, from this fit's estimates as lme4's ``refit`` starts; a
        :class:`jaxhlm.glmm_batch.GLMMBatchResult`."""
        from .glmm_batch import bootstrap

        return bootstrap(self, nsim, seed, batch_size=batch_size, progress=progress)

    def coef_table(self) -> pd.DataFrame:
        """glmer's z tests: Estimate, Std. Error, z value, Pr(>|z|) (``scipy.special.ndtr(-|z|)``,
        which is ``scipy.stats.norm.sf``, without importing ``scipy.stats``: 0.35 s)."""
        from scipy import special

        z = self.fixef / self.fixef_se
        return pd.DataFrame({"Estimate": self.fixef, "Std. Error": self.fixef_se, "z value": z,
                             "Pr(>|z|)": 2 * special.ndtr(-np.abs(z))})

    def summary(self) -> str:
        how = {0: "nAGQ = 0 (beta inside PIRLS)", 1: "Laplace Approximation"}.get(
            self.nagq, f"Adaptive Gauss-Hermite Quadrature, nAGQ = {self.nagq}")
        vc = self.varcorr
        lines = [f"Generalized linear mixed model fit by maximum likelihood ({how}) (jaxhlm)",
                 f" Family: {self.family.name}  ( {self.family.link.name} )",
                 f"Formula: {self.formula}", "",
                 f"{'AIC':>10} {'BIC':>10} {'logLik':>10} {'-2*logLik':>10}",
                 f"{self.aic:>10.1f} {self.bic:>10.1f} {self.loglik:>10.1f} {self.objective:>10.1f}", "",
                 "Random effects:", vc.to_string(index=False),
                 f"Number of obs: {self.nobs}, groups:  "
                 + ";  ".join(f"{g}, {n}" for g, n in tables.ngroups(self._model.frame.specs).items()), "",
                 "Fixed effects:", self.coef_table().to_string(float_format=lambda v: f"{v:.4g}"), "",
                 f"optimizer: bfgs, {tables.status_name(self.status)} after {self.iterations} iterations"]
        if self.singular:
            lines.append("boundary (singular) fit: see help('isSingular')")
        return "\n".join(lines)
