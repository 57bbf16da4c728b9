"""The model frame: a formula and a DataFrame become y, X and the random-effects terms.

This is lme4's ``lFormula`` stage, in NumPy, run once per model:

1. parse the formula (:mod:`jaxhlm.formula`) and check that every variable exists;
2. drop rows with missing values in the variables used, with a warning that counts
   them (lme4's default ``na.action = na.omit``);
3. build X with formulaic (R's intercept rules, ``*`` and ``:``, treatment contrasts
   named as formulaic names them, e.g. ``recipe[T.B]``) and drop aliased columns of
   a rank-deficient X with a warning naming them, as lme4 does;
4. build each random-effects term: the grouping factor's codes (grouping variables
   are categorical whatever their dtype) and the per-row covariates Z_k (n x p_k);
5. order the terms as lme4 does (by decreasing number of levels, ties in formula
   order) and run lme4's identifiability checks.

No dense n x q matrix is formed: a term is its codes plus its n x p_k covariates.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import numpy as np
import pandas as pd

from . import covariance as _covariance
from . import formula as _formula
from .covariance import Covariance
from .errors import DataError, FormulaError, explain_formulaic, explain_syntax
from .structure import Structure, TermShape

INTERCEPT = "(Intercept)"


@dataclasses.dataclass(frozen=True)
class TermSpec:
    """What a random-effects term is, without its data.

    ``group``: the grouping factor as lme4 names it (``Subject``, ``cask:batch``);
    ``name``: the name used in ``VarCorr`` (lme4 makes repeated names unique with
    ``.1``, ``.2``: ``Subject``, ``Subject.1`` for ``(Days || Subject)``);
    ``columns``: the covariate names (p_k of them); ``nlevels``: ell_k;
    ``covariance``: its structure (:mod:`jaxhlm.covariance`).  :attr:`shape` is what
    a compiled program sees of it (no names).
    """

    group: str
    name: str
    columns: tuple[str, ...]
    nlevels: int
    covariance: Covariance

    @property
    def p(self) -> int:
        return len(self.columns)

    @property
    def q(self) -> int:
        return self.p * self.nlevels

    @property
    def shape(self) -> TermShape:
        return TermShape(self.covariance, self.nlevels)

    def param_names(self) -> list[str]:
        """lme4's names of the term's part of theta."""
        return self.covariance.param_names(self.group, self.columns)


@dataclasses.dataclass
class Term:
    """A random-effects term with its data: codes (n,) in [0, ell) and covariates Z (n, p);
    ``expr``: the formula of its covariates (for a column of ``(x || g)``, the whole ``x``),
    which builds them on new data (:mod:`jaxhlm.prediction`)."""

    spec: TermSpec
    codes: np.ndarray
    Z: np.ndarray
    levels: list[str]
    expr: str = "1"


@dataclasses.dataclass
class ModelFrame:
    """y (n,), X (n, p) with its column names, and the random terms in lme4's order."""

    formula: _formula.ParsedFormula
    y: np.ndarray
    X: np.ndarray
    fixef_names: list[str]
    terms: list[Term]
    data: pd.DataFrame
    dropped_columns: list[str] = dataclasses.field(default_factory=list)
    n_dropped_rows: int = 0
    weights: np.ndarray | None = None   # prior weights w_i: row i has variance sigma^2 / w_i
    sigma: float | None = None          # the residual SD, when known (not estimated)

    @property
    def nobs(self) -> int:
        return self.y.shape[0]

    @property
    def specs(self) -> tuple[TermSpec, ...]:
        return tuple(t.spec for t in self.terms)

    @property
    def structure(self) -> Structure:
        """The static part of the model's compiled programs (shapes, no names)."""
        return Structure(tuple(s.shape for s in self.specs), self.X.shape[1], self.sigma is not None)

    @property
    def theta_names(self) -> list[str]:
        """lme4's names of theta, term by term."""
        return [name for s in self.specs for name in s.param_names()]


@functools.lru_cache(maxsize=256)
def _parsed(expr: str):
    """formulaic's parse of ``expr`` (pure, so cached: refits skip the parser).  formulaic
    is imported here, not with jaxhlm: it is a fifth of ``import jaxhlm``."""
    from formulaic import Formula

    return Formula(expr)


def _formulaic_error() -> type:
    from formulaic.errors import FormulaicError

    return FormulaicError


