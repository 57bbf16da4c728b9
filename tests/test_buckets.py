"""Buckets (jaxhlm.padding): models, designs and batches of nearby sizes share one compiled
program; a padded fit equals the unpadded one; a second process loads every program kind
from disk without tracing it, and the store stays under its size bound."""

import io
import json
import os
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxhlm
from jaxhlm import bucket_choice, padding
from jaxhlm.families import GAUSSIAN
from jaxhlm.fitting import trace_count
from jaxhlm.glmm_batch import simulate
from jaxhlm.padding import ladder

F = "Reaction ~ Days + (Days | Subject)"


def _subjects(df, k):
    keep = sorted(df.Subject.astype(str).unique())[:k]
    out = df[df.Subject.astype(str).isin(keep)].copy()
    out["Subject"] = out["Subject"].astype(str)
    return out


def test_the_ladder_has_four_sizes_per_doubling():
    """k 2^s below 64, k 2^s + 8 from there (padding.ladder's docstring): at most 26% more
    (57 -> 72), monotone, each rung its own rung."""
    sizes = [ladder(x) for x in range(5000)]
    assert all(s >= x for x, s in enumerate(sizes))
    assert all(s <= 1.25 * x for x, s in enumerate(sizes) if 8 < x < 57 or x > 72)
    assert all(s <= 1.27 * x for x, s in enumerate(sizes) if x > 8)
    assert all(a <= b for a, b in zip(sizes, sizes[1:]))
    assert all(ladder(s) == s for s in sizes)
    assert [ladder(x) for x in (3, 8, 9, 17, 18, 20, 21, 56, 57, 100, 1000, 1500, 2000, 3000)] == \
        [3, 8, 10, 20, 20, 20, 24, 56, 72, 104, 1032, 1544, 2056, 3080]
    assert len({ladder(x, bits=4) for x in range(1033, 2057)}) == 16


def test_counts_above_a_million_take_the_fine_ladder():
    """Above padding.FINE_FROM the ladder has 16 sizes per doubling (at most 6.25% more),
    stays monotone across that point and each rung is its own rung."""
    from jaxhlm.padding import FINE_FROM

    xs = list(range(FINE_FROM - 70_000, FINE_FROM + 70_000, 7)) + list(range(2_000_000, 4_200_000, 997))
    sizes = [ladder(x) for x in xs]
    assert all(a <= b for a, b in zip(sizes, sizes[1:]))
    assert all(ladder(s) == s for s in sizes)
    assert all(s <= 1.0625 * x + 8 for x, s in zip(xs, sizes) if x > FINE_FROM)
    assert ladder(2_014_778) == 2_031_624 and ladder(round(2_014_778 * 1.1)) == 2_228_232


def _penicillin_subset():
    df = jaxhlm.datasets.load("Penicillin")
    df = df[df.plate.astype(str) != "a"].copy()    # 23 plates: term 1 and the crossed term padded
    df["plate"] = df["plate"].astype(str)
    return df


