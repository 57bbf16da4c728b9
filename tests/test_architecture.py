"""The architecture's promises: no import cycle, extension points that work from outside
jaxhlm's files, and compiled programs keyed on shapes only (names are dynamic)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxhlm
from jaxhlm import covariance

PACKAGE = Path(jaxhlm.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Every jaxhlm module's imports of other jaxhlm modules, from its AST: imports at any
    depth (inside functions too), relative ones resolved; ``from pkg import name``
    counts as importing ``pkg.name`` when that is a module, else ``pkg``."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - node.level + 1]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in files else origin
                           for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in files and t != name}
        graph[name] = edges
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, or None (depth-first search, colouring nodes)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_lazy_imports_included():
    graph = _import_graph()
    assert {"jaxhlm.covariance.unstructured", "jaxhlm.families.gaussian", "jaxhlm.bayes.posterior",
            "jaxhlm.tools.bench"} <= set(graph)
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_core_does_not_import_the_tools_or_the_bayesian_layer():
    """Only the user-facing model classes (LMM, GLMM: their ``sample``) reach the Bayesian layer."""
    graph = _import_graph()
    core = [m for m in graph if not m.startswith(("jaxhlm.tools", "jaxhlm.bayes", "jaxhlm.cli"))
            and m not in ("jaxhlm", "jaxhlm.__main__", "jaxhlm.model", "jaxhlm.glmm")]
    for module in core:
        assert not any(t.startswith("jaxhlm.tools") for t in graph[module]), module
        assert not any(t.startswith("jaxhlm.bayes") for t in graph[module]), module


def test_stored_programs_are_keyed_on_every_module_subpackages_included():
    from jaxhlm.store import source_files

    names = {p.relative_to(PACKAGE).as_posix() for p in source_files()}
    assert {"kernel.py", "covariance/unstructured.py", "families/gaussian.py",
            "optimize/loop.py", "bayes/posterior.py"} <= names
    assert names == {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")}


def test_no_module_is_loaded_by_file_path():
    """jaxhlm's modules are imported as a package's; the one load by path is of scipy's two
    Cython modules that jaxlib reads LAPACK's pointers from (:mod:`jaxhlm.store`)."""
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert "sys.path.insert" not in text, path
        if path.name == "store.py":
            from jaxhlm.store import _LAPACK_SOURCES
            assert text.count("spec_from_file_location") == 1
            assert _LAPACK_SOURCES == ("scipy.linalg.cython_blas", "scipy.linalg.cython_lapack")
        else:
            assert "spec_from_file_location" not in text, path


# ---------------------------------------------------------------- a structure from outside
@dataclasses.dataclass(frozen=True)
class FixedCorrelation(covariance.Covariance):
    """A p = 2 term with its own SDs and a correlation fixed at ``rho``: lambda =
    diag(|theta|) chol([[1, rho], [rho, 1]]), so Sigma / sigma^2 = D R D."""

    rho: float = 0.0
    keyword: ClassVar[str] = "fixcor"

    @property
    def nparams(self) -> int:
        return self.p

    def lam(self, par):
        R = jnp.array([[1.0, self.rho], [self.rho, 1.0]], dtype=par.dtype)
        return jnp.abs(par)[:, None] * jnp.linalg.cholesky(R)

    def lower(self):
        return np.zeros(self.p)

    def param_names(self, group, columns):
        return [f"{group}.sd_{c}" for c in columns]