def _required(expr: str, where: str, text: str) -> set[str]:
    simple = _formula.simple_variables(expr)
    if simple is not None:
        return simple
    FormulaicError = _formulaic_error()
    try:
        return set(_parsed(expr).required_variables)
    except FormulaicError as err:
        raise FormulaError(f"cannot parse the {where} '{expr}' of formula '{text}': "
                           f"{explain_formulaic(err)}") from None
    except SyntaxError as err:
        raise FormulaError(f"cannot parse the {where} '{expr}' of formula: "
                           f"{explain_syntax(err, text)}") from None


def _check_columns(needed: set[str], data: pd.DataFrame, text: str) -> None:
    missing = sorted(v for v in needed if v not in data.columns)
    if missing:
        names = ", ".join(repr(m) for m in missing)
        raise FormulaError(f"formula '{text}' names {names}, not a column of the data; "
                           f"the columns are: {', '.join(map(str, data.columns))}")


def _matrix(expr: str, data: pd.DataFrame, text: str, what: str):
    FormulaicError = _formulaic_error()
    try:
        return _parsed(expr).get_model_matrix(data, na_action="ignore")
    except FormulaicError as err:
        raise FormulaError(f"cannot build {what} from '{expr}' in formula '{text}': "
                           f"{explain_formulaic(err)}") from None


def _rename_intercept(columns) -> list[str]:
    return [INTERCEPT if c == "Intercept" else str(c) for c in columns]


def _grouping(data: pd.DataFrame, factors: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    """Codes and level labels of a grouping factor (an interaction for several variables).

    Levels are sorted as R sorts a factor's levels (numbers numerically, strings
    lexically); an interaction ``b:a`` has labels ``"b_value:a_value"`` with its
    first variable varying slowest, and only the combinations that occur.
    """
    codes, labels = [], []
    for name in factors:
        cat = pd.Categorical(data[name])
        codes.append(cat.codes.astype(np.int64))
        labels.append([str(c) for c in cat.categories])
    if len(factors) == 1:
        used, inverse = np.unique(codes[0], return_inverse=True)
        return inverse.astype(np.int32), [labels[0][u] for u in used]
    sizes = [max(len(lab), 1) for lab in labels]
    if np.prod(np.asarray(sizes, dtype=float)) < 2.0 ** 62 and all(c.min() >= 0 for c in codes):
        key = codes[0]     # one integer per combination, in the same (lexicographic) order:
        for c, size in zip(codes[1:], sizes[1:]):   # a 1-D unique, not np.unique(axis=0)'s
            key = key * size + c                     # row sort (InstEval's dept:service)
        used, inverse = np.unique(key, return_inverse=True)
        rows = []
        for size in reversed(sizes[1:]):
            used, digit = np.divmod(used, size)
            rows.append(digit)
        rows = np.stack([used] + rows[::-1], axis=1)
    else:
        rows, inverse = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)
    names = [":".join(labels[i][k] for i, k in enumerate(row)) for row in rows]
    return inverse.reshape(-1).astype(np.int32), names


def _drop_aliased(X: np.ndarray, names: list[str], tol: float = 1e-7):
    """Keep the columns of X that are not linear combinations of earlier ones.

    Greedy Gram-Schmidt with relative tolerance ``tol``: this keeps the same columns
    as R's pivoting QR (``qr(X, tol = 1e-7)``) that lme4 uses to drop aliased columns.
    """
    keep, basis = [], []
    for j in range(X.shape[1]):
        v = X[:, j].astype(float)
        norm = np.linalg.norm(v)
        for b in basis:
            v = v - (b @ v) * b
        for b in basis:  # re-orthogonalise once for stability
            v = v - (b @ v) * b
        r = np.linalg.norm(v)
        if norm > 0 and r > tol * norm:
            keep.append(j)
            basis.append(v / r)
    dropped = [names[j] for j in range(X.shape[1]) if j not in keep]
    return X[:, keep], [names[j] for j in keep], dropped


WEIGHTS = "(weights)"


