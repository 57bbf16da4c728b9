"""lme4's mixed-model formula syntax, split into a fixed part and random-effects terms.

``Reaction ~ Days + (Days | Subject)`` becomes the fixed formula ``Reaction ~ Days``
(handed to formulaic, which builds X as R would) and one :class:`RandomTerm`
``(Days | Subject)``.  The random-term syntax follows lme4 (``findbars``,
``expandDoubleVerts``, ``expandSlash``):

- ``(expr | g)``: correlated effects of the columns of ``expr`` for each level of ``g``;
- ``(expr || g)``: uncorrelated, one term per column of ``expr`` (lme4's
  ``expandDoubleVerts`` turns ``(x || g)`` into ``(1 | g) + (0 + x | g)``);
- ``(expr | a/b)`` = ``(expr | a) + (expr | b:a)``; lme4 names the nested factor ``b:a``;
- ``(expr | a:b)``: the interaction of ``a`` and ``b`` as one grouping factor;
- ``keyword(expr | g)``: a covariance structure other than lme4's unstructured one
  (lme4 2.0 and glmmTMB's syntax: ``diag(x | g)``, ``us(x | g)``; the keywords are
  those of :mod:`jaxhlm.covariance`, which resolves them when the frame is built);
  options follow the grouping factor: ``cs(x | g, hom = TRUE)``.

Parsing is plain string work on the parenthesised groups of the right-hand side;
it never evaluates anything.
"""

from __future__ import annotations

import dataclasses
import functools
import re

from .errors import FormulaError, caret, explain_formulaic, explain_syntax


@dataclasses.dataclass(frozen=True)
class RandomTerm:
    """One random-effects term ``(expr | group)`` after expansion.

    ``expr`` is the model formula (right-hand side only) of the term's covariates,
    ``group`` the grouping factor's name, written with ``:`` for an interaction
    (``factors`` lists its variables), and ``correlated`` is False for a column
    split off a ``||`` term.  ``keyword`` names the covariance structure written before
    the parenthesis (``diag`` in ``diag(x | g)``); None for lme4's plain ``(x | g)``.
    """

    expr: str
    group: str
    factors: tuple[str, ...]
    correlated: bool = True
    keyword: str | None = None
    options: tuple[tuple[str, object], ...] = ()


_OPTION_VALUES = {"TRUE": True, "FALSE": False, "True": True, "False": False, "T": True, "F": False}


def _options(text: str, where: int, formula: str) -> tuple[tuple[str, object], ...]:
    """``name = value, ...`` after a structure's grouping factor: R's logicals and numbers."""
    out = []
    for item in text.split(","):
        name, eq, value = (s.strip() for s in item.partition("="))
        if not eq or not name.isidentifier() or not value:
            raise FormulaError(f"a covariance structure's option is written 'name = value'; got "
                               f"'{item.strip()}':\n{caret(formula, where)}")
        if value in _OPTION_VALUES:
            out.append((name, _OPTION_VALUES[value]))
        else:
            try:
                out.append((name, float(value) if any(c in value for c in ".eE") else int(value)))
            except ValueError:
                raise FormulaError(f"option {name} = {value}: the value must be TRUE, FALSE or a "
                                   f"number:\n{caret(formula, where)}") from None
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class ParsedFormula:
    """A formula split into its fixed part (``response ~ rhs``) and random terms."""

    response: str
    fixed_rhs: str
    random: tuple[RandomTerm, ...]
    text: str

    @property
    def fixed(self) -> str:
        return f"{self.response} ~ {self.fixed_rhs}"


def _top_level_groups(rhs: str, offset: int, text: str) -> list[tuple[int, int]]:
    """Spans (start, end) of the top-level parenthesised groups of ``rhs``."""
    spans, depth, start = [], 0, 0
    for i, ch in enumerate(rhs):
        if ch == "(":
            if depth == 0:
                start = i
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise FormulaError(f"unmatched ')' in formula:\n{caret(text, offset + i)}")
            if depth == 0:
                spans.append((start, i + 1))
    if depth != 0:
        raise FormulaError(f"unclosed '(' in formula:\n{caret(text, offset + start)}")
    return spans


def _split_bar(inner: str) -> tuple[str, str, bool] | None:
    """Split the inside of a group at its top-level ``|`` or ``||``."""
    depth = 0
    for i, ch in enumerate(inner):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "|" and depth == 0:
            double = inner[i + 1 : i + 2] == "|"
            return inner[:i], inner[i + 2 if double else i + 1 :], not double
    return None


def _expand_group(group: str, where: int, text: str) -> list[tuple[str, tuple[str, ...]]]:
    """``a/b/c`` -> [(a), (b:a), (c:b:a)], named as lme4's ``expandSlash`` names them."""
    parts = [p.strip() for p in group.split("/")]
    if any(not p for p in parts):
        raise FormulaError(f"empty grouping factor in random term:\n{caret(text, where)}")
    out, outer = [], []
    for part in parts:
        factors = tuple(f.strip() for f in part.split(":"))
        if any(not f for f in factors):
            raise FormulaError(f"empty factor in interaction '{part}':\n{caret(text, where)}")
        outer = list(factors) + outer
        out.append((":".join(outer), tuple(outer)))
    return out