@pytest.mark.parametrize("formula, data", [
    (F, lambda sleep: _subjects(sleep, 17)),
    ("diameter ~ 1 + (1 | plate) + (1 | sample)", lambda sleep: _penicillin_subset()),
])
def test_a_padded_model_is_the_unpadded_one(sleepstudy, monkeypatch, formula, data):
    """Same objective at any theta (1e-13: the padded sums add exact zeros; only the
    dense factor's blocking may round differently), same fit from lme4's start (1e-10
    relative in the objective; 1e-8 in theta, measured 1.7e-9 on sleepstudy: the optimiser
    takes the same steps, and a last-digit difference in the objective moves the point by
    up to sqrt(eps) along the flat optimum), same conditional modes of the own levels."""
    df = data(sleepstudy)
    model = jaxhlm.LMM(formula, df)
    padded = model.bucketed
    assert padded.structure != model.structure                       # really padded
    objective = jax.jit(jax.vmap(GAUSSIAN.objective, in_axes=(0, None, None, None)), static_argnums=(2, 3))
    thetas = np.random.default_rng(1).uniform(0.1, 2.0, (4, model.structure.ntheta))
    own = objective(thetas, model.blocks, model.structure, True)
    np.testing.assert_allclose(objective(thetas, padded.blocks, padded.structure, True), own, rtol=1e-13)
    start = model.structure.theta_start()
    monkeypatch.setattr(padding, "ENABLED", False)
    plain = jaxhlm.LMM(formula, df).fit(start=start)
    monkeypatch.setattr(padding, "ENABLED", True)
    res = model.fit(start=start)
    assert res.iterations > 3
    assert res.objective == pytest.approx(plain.objective, rel=1e-10)
    np.testing.assert_allclose(res.theta, plain.theta, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(res.fixef, plain.fixef, rtol=1e-8)
    a, b = res.ranef, plain.ranef
    assert a.shape == b.shape
    np.testing.assert_allclose(a["condval"], b["condval"], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(a["condsd"], b["condsd"], rtol=1e-6)


def test_nearby_sizes_and_batch_sizes_share_one_program(sleepstudy, compiled_fits):
    """17 then 18-20 subjects; fit_many of 2,000 after 1,500; bootstrap(10_000) after
    bootstrap(1_000): no new trace, no new XLA compilation (``jax.monitoring``)."""
    compiled = []

    def listen(event, duration, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(event)

    res17 = jaxhlm.LMM(F, _subjects(sleepstudy, 17)).fit()
    Y = res17.simulate(2000, seed=1)
    res17._model.fit_many(Y[:1500])
    res17.bootstrap(1000, seed=2)
    before = trace_count()
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        for k in (18, 19, 20):
            assert jaxhlm.LMM(F, _subjects(sleepstudy, k)).fit().converged
        many = res17._model.fit_many(Y)
        boot = res17.bootstrap(10_000, seed=3)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert trace_count() == before and compiled == []
    assert many.converged.all() and boot.converged.mean() > 0.99


def test_a_bootstrap_of_a_nearby_size_shares_the_simulator_through_headroom(sleepstudy, compiled_fits):
    """13 then 14 subjects: 130 and 140 rows have different rungs (136, 168), but the
    simulator's rows take headroom and reach (jaxhlm.bucket_choice) as the fit's levels
    do, so the second bootstrap compiles nothing."""
    assert ladder(130) != ladder(140)
    jaxhlm.LMM(F, _subjects(sleepstudy, 13)).fit().bootstrap(64, seed=1)
    res = jaxhlm.LMM(F, _subjects(sleepstudy, 14)).fit()
    before = trace_count(), jaxhlm.batch.simulate_trace_count()
    assert res.bootstrap(64, seed=2).converged.mean() > 0.95
    assert (trace_count(), jaxhlm.batch.simulate_trace_count()) == before


def _glmm_design(subjects, items, seen, seed=5):
    """A crossed binary and count design: ``subjects`` each seeing ``seen`` of ``items``."""
    rng = np.random.default_rng(seed)
    s = np.repeat(np.arange(subjects), seen)
    i = np.concatenate([rng.choice(items, seen, replace=False) for _ in range(subjects)])
    x = rng.normal(size=s.size)
    eta = 0.3 + 0.5 * x + 0.8 * rng.normal(size=subjects)[s] + 0.5 * rng.normal(size=items)[i]
    return pd.DataFrame({"y": rng.binomial(1, 1 / (1 + np.exp(-eta))), "c": rng.poisson(np.exp(eta)),
                         "n": 3, "k": rng.binomial(3, 1 / (1 + np.exp(-eta))), "x": x,
                         "s": s.astype(str), "i": i.astype(str)})


@pytest.mark.parametrize("formula, family, nagq, design, batch", [
    ("y ~ x + (1 | s) + (1 | i)", "binomial", 1, (37, 13, 9), True),      # rows, levels, dense rest
    ("y ~ x + (1 | s) + (1 | i)", "binomial", 1, (61, 80, 5), False),     # pairs padded too
    ("cbind(k, n - k) ~ x + (1 | s)", "binomial", 7, (37, 13, 9), False),  # adaptive quadrature
    ("c ~ x + (x | s) + (1 | i)", "poisson", 0, (37, 13, 9), False),      # a slope, nAGQ = 0
], ids=["binary", "binary-pairs", "agq", "poisson-slope-nagq0"])
def test_a_padded_glmm_is_the_unpadded_one(monkeypatch, formula, family, nagq, design, batch):
    """A GLMM padded to its bucket (rows with zero trials, levels without rows, entries and
    pairs of zeros) has the unpadded fit's optimum, estimates, modes and conditional
    variances, and its batched fits the unpadded batch's."""
    df = _glmm_design(*design)
    out, Y = [], None
    for on in (False, True):
        monkeypatch.setattr(padding, "ENABLED", on)
        model = jaxhlm.GLMM(formula, df, family=family)
        res = model.fit(nagq=nagq)
        Y = res.simulate(3, seed=1) if Y is None else Y
        out.append((model, res, model.fit_many(Y, nagq) if batch else None))
    (m0, a, many0), (m1, b, many1) = out
    st0, d0 = m0.bucketed
    st1, d1 = m1.bucketed
    assert d0 is m0.data and d1.y.shape[0] > d0.y.shape[0]
    assert [t.nlevels for t in st1.terms] > [t.nlevels for t in st0.terms]
    if design[1] == 80:
        assert d1.pattern.pair_a.shape[0] > d0.pattern.pair_a.shape[0] > 0
    assert a.status == b.status == 0
    assert b.objective == pytest.approx(a.objective, rel=1e-12, abs=1e-10)
    for x, y in [(a.theta, b.theta), (a.fixef, b.fixef), (a.vcov, b.vcov), (a._eta, b._eta),
                 (a.ranef.condval, b.ranef.condval), (a.ranef.condsd, b.ranef.condsd)]:
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-9, atol=1e-10)
    if nagq > 1:  # a padded level's quadrature gives log 1 = 0 exactly, not a rounding of it
        from jaxhlm.quadrature import group_loglik

        log_l, _ = group_loglik(jnp.asarray(b.theta), jnp.asarray(b.fixef.to_numpy()), d1, st1, m1.family, nagq)
        assert np.all(np.asarray(log_l)[st0.terms[0].nlevels:] == 0)
    if many0 is not None:
        np.testing.assert_allclose(many1.objective, many0.objective, rtol=1e-12)
        np.testing.assert_allclose(many1.theta, many0.theta, atol=1e-9)
    # The simulator draws the own rows' values whatever the padding, up to the last bit of
    # mu (XLA may fuse x beta_1 + beta_0 into a multiply-add in its vectorised loop and not in
    # its remainder, which moves with the row count): a 0/1 draw u < mu is then the same
    # (u within an ulp of mu: probability ~1e-16); Poisson's rejection sampler for means
    # above 10 redraws from another point for some (0.12% of this design's counts).
    beta, theta = a.fixef.to_numpy(), a.theta
    differ = np.mean(simulate(m1, beta, theta, 20, 4) != simulate(m0, beta, theta, 20, 4))
    assert differ == 0 if formula.startswith("y ~") else differ < 0.01


def test_padded_rows_are_neutral_for_every_link():
    """Padded rows copy row 0 with zero trials, so their mu stays inside the family's range
    whatever the link (eta = 0 would be Poisson's identity-link bound, binomial's log-link
    mu = 1) and the Gaussian family's normalizer log(sigma^2 / w) is 0 there, not inf: the
    padded fit is the unpadded one.  (Both fits end at one shared tight optimum, 1e-4
    below glmer's -2 log L for these data.)"""
    from jaxhlm.families import Gaussian

    rng = np.random.default_rng(3)
    s = np.repeat(np.arange(37), 9)
    x, b = rng.uniform(size=s.size), rng.normal(size=37)[s]
    df = pd.DataFrame({"s": s.astype(str), "x": x, "n": 3, "c": rng.poisson(10 + 4 * x + 2 * b),
                       "k": rng.binomial(3, 0.15 * np.exp(0.5 * x + 0.3 * b))})
    sleep = _subjects(jaxhlm.datasets.load("sleepstudy"), 17)
    for formula, data, family, link in [("c ~ x + (1 | s)", df, "poisson", "identity"),
                                        ("cbind(k, n - k) ~ x + (1 | s)", df, "binomial", "log"),
                                        ("Reaction ~ Days + (Days | Subject)", sleep, Gaussian(sigma=25.6), None)]:
        fits = []
        for on in (False, True):
            with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
                mp.setattr(padding, "ENABLED", on)
                warnings.simplefilter("ignore")  # line_search_failed at the tight optimum, alike
                model = jaxhlm.GLMM(formula, data, family=family, link=link)
                fits.append((model.bucketed[1].y.shape[0], model.fit()))
        (n0, a), (n1, b) = fits
        assert n1 > n0 and a.status == b.status and a.status in (0, 3) and np.isfinite(b.objective)
        assert b.objective == pytest.approx(a.objective, rel=1e-12)
        for x0, x1 in [(a.theta, b.theta), (a.fixef, b.fixef), (a.ranef.condval, b.ranef.condval)]:
            np.testing.assert_allclose(np.asarray(x1), np.asarray(x0), rtol=1e-9, atol=1e-10)


def test_nearby_glmms_share_their_programs():
    """A GLMM of 39 subjects after one of 37 (the same bucket): its fit, conditional
    variances, simulator and batched fits are traced by no program of their own."""
    traced = []

    def listen(event, duration, fun_name="", **_):
        if event.endswith("jaxpr_trace_duration"):
            traced.append(fun_name)

    formula = "y ~ x + (1 | s) + (1 | i)"
    first = jaxhlm.GLMM(formula, _glmm_design(37, 13, 9), family="binomial")
    res = first.fit()
    res.ranef
    first.fit_many(res.simulate(40, seed=1))
    second = jaxhlm.GLMM(formula, _glmm_design(39, 13, 9, seed=6), family="binomial")
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        res = second.fit()
        res.ranef
        many = second.fit_many(res.simulate(40, seed=2))
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert second.bucketed[1].y.shape == first.bucketed[1].y.shape
    assert not [f for f in traced if f.endswith(("_program", "conditional_variances")) or f.startswith("glmm_")], traced
    assert res.converged and many.converged.all()


SCRIPT = """
import json, sys, jaxhlm
df = jaxhlm.datasets.load("sleepstudy")
keep = sorted(df.Subject.astype(str).unique())[:int(sys.argv[1])]
df = df[df.Subject.astype(str).isin(keep)]
res = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", df).fit()
many = res._model.fit_many(res.simulate(128, seed=1))     # chunks of 128, as the bootstrap's
boot = res.bootstrap(300, seed=2)
print(json.dumps({"traces": jaxhlm.fitting.trace_count(), "simulate": jaxhlm.batch.simulate_trace_count(),
                  "objective": res.objective, "boot": float(boot.objective.mean()),
                  "many": float(many.objective.mean()), "scipy.linalg": "scipy.linalg" in sys.modules}))
import scipy.linalg.cython_lapack                               # as if jaxhlm had never loaded it
assert "dpotrf" in scipy.linalg.cython_lapack.__pyx_capi__
"""


def _run(cache, subjects, extra=""):
    env = dict(os.environ, JAXHLM_COMPILATION_CACHE=str(cache), JAXHLM_HOST_FIT="0",   # the compiled fit's programs
               **({"JAXHLM_CACHE_MAX_MB": extra} if extra else {}))
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(subjects)], capture_output=True, text=True,
                         timeout=400, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_second_process_with_other_data_of_the_bucket_traces_nothing(tmp_path):
    """Fit, simulate and the batched fits (two chunk programs: ``fit_many``'s, whose fits
    probe their starting Hessians, and the bootstrap's, whose refits start from the fit's)
    are stored by the first process (18 subjects) and loaded by the second (17 subjects,
    same bucket): nothing traced."""
    first = _run(tmp_path, 18)
    assert first["traces"] >= 2 and first["simulate"] == 1
    names = sorted(p.name.split("-")[0] for p in (tmp_path / "jaxhlm-executables").glob("*.pickle"))
    assert names == ["fit_blocks", "fit_chunk", "fit_chunk", "simulate"]
    second = _run(tmp_path, 17)
    assert second["traces"] == 0 and second["simulate"] == 0
    assert not second["scipy.linalg"]        # LAPACK's kernels loaded without scipy.linalg's package
    again = _run(tmp_path, 18)
    assert again == {**first, "traces": 0, "simulate": 0, "scipy.linalg": False}          # bit for bit


GLMM_SCRIPT = """
import json, jaxhlm, jax
traced = []
jax.monitoring.register_event_duration_secs_listener(   # jaxhlm's programs (not jax.random.key's eager ops)
    lambda event, duration, fun_name="", **_: traced.append(fun_name)
    if event.endswith("jaxpr_trace_duration") and fun_name.startswith("glmm_") else None)
d = jaxhlm.datasets.load("cbpp")
res = jaxhlm.GLMM("cbind(incidence, size - incidence) ~ period + (1 | herd)", d, family="binomial").fit()
ranef = res.ranef
boot = res.bootstrap(64, seed=1)
traced_nuts = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, fun_name="", **_: traced_nuts.append(fun_name)
    if event.endswith("jaxpr_trace_duration") and fun_name.startswith("nuts_") else None)
post = jaxhlm.GLMM("cbind(incidence, size - incidence) ~ period + (1 | herd)", d,
                   family="binomial").sample(num_warmup=30, num_samples=10, num_chains=1, seed=1)
print(json.dumps({"traces": len(traced) + len(traced_nuts), "objective": res.objective,
                  "sd": float(ranef.condsd.sum()), "boot": float(boot.objective.mean()),
                  "nuts": post.samples["(Intercept)"].tolist()}))
"""


def test_a_second_process_loads_every_glmm_program(tmp_path):
    """A GLMM's fit, its conditional variances (``ranef``), the simulator, the refits'
    chunk program and NUTS chains are stored by the first process and loaded by the second:
    none of them traced, the same numbers bit for bit."""
    env = dict(os.environ, JAXHLM_COMPILATION_CACHE=str(tmp_path))
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", GLMM_SCRIPT], capture_output=True, text=True,
                             timeout=400, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    names = sorted(p.name.split("-")[0] for p in (tmp_path / "jaxhlm-executables").glob("*.pickle"))
    assert names == ["glmm_condvar", "glmm_fit", "glmm_fit_chunk", "glmm_simulate", "nuts_chains"]
    assert runs[0]["traces"] > 0 and runs[1] == {**runs[0], "traces": 0}


NUTS = """
import json, sys, jax, jaxhlm
traced = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, fun_name="", **_: traced.append(fun_name)
    if event.endswith("jaxpr_trace_duration") and fun_name.startswith("nuts_") else None)
df = jaxhlm.datasets.load("sleepstudy")
keep = sorted(df.Subject.astype(str).unique())[:int(sys.argv[1])]
post = jaxhlm.LMM("Reaction ~ Days + (1 | Subject)", df[df.Subject.astype(str).isin(keep)]).sample(
    num_warmup=50, num_samples=20, num_chains=1, seed=1)
print(json.dumps({"traces": len(traced), "days": post.samples["Days"].tolist()}))
"""


def test_a_second_process_loads_the_nuts_chains_of_its_bucket(tmp_path):
    """NUTS chains (NumPyro's kernel, warm-up and sampling: about 7 s to compile) are stored
    with their priors' parameters and the starting metric as arguments, on the bucket's
    padded blocks: a second process with 17 subjects after 18 loads them untraced, and the
    same data set gives the same draws bit for bit."""
    env = dict(os.environ, JAXHLM_COMPILATION_CACHE=str(tmp_path))

    def run(subjects):
        out = subprocess.run([sys.executable, "-c", NUTS, str(subjects)], capture_output=True, text=True,
                             timeout=400, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    first = run(18)
    assert first["traces"] == 1
    other, again = run(17), run(18)
    assert other["traces"] == 0 and again == {**first, "traces": 0}
    assert np.ptp(first["days"]) > 0 and first["days"] != other["days"]


def test_priors_as_arrays_have_one_structure_in_every_process(sleepstudy):
    """NumPyro's own flattening orders a distribution's fields by a set (another order in
    another process); the priors' :meth:`arrays` form, which keys stored chains, does not.
    It rebuilds each distribution exactly, and a distribution it cannot rebuild (a user's
    class) makes the chains unstored."""
    import numpyro.distributions as dist

    from jaxhlm.bayes.priors import Parameters

    code = ("import jax, jaxhlm; m = jaxhlm.LMM('Reaction ~ Days + (Days | Subject)', "
            "jaxhlm.datasets.load('sleepstudy')); print(jax.tree.structure(jaxhlm.Priors().resolve(m).arrays()))")
    trees = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=200,
                            env=dict(os.environ, PYTHONHASHSEED=str(seed))).stdout for seed in (1, 2, 3)}
    assert len(trees) == 1 and "Parameters" in trees.pop()
    model = jaxhlm.LMM(F, sleepstudy)
    resolved = jaxhlm.Priors(sigma=dist.StudentT(3.0, 0.0, 10.0)).resolve(model)
    rebuilt = resolved.arrays().distributions()
    assert type(rebuilt.sigma) is dist.StudentT and float(rebuilt.sigma.df) == 3.0
    assert float(rebuilt.fixef[1].scale) == float(resolved.fixef[1].scale)

    class Mine(dist.Normal):
        pass

    assert jaxhlm.Priors(sigma=Mine(0.0, 1.0)).resolve(model).arrays() is None
    with pytest.raises(ValueError):
        Parameters.of(dist.Normal(0.0, 1.0).expand([2]))