def _weights_column(data: pd.DataFrame, weights, residual_variance):
    """The data with the prior weights as a column (lme4's ``(weights)``), its name and sigma.

    ``weights``: a column name or n values, w_i > 0 (lme4's ``weights =``).
    ``residual_variance``: a column name or n known variances s_i^2 > 0 (a
    meta-analysis); then w_i = 1 / s_i^2 and sigma = 1 is fixed, not estimated.
    """
    if weights is not None and residual_variance is not None:
        raise DataError("give either weights or residual_variance, not both")
    given, what = (weights, "weights") if weights is not None else (residual_variance, "residual_variance")
    if given is None:
        return data, None, None
    if isinstance(given, str):
        if given not in data.columns:
            raise DataError(f"{what} column '{given}' is not a column of the data; "
                            f"columns are: {', '.join(map(str, data.columns))}")
        values, label = data[given], f"{what} column '{given}'"
    else:
        values, label = np.asarray(given), what
        if values.ndim != 1 or values.shape[0] != len(data):
            raise DataError(f"{what} must have one value per row of the data ({len(data)}); "
                            f"got shape {values.shape}")
    if not pd.api.types.is_numeric_dtype(np.asarray(values)) or pd.api.types.is_bool_dtype(np.asarray(values)):
        raise DataError(f"{label} must be numeric")
    values = np.asarray(values, dtype=float)
    bad = np.flatnonzero(~np.isnan(values) & ~(np.isfinite(values) & (values > 0)))
    if bad.size:
        raise DataError(f"{label} must be positive and finite; row {bad[0]} has {float(values[bad[0]])!r}")
    column = values if residual_variance is None else 1.0 / values
    return data.assign(**{WEIGHTS: column}), WEIGHTS, (None if residual_variance is None else 1.0)


def build(text: str, data: pd.DataFrame, weights=None, residual_variance=None,
          placeholder: str | None = None, residual: bool = True) -> ModelFrame:
    """Build the model frame of formula ``text`` on ``data`` (see the module docstring),
    with optional prior weights or known residual variances (:func:`_weights_column`).
    ``placeholder``: the grouping column of a term that stands for no random effects
    (:class:`jaxhlm.covariance.Absent`; a GLS model's).  ``residual=False``: the model has no
    residual variance (a GLMM), so, as lme4's ``glmer``, only ``check.nlev.gtr.1`` applies."""
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame, not {type(data).__name__}")
    parsed = _formula.parse(text)
    needed = _required(parsed.fixed, "fixed part", text)
    for term in parsed.random:
        needed |= _required("~ " + term.expr, "random-effects term", text)
        needed |= set(term.factors)
    _check_columns(needed, data, text)
    if len(data) == 0:
        raise DataError("the data have no rows")
    data, wcol, sigma = _weights_column(data, weights, residual_variance)
    if wcol:
        needed.add(wcol)

    used = [c for c in data.columns if c in needed]
    complete = data[used].notna().all(axis=1).to_numpy()
    n_dropped = int((~complete).sum())
    if n_dropped:
        if n_dropped == len(data):
            raise DataError(f"every row has a missing value in the columns used ({', '.join(used)})")
        bad = [c for c in used if data[c].isna().any()]
        warnings.warn(f"dropped {n_dropped} of {len(data)} rows with missing values in "
                      f"{', '.join(bad)} (as lme4's na.omit does)", stacklevel=3)
    frame = data.loc[complete].reset_index(drop=True)

    response = parsed.response
    if response in frame.columns and not (
        pd.api.types.is_numeric_dtype(frame[response]) and not isinstance(
            frame[response].dtype, pd.CategoricalDtype)):
        raise DataError(f"the response '{response}' is not numeric (dtype "
                        f"{frame[response].dtype}); a linear mixed model needs a numeric response")
    _check_factors(_required(parsed.fixed, "fixed part", text) - {response}, frame)
    y, X, names = _fixed_effects(parsed, frame, text)
    rows = data.index[complete]   # the data's row labels of the rows used
    _check_finite(y, [response], rows, "the response")
    _check_finite(X, names, rows, "the fixed-effects matrix")
    X, fixef_names, dropped = _drop_aliased(X, names)
    if dropped:
        warnings.warn(f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
                      f"column{'s' if len(dropped) > 1 else ''} / coefficient"
                      f"{'s' if len(dropped) > 1 else ''}: {', '.join(dropped)}", stacklevel=3)

    terms = _random_terms(parsed, frame, text)
    if placeholder is not None:
        terms = [dataclasses.replace(t, spec=dataclasses.replace(t.spec, covariance=_covariance.Absent(1)))
                 if t.spec.group == placeholder else t for t in terms]
    for t in terms:
        _check_finite(t.Z, list(t.spec.columns), rows, f"the random-effects term of {t.spec.group}")
    _check_identifiable(terms, y.shape[0], known_sigma=sigma is not None or not residual)
    w = frame[wcol].to_numpy(dtype=float) if wcol else None
    return ModelFrame(parsed, y, X, fixef_names, terms, frame, dropped, n_dropped, w, sigma)