def test_a_structure_defined_outside_jaxhlm_fits_through_the_public_api(sleepstudy):
    free = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", sleepstudy).fit()
    rho = float(free.varcorr["sdcor"][2])
    covariance.register("fixcor", lambda p: FixedCorrelation(p, rho=rho))
    model = jaxhlm.LMM("Reaction ~ Days + fixcor(Days | Subject)", sleepstudy)
    assert model.theta_names == ["Subject.sd_(Intercept)", "Subject.sd_Days"]
    res = model.fit()
    # At the unstructured fit's correlation, the constrained optimum is that fit.
    assert res.converged
    assert res.objective == pytest.approx(free.objective, abs=1e-7)
    np.testing.assert_allclose(res.varcorr["sdcor"], free.varcorr["sdcor"], rtol=1e-5)
    np.testing.assert_allclose(res.fixef, free.fixef, rtol=1e-7)
    # Another correlation is a worse (constrained) fit; batches vmap over it too.
    covariance.register("fixcor", lambda p: FixedCorrelation(p, rho=0.9))
    worse = jaxhlm.LMM("Reaction ~ Days + fixcor(Days | Subject)", sleepstudy).fit()
    assert worse.objective > free.objective + 1.0
    assert worse.varcorr["sdcor"][2] == pytest.approx(0.9, abs=1e-12)
    many = model.fit_many(res.simulate(8, seed=1))
    assert many.converged.all() and many.corr_names == ["corr(Subject:(Intercept),Days)"]
    np.testing.assert_allclose(many.corr[:, 0], rho, atol=1e-12)
    # It defines no prior sites: NUTS says so at the user's edge.
    with pytest.raises(jaxhlm.JaxhlmError, match="FixedCorrelation defines no prior sites for NUTS"):
        model.sample(num_warmup=5, num_samples=5, num_chains=1)


def test_diag_terms_sample_by_nuts_with_their_own_sites(sleepstudy):
    model = jaxhlm.LMM("Reaction ~ Days + diag(Days | Subject)", sleepstudy)
    post = model.sample(num_warmup=150, num_samples=150, num_chains=1, seed=1)
    assert set(post.samples) == {"(Intercept)", "Days", "sigma", "sd(Subject:(Intercept))", "sd(Subject:Days)"}
    fit = model.fit()
    sds = fit.varcorr.set_index("var1")["sdcor"]
    # the posterior medians sit near the REML estimates (18 subjects: wide posteriors)
    assert np.median(post.samples["sd(Subject:(Intercept))"]) == pytest.approx(sds["(Intercept)"], rel=0.35)
    assert np.median(post.samples["sd(Subject:Days)"]) == pytest.approx(sds["Days"], rel=0.35)
    assert np.median(post.samples["Days"]) == pytest.approx(fit.fixef["Days"], rel=0.1)


def test_diag_keyword_is_the_uncorrelated_model(sleepstudy):
    diag = jaxhlm.LMM("Reaction ~ Days + diag(Days | Subject)", sleepstudy).fit()
    split = jaxhlm.LMM("Reaction ~ Days + (Days || Subject)", sleepstudy).fit()
    us = jaxhlm.LMM("Reaction ~ Days + us(Days | Subject)", sleepstudy).fit()
    plain = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", sleepstudy).fit()
    assert diag.objective == pytest.approx(split.objective, abs=1e-8)
    # (each fit stops at a predicted decrease of 1e-12 (1 + |f|): theta to about 1e-5)
    np.testing.assert_allclose(diag.theta, split.theta, rtol=1e-5)
    assert diag.theta_names == split.theta_names == ["Subject.(Intercept)", "Subject.Days"]
    assert list(diag.varcorr["var2"].dropna()) == []          # no correlation reported
    assert us.objective == plain.objective and us.theta_names == plain.theta_names


# ---------------------------------------------------------------- static/dynamic split
def _renamed(df):
    """The same design and response under other column names and level labels."""
    out = df.rename(columns={"Reaction": "rt", "Days": "day", "Subject": "person"})
    out["person"] = "p" + out["person"].astype(str)
    return out


def test_other_names_same_shapes_compile_nothing_new(sleepstudy):
    compiled = []

    def listen(event, duration, **_):
        if event in ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/backend_compile_duration"):
            compiled.append(event)

    first = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", sleepstudy).fit()
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        other = jaxhlm.LMM("rt ~ day + (day | person)", _renamed(sleepstudy)).fit()
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert compiled == []
    assert other.objective == first.objective
    assert other.theta_names == ["person.(Intercept)", "person.day.(Intercept)", "person.day"]
    assert list(other.fixef.index) == ["(Intercept)", "day"]


def test_the_static_part_holds_no_names(sleepstudy):
    a = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", sleepstudy).structure
    b = jaxhlm.LMM("rt ~ day + (day | person)", _renamed(sleepstudy)).structure
    assert a == b and hash(a) == hash(b)
    assert "Subject" not in repr(a) and "Days" not in repr(a)
    weights = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", sleepstudy.assign(v=2.0),
                         residual_variance="v").structure
    assert weights.known_sigma and not a.known_sigma