LARGE = """
import json, sys, numpy as np, pandas as pd, jaxhlm
subjects, items = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(subjects)
subj = np.repeat(np.arange(subjects), 100)
item = np.concatenate([rng.choice(items, 100, replace=False) for _ in range(subjects)])
x = rng.normal(size=subj.size)
y = x + rng.normal(size=subjects)[subj] + rng.normal(size=items)[item] + rng.normal(size=subj.size)
df = pd.DataFrame({"y": y, "x": x, "subj": subj.astype(str), "item": item.astype(str)})
model = jaxhlm.LMM("y ~ x + (1 | subj) + (1 | item)", df)
res = model.fit()
print(json.dumps({"traces": jaxhlm.fitting.trace_count(), "m": model.structure.m,
                  "pairs": int(model.blocks.pair_out.shape[0]), "status": res.status_name}))
"""


def _run_large(cache, subjects, items):
    env = dict(os.environ, JAXHLM_COMPILATION_CACHE=str(cache), JAXHLM_HOST_FIT="0")   # the compiled fit's program
    out = subprocess.run([sys.executable, "-c", LARGE, str(subjects), str(items)],
                         capture_output=True, text=True, timeout=400, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_large_fit_is_stored_too(tmp_path):
    """A fit with a dense block above BFGS_ABOVE (its Schur complement formed densely, its
    inverse by halves: no host callback) is stored by the first process and loaded by a
    second one with a data set of the same bucket (2.5% fewer subjects, 5% fewer items)."""
    first = _run_large(tmp_path, 240, 220)
    assert first["m"] > 200 and first["pairs"] == 0 and first["traces"] >= 1
    assert first["status"] == "converged"
    names = {p.name.split("-")[0] for p in (tmp_path / "jaxhlm-executables").glob("*.pickle")}
    assert "fit_blocks" in names
    second = _run_large(tmp_path, 234, 209)
    assert second["traces"] == 0 and second["status"] == "converged"


def test_buckets_within_headroom_are_shared_in_either_order(monkeypatch):
    """bucket_choice: counts within a factor 1 + HEADROOM of each other get one bucket
    whichever comes first (its module docstring's argument, checked for every count to
    400), padded by at most 53%; a bucket beyond reach is not taken; fine counts stay on
    their rung; padding off keeps counts."""
    monkeypatch.setattr(bucket_choice.precompiled, "_directory", lambda: None)
    grid = [(x, y) for x in range(9, 400) for y in range(x, int(x * (1 + bucket_choice.HEADROOM)) + 1)]
    for order in (0, 1):
        for x, y in grid:
            monkeypatch.setattr(bucket_choice, "_MEMORY", {})
            first, second = ((x, y), (y, x))[order]
            a = bucket_choice.choose("k", (first, 3 * first), (False, False))
            b = bucket_choice.choose("k", (second, 3 * second), (False, False))
            assert a == b, (first, second)
            assert all(ladder(c) <= s <= 1.54 * c for c, s in zip((second, 3 * second), b))
    monkeypatch.setattr(bucket_choice, "_MEMORY", {})
    assert bucket_choice.choose("k", (100,), (False,)) == (ladder(110),)
    assert bucket_choice.choose("k", (60,), (False,)) == (ladder(66),)         # 120 is beyond 60's reach
    assert bucket_choice.choose("k", (1000, 5), (True, False)) == (ladder(1000, 4), 5)
    monkeypatch.setattr(padding, "ENABLED", False)
    assert bucket_choice.choose("k", (1000, 21), (True, False)) == (1000, 21)


def test_a_data_set_keeps_its_bucket_and_a_bad_record_is_ignored(monkeypatch, tmp_path):
    """The same counts take the same bucket whatever was recorded since (a smaller bucket
    within reach does not displace it); buckets leaving headroom are preferred; a record
    file that does not parse (not even as text) only loses its records."""
    monkeypatch.setattr(bucket_choice.precompiled, "_directory", lambda: tmp_path)
    monkeypatch.setattr(bucket_choice, "_MEMORY", {})
    assert bucket_choice.choose("k", (20,), (False,)) == (24,)
    assert bucket_choice.choose("k", (16,), (False,)) == (20,)
    assert bucket_choice.choose("k", (20,), (False,)) == (24,)        # sticky, though 20 is less padded
    monkeypatch.setattr(bucket_choice, "_MEMORY", {})                  # a new process: the file
    assert bucket_choice.choose("k", (20,), (False,)) == (24,)
    assert bucket_choice.choose("k", (19,), (False,)) == (24,)        # leaves 19 its headroom (21 -> 24)
    (record,) = tmp_path.glob("*.buckets")
    record.write_bytes(b"\xff\xfe 12 | x\n24 |\n")
    monkeypatch.setattr(bucket_choice, "_MEMORY", {})
    assert bucket_choice.choose("k", (20,), (False,)) == (24,)
    assert bucket_choice.choose("k", (30,), (False,)) == (ladder(33),)


@pytest.mark.parametrize("first, second", [((200, 228), (210, 240)), ((210, 240), (200, 228))],
                         ids=["smaller-first", "larger-first"])
def test_a_data_set_5_percent_larger_or_smaller_loads_the_first_ones_program(tmp_path, first, second):
    """228 and 240 items have different rungs (232, 264); the first process's bucket
    leaves headroom, and the second process reaches it (jaxhlm.bucket_choice): nothing
    traced, in either order."""
    assert ladder(228) != ladder(240)
    assert _run_large(tmp_path, *first)["traces"] >= 1
    again = _run_large(tmp_path, *second)
    assert again["traces"] == 0 and again["status"] == "converged"


def test_the_store_stays_under_its_bound(tmp_path):
    """With a bound of 1 MB, each new program evicts the least recently used ones."""
    _run(tmp_path, 18, extra="1")
    store = tmp_path / "jaxhlm-executables"
    assert sum(p.stat().st_size for p in store.iterdir()) <= 1 << 20


def test_warmup_compiles_what_the_run_needs(sleepstudy, tmp_path):
    """``jaxhlm warmup DATA FORMULA --nsim N`` and ``jaxhlm warmup CONFIG.toml``: the real run
    after them traces nothing."""
    import dataclasses

    from jaxhlm import cli
    from jaxhlm.batch import simulate_trace_count
    from jaxhlm.tools import study

    assert cli.main(["warmup", "sleepstudy", F, "--nsim", "300", "--responses", "700"]) == 0
    before = trace_count(), simulate_trace_count()
    res = jaxhlm.LMM(F, sleepstudy).fit()
    res.bootstrap(1000, seed=4)
    res._model.fit_many(res.simulate(500, seed=5))
    assert (trace_count(), simulate_trace_count()) == before

    s = study.load_study("configs/study/closed-form-wald.toml")
    s = dataclasses.replace(s, nsim=300, grid=dataclasses.replace(s.grid, groups=(20, 30)))
    study.warmup(s)
    before = trace_count(), simulate_trace_count()
    study.run(s, tmp_path, plots=False, log=io.StringIO())
    assert (trace_count(), simulate_trace_count()) == before


def test_glmm_warmup_compiles_what_a_model_of_its_bucket_runs(tmp_path):
    """``jaxhlm warmup DATA FORMULA --family binomial --nsim N --responses B`` on 37 subjects:
    a GLMM of 39 then fits, gives ``ranef``, bootstraps and fits a batch without tracing
    any program of its own."""
    from jaxhlm import cli

    formula = "y ~ x + (1 | s) + (1 | i)"
    data = tmp_path / "design.csv"
    _glmm_design(37, 13, 9).to_csv(data, index=False)
    assert cli.main(["warmup", str(data), formula, "--family", "binomial", "--nsim", "300",
                     "--responses", "700"]) == 0
    traced = []

    def listen(event, duration, fun_name="", **_):
        if event.endswith("jaxpr_trace_duration"):
            traced.append(fun_name)

    model = jaxhlm.GLMM(formula, _glmm_design(39, 13, 9, seed=7), family="binomial")
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        res = model.fit()
        res.ranef
        boot = res.bootstrap(1000, seed=4)
        many = model.fit_many(res.simulate(500, seed=5))
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert not [f for f in traced if f.endswith(("_program", "conditional_variances")) or f.startswith("glmm_")], traced
    assert boot.converged.mean() > 0.95 and many.converged.mean() > 0.95


def test_entries_of_an_unbounded_cache_get_access_times(tmp_path):
    """JAX's bounded cache reads an access time per entry; entries an older jaxhlm wrote
    without one are dated, so that later writes do not fail."""
    from jaxhlm._config import _date_legacy_entries

    (tmp_path / "jit_old-123-cache").write_bytes(b"x")
    _date_legacy_entries(tmp_path)
    stamp = (tmp_path / "jit_old-123-atime").read_bytes()
    assert int.from_bytes(stamp, "little") == (tmp_path / "jit_old-123-cache").stat().st_mtime_ns


def test_warmup_with_inference_prepares_the_tests_and_profile_of_the_bucket(sleepstudy):
    """``LMM.warmup(inference=True)`` runs the Satterthwaite, Kenward-Roger and profile
    programs once; a model of the same bucket (a subject fewer) then reuses every one
    of them: no program is added to their stores."""
    from jaxhlm.inference import kenward_roger, profile, satterthwaite

    keep = sorted(sleepstudy.Subject.astype(str).unique())
    jaxhlm.LMM(F, sleepstudy).warmup(inference=True)
    programs = (satterthwaite._PARTS, kenward_roger._ADJUSTED, profile._VARIANCE, profile._FIXED)
    before = [len(p._memory) for p in programs]
    res = jaxhlm.LMM(F, sleepstudy[sleepstudy.Subject.astype(str).isin(keep[1:])]).fit()
    res.coef_table("satterthwaite"), res.coef_table("kenward-roger"), res.confint("profile")
    assert [len(p._memory) for p in programs] == before


@pytest.mark.parametrize("formula,name", [("Reaction ~ Days + (Days | Subject)", "sleepstudy"),
                                          ("diameter ~ 1 + (1 | plate) + (1 | sample)", "Penicillin")])
def test_simulated_responses_do_not_depend_on_the_padding(formula, name, monkeypatch):
    """The simulator draws on the bucket's padded rows and levels; each draw depends on the
    key and its own index alone (batch._simulate_one), so the responses equal those drawn
    without padding (to rounding: the two programs differ in shape)."""
    res = jaxhlm.LMM(formula, jaxhlm.datasets.load(name)).fit()
    model = res._model
    assert (padding.count(model.nobs) != model.nobs
            or padding.sizes(model.structure, 0, 0)[0] != model.structure)          # really padded
    padded = res.simulate(5, seed=4)
    monkeypatch.setattr(padding, "ENABLED", False)
    np.testing.assert_allclose(res.simulate(5, seed=4), padded, rtol=1e-13)


RESIDUAL = {
    "ar1": dict(correlation=jaxhlm.AR1(group="Subject", time="Days")),
    "cs": dict(correlation=jaxhlm.CompoundSymmetry(group="Subject")),
    "ar1-varident": dict(correlation=jaxhlm.AR1(group="Subject"), variance=jaxhlm.VarIdent("half")),
}


@pytest.mark.parametrize("kind", list(RESIDUAL))
def test_a_padded_residual_model_is_its_own_rows(sleepstudy, monkeypatch, kind):
    """A model with a residual structure is padded through its class sets
    (``residual.whiten.bucket``): its criterion at any theta equals that of the whitened
    rows themselves (1e-10: the same sums, combined per class), and the simulator's
    padded rows leave the model's own draws as they are (1e-13)."""
    df = _subjects(sleepstudy, 17).assign(half=lambda d: np.where(d.Days < 5, "early", "late"))
    model = jaxhlm.LMM("Reaction ~ Days + (1 | Subject)", df, **RESIDUAL[kind])
    padded = model.bucketed
    assert padded.structure.terms[0].nlevels == 20 and padded.blocks.y is None   # padded, rows dropped
    objective = jax.jit(jax.vmap(GAUSSIAN.objective, in_axes=(0, None, None, None)), static_argnums=(2, 3))
    thetas = np.random.default_rng(2).uniform(0.1, 1.5, (4, model.structure.ntheta))
    rows = model.blocks._replace(sets=None)
    for reml in (True, False):
        np.testing.assert_allclose(objective(thetas, padded.blocks, padded.structure, reml),
                                   objective(thetas, rows, model.structure, reml), rtol=1e-10)
    theta = np.full(model.structure.ntheta, 0.5)
    draw = lambda: jaxhlm.batch.simulate(model, [250.0, 10.0], theta, 25.0, 3, seed=4)   # noqa: E731
    drawn = draw()
    monkeypatch.setattr(padding, "ENABLED", False)
    np.testing.assert_allclose(draw(), drawn, rtol=1e-13)


def test_residual_models_of_nearby_sizes_share_their_programs(sleepstudy):
    """With AR(1) residuals, 18 and 19 subjects after 17: the fit, the simulator and the
    bootstrap's refits trace and compile nothing new (``jax.monitoring``)."""
    from jaxhlm.batch import simulate_trace_count

    compiled = []

    def listen(event, duration, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(event)

    ar1 = RESIDUAL["ar1"]
    jaxhlm.LMM("Reaction ~ Days + (1 | Subject)", _subjects(sleepstudy, 17), **ar1).fit().bootstrap(100, seed=1)
    before = trace_count(), simulate_trace_count()
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        for k in (18, 19):
            res = jaxhlm.LMM("Reaction ~ Days + (1 | Subject)", _subjects(sleepstudy, k), **ar1).fit()
            boot = res.bootstrap(100, seed=2)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert (trace_count(), simulate_trace_count()) == before and compiled == []
    assert res.converged and boot.converged.mean() > 0.95


def test_residual_models_share_across_a_rung_through_headroom(sleepstudy):
    """With AR(1) residuals, 17 subjects after 15: their own rungs differ (20, 16), but the
    first model's bucket leaves headroom (jaxhlm.bucket_choice), so the second fit traces
    nothing."""
    assert ladder(15) != ladder(17)
    ar1 = RESIDUAL["ar1"]
    jaxhlm.LMM("Reaction ~ Days + (1 | Subject)", _subjects(sleepstudy, 15), **ar1).fit()
    before = trace_count()
    assert jaxhlm.LMM("Reaction ~ Days + (1 | Subject)", _subjects(sleepstudy, 17), **ar1).fit().converged
    assert trace_count() == before


def test_a_residual_bootstrap_of_a_nearby_size_shares_the_simulator(sleepstudy):
    """With AR(1) residuals, 14 subjects after 13: 140 and 130 rows have different rungs,
    but the simulator's rows take headroom as the fit's counts do: no new trace."""
    from jaxhlm.batch import simulate_trace_count

    assert ladder(130) != ladder(140)
    ar1 = RESIDUAL["ar1"]
    jaxhlm.LMM("Reaction ~ Days + (1 | Subject)", _subjects(sleepstudy, 13), **ar1).fit().bootstrap(64, seed=1)
    res = jaxhlm.LMM("Reaction ~ Days + (1 | Subject)", _subjects(sleepstudy, 14), **ar1).fit()
    before = trace_count(), simulate_trace_count()
    assert res.bootstrap(64, seed=2).converged.mean() > 0.95
    assert (trace_count(), simulate_trace_count()) == before


def test_a_compound_symmetry_bootstrap_of_a_nearby_size_shares_the_simulator(sleepstudy):
    """With compound-symmetry residuals, 16 subjects after 15: the simulator's count of
    groups (one more for the padded rows) crosses a rung (16 -> 16, 17 -> 20) but takes
    headroom and reach as the rows do: no new trace."""
    from jaxhlm.batch import simulate_trace_count
    from jaxhlm.padding import count

    assert count(15 + 1) != count(16 + 1)
    cs = RESIDUAL["cs"]
    jaxhlm.LMM("Reaction ~ Days + (1 | Subject)", _subjects(sleepstudy, 15), **cs).fit().bootstrap(64, seed=1)
    res = jaxhlm.LMM("Reaction ~ Days + (1 | Subject)", _subjects(sleepstudy, 16), **cs).fit()
    before = simulate_trace_count()
    assert res.bootstrap(64, seed=2).converged.mean() > 0.95
    assert simulate_trace_count() == before