def fixed_terms(frame: ModelFrame) -> dict[str, list[int]]:
    """The fixed part's terms as R labels them (``nitro``, ``Variety``, ``a:b``; no
    intercept), each with the indices of its columns among ``frame.fixef_names`` (aliased
    columns dropped, and terms left with none)."""
    parsed = frame.formula
    simple = _simple_covariates(parsed.fixed_rhs, frame.data, True)
    if simple is not None:
        columns = simple[2]
    else:
        rhs = _matrix(parsed.fixed, frame.data, parsed.text, "the fixed-effects matrix").rhs
        names = _rename_intercept(rhs.columns)
        columns = {str(term): names[cut] for term, cut in rhs.model_spec.term_slices.items()
                   if str(term) != "1"}
    index = {name: k for k, name in enumerate(frame.fixef_names)}
    out = {term: [index[c] for c in cols if c in index] for term, cols in columns.items()}
    return {term: idx for term, idx in out.items() if idx}


def _check_finite(values: np.ndarray, names: list[str], rows: pd.Index, what: str) -> None:
    """No infinite value in a model column (lme4 refuses them; NaN marks a missing value,
    and rows with one were dropped before); the error names the data's row label."""
    values = values.reshape(values.shape[0], -1)
    bad = np.argwhere(~np.isfinite(values))
    if bad.size:
        row, col = bad[0]
        raise DataError(f"{what} has infinite values: '{names[col]}' is {float(values[row, col])} in "
                        f"row {rows[row]!r} of the data; use NaN for a missing value")


def _check_factors(variables: set[str], frame: pd.DataFrame) -> None:
    """A categorical fixed-effect variable with one level gives no column of X (formulaic
    drops it); say so, naming it (R stops there: "contrasts can be applied only to
    factors with 2 or more levels")."""
    for name in sorted(v for v in variables if v in frame.columns):
        col = frame[name]
        numeric = pd.api.types.is_numeric_dtype(col) and not isinstance(col.dtype, pd.CategoricalDtype)
        if not numeric and col.nunique() < 2:
            warnings.warn(f"the categorical variable '{name}' has one level ({col.iloc[0]!r}) in the "
                          "rows used, so it gives no fixed-effect column (R stops here: contrasts "
                          "need 2 or more levels)", stacklevel=4)


def _fixed_effects(parsed: _formula.ParsedFormula, frame: pd.DataFrame, text: str):
    """y, X and X's column names: directly when the response is a numeric column and the
    right-hand side is only numeric or categorical columns and ``1``/``0``/``-1`` joined by
    ``+`` (:func:`_simple_covariates`, the same result as formulaic's), else by formulaic."""
    response = parsed.response
    simple = _simple_covariates(parsed.fixed_rhs, frame, True) if response in frame.columns else None
    if simple is not None:
        X, names, _ = simple
        return frame[response].to_numpy(dtype=float), X, names
    mm = _matrix(parsed.fixed, frame, text, "the fixed-effects matrix")
    if mm.lhs.shape[1] != 1:
        raise DataError(f"the response '{response}' must be one numeric column; it gives "
                        f"{mm.lhs.shape[1]} columns ({', '.join(map(str, mm.lhs.columns))})")
    return (np.asarray(mm.lhs, dtype=float).reshape(-1), np.asarray(mm.rhs, dtype=float),
            _rename_intercept(mm.rhs.columns))


def _simple_covariates(expr: str, frame: pd.DataFrame, categorical: bool = False):
    """Z, its column names and each variable's columns for an expression of only
    ``1``/``0``/``-1`` and columns joined by ``+`` (``Days``, ``0 + Days``, ``1``), built
    directly; None for anything else.  Numeric columns give one column each; with
    ``categorical``, a column of strings (pandas' ``str`` or ``object`` dtype) or a pandas
    Categorical gives its treatment contrasts against the first level, ``g[T.level]``
    (full dummy coding, ``g[level]``, for the first such column when there is no
    intercept), on the levels formulaic finds: a Categorical's categories, used or not,
    else the sorted distinct strings.

    Same columns, order and names as formulaic gives (intercept first), without importing
    it (0.36 s of a process, scipy.sparse included): this is the common case of a random
    term and of a fixed part (``y ~ x + treatment``; ``tests/test_frame.py`` checks the two
    agree).  Prediction on new data passes ``categorical=False``: its levels are the fit's.
    """
    tokens = [t for t in expr.replace(" ", "").replace("-1", "+-1").split("+") if t]
    names = [t for t in tokens if t not in ("1", "0", "-1")]
    if len(set(names)) != len(names) or not all(n in frame.columns for n in names):
        return None
    intercept = not ({"0", "-1"} & set(tokens))
    columns, blocks, terms = [INTERCEPT] if intercept else [], [], {}
    if intercept:
        blocks.append(np.ones((len(frame), 1)))
    full = not intercept
    for name in names:
        col = frame[name]
        if pd.api.types.is_bool_dtype(col):
            return None
        if pd.api.types.is_numeric_dtype(col) and not isinstance(col.dtype, pd.CategoricalDtype):
            terms[name] = [name]
            blocks.append(col.to_numpy(dtype=float)[:, None])
        elif not categorical:
            return None
        else:
            coded = _levels(col)
            if coded is None:
                return None
            codes, levels = coded
            keep = range(0 if full else 1, len(levels))
            terms[name] = [f"{name}[{levels[k]}]" if full else f"{name}[T.{levels[k]}]" for k in keep]
            blocks.append((codes[:, None] == np.array(list(keep))[None, :]).astype(float))
            full = False
        columns += terms[name]
    Z = np.concatenate(blocks, axis=1) if blocks else np.empty((len(frame), 0))
    return Z, columns, terms