@functools.lru_cache(maxsize=256)
def parse(text: str) -> ParsedFormula:
    """Parse an lme4 formula.  Raises :class:`FormulaError` showing where it fails.

    Pure and returning a frozen value, so cached: refitting a formula skips the parsers.
    """
    if not isinstance(text, str) or not text.strip():
        raise FormulaError("the formula is empty; write it as 'response ~ terms', e.g. "
                           "'Reaction ~ Days + (Days | Subject)'")
    if text.count("~") != 1:
        where = text.find("~", text.find("~") + 1) if "~" in text else len(text)
        what = "more than one '~'" if "~" in text else "no '~' (write 'response ~ terms')"
        raise FormulaError(f"formula has {what}:\n{caret(text, where)}")
    lhs, rhs = text.split("~")
    response = lhs.strip()
    if not response:
        raise FormulaError(f"formula has no response before '~':\n{caret(text, 0)}")
    offset = len(lhs) + 1
    random: list[RandomTerm] = []
    fixed_pieces, last = [], 0
    for start, end in _top_level_groups(rhs, offset, text):
        bar = _split_bar(rhs[start + 1 : end - 1])
        if bar is None:
            continue
        expr, group, correlated = bar[0].strip(), bar[1].strip(), bar[2]
        where = offset + start
        word = re.search(r"([A-Za-z_][A-Za-z0-9_.]*)\s*$", rhs[last:start])
        keyword = word.group(1) if word else None
        if keyword is not None:
            if not correlated:
                raise FormulaError(f"'{keyword}(... || ...)': a covariance structure takes '|', "
                                   f"not '||':\n{caret(text, where)}")
            start -= len(rhs[last:start]) - word.start(1)
        options = ()
        if "," in group:
            if keyword is None:
                raise FormulaError(f"options after a grouping factor need a covariance structure, "
                                   f"as in cs(x | g, hom = TRUE):\n{caret(text, where)}")
            group, rest = (s.strip() for s in group.split(",", 1))
            options = _options(rest, where, text)
        if not expr:
            raise FormulaError(f"random term has nothing before '|' (use '1' for an "
                               f"intercept):\n{caret(text, where + 1)}")
        if not group:
            raise FormulaError(f"random term has no grouping factor after '|':\n"
                               f"{caret(text, offset + end - 1)}")
        for name, factors in _expand_group(group, where, text):
            random.append(RandomTerm(expr, name, factors, correlated, keyword, options))
        fixed_pieces.append(rhs[last:start])
        last = end
    fixed_pieces.append(rhs[last:])
    if not random:
        raise FormulaError(f"no random effects terms specified in formula '{text}' (add a term "
                           "such as '(1 | group)'; for a linear model without them use a "
                           "least-squares fitter)")
    _check_syntax(response, "1".join(fixed_pieces), text)
    fixed_rhs = _tidy_plus("".join(fixed_pieces))
    if not fixed_rhs:
        fixed_rhs = "1"
    return ParsedFormula(response, fixed_rhs, tuple(random), text)


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def simple_variables(expr: str) -> set[str] | None:
    """The variables of ``[lhs ~] rhs`` when it is only names and ``1``/``0``/``-1`` joined
    by ``+`` (``Reaction ~ Days``, ``~ 0 + x``): what formulaic's ``required_variables``
    gives, without importing formulaic (a fifth of a short process); else None."""
    lhs, _, rhs = expr.rpartition("~")
    tokens = [t.strip() for t in rhs.replace("-1", "+-1").split("+")]
    if rhs.replace("-1", "+-1").strip().startswith("+-1"):   # '-1' first: no empty token before it
        tokens = tokens[1:]
    names = [t for t in tokens if t not in ("1", "0", "-1")]
    response = lhs.strip()
    if not all(_NAME.fullmatch(t) for t in names) or (response and not _NAME.fullmatch(response)):
        return None
    return set(names) | ({response} if response else set())


def _check_syntax(response: str, rhs: str, text: str) -> None:
    """Let formulaic parse the fixed part with each random term replaced by ``1``, so that
    a dangling operator (``y ~ x + (1 | g) +``) is an error, not silently dropped (a
    fixed part of names and ``+`` alone needs no parser: :func:`simple_variables`)."""
    if simple_variables(f"{response} ~ {rhs}") is not None:
        return
    from formulaic import Formula
    from formulaic.errors import FormulaicError

    try:
        Formula(f"{response} ~ {rhs}")
    except FormulaicError as err:
        raise FormulaError(f"cannot parse formula '{text}' (random terms shown as 1): "
                           f"{explain_formulaic(err)}") from None
    except SyntaxError as err:
        raise FormulaError(f"cannot parse formula: {explain_syntax(err, text)}") from None


def _tidy_plus(rhs: str) -> str:
    """Remove the '+' signs left dangling where random terms were cut out.

    Splits on top-level '+' only, so ``I(a + b)`` survives; a '-' term (``- 1``)
    stays attached to its neighbour.
    """
    tokens, depth, current = [], 0, []
    for ch in rhs:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "+" and depth == 0:
            tokens.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    tokens.append("".join(current).strip())
    return " + ".join(t for t in tokens if t)