def _levels(col: pd.Series):
    """(codes, level labels) of a categorical column as formulaic codes it, or None where
    its rules are not simple (mixed or non-string values)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return col.cat.codes.to_numpy(), [str(c) for c in col.cat.categories]
    if str(col.dtype) not in ("object", "str") or pd.api.types.infer_dtype(col, skipna=False) != "string":
        return None   # (formulaic reads pandas' nullable "string" dtype as values, not levels)
    levels, codes = np.unique(col.to_numpy(dtype=object), return_inverse=True)
    return codes.reshape(-1), [str(v) for v in levels]


def _random_terms(parsed: _formula.ParsedFormula, frame: pd.DataFrame, text: str) -> list[Term]:
    raw = []
    for term in parsed.random:
        codes, levels = _grouping(frame, term.factors)
        simple = _simple_covariates(term.expr, frame, True)
        if simple is not None:
            Z, columns, _ = simple
        else:
            Z = _matrix("~ " + term.expr, frame, text, f"the random-effects term ({term.expr} | {term.group})")
            columns = _rename_intercept(Z.columns)
            Z = np.asarray(Z, dtype=float)
        if Z.shape[1] == 0:
            raise FormulaError(f"random-effects term ({term.expr} | {term.group}) has no columns")
        shown = f"{term.keyword or ''}({term.expr} | {term.group})"
        if term.correlated:
            cov = _covariance.for_term(term.keyword, len(columns), shown, term.options)
            raw.append((term.group, tuple(columns), codes, Z, levels, cov, term.expr))
        else:  # (x || g): one uncorrelated term per column
            raw.extend((term.group, (c,), codes, Z[:, [j]], levels, _covariance.Unstructured(1), term.expr)
                       for j, c in enumerate(columns))
    # lme4 orders terms by decreasing number of levels; R's order() is stable.
    raw.sort(key=lambda t: -len(t[4]))
    seen: dict[str, int] = {}
    terms = []
    for group, columns, codes, Z, levels, cov, expr in raw:
        k = seen.get(group, 0)
        seen[group] = k + 1
        name = group if k == 0 else f"{group}.{k}"
        terms.append(Term(TermSpec(group, name, columns, len(levels), cov), codes, Z, levels, expr))
    return terms


def _check_identifiable(terms: list[Term], n: int, known_sigma: bool = False) -> None:
    """lme4's checks ``check.nlev.gtr.1``, ``check.nobs.vs.nlev`` and ``check.nobs.vs.nRE``.

    With sigma known (known residual variances) one observation per level is
    identifiable (the meta-analysis model), so only the first check applies.
    """
    terms = [t for t in terms if t.spec.covariance.nparams]   # not a placeholder (Absent)
    few = [t.spec.group for t in terms if t.spec.nlevels < 2]
    if few:
        raise DataError(f"grouping factors must have > 1 sampled level (problems: {', '.join(few)})")
    if known_sigma:
        return
    many = [t.spec.group for t in terms if t.spec.nlevels >= n]
    if many:
        raise DataError("number of levels of each grouping factor must be < number of "
                        f"observations (problems: {', '.join(many)}; {n} observations)")
    for t in terms:
        if t.spec.q >= n and not t.spec.covariance.separates_residual:
            expr = " + ".join(t.spec.columns)
            raise DataError(f"number of observations (={n}) <= number of random effects "
                            f"(={t.spec.q}) for term ({expr} | {t.spec.group}); the random-effects "
                            "parameters and the residual variance are probably unidentifiable")
