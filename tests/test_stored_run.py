"""A process that runs a stored fit never imports ``jax`` (:mod:`jaxhlm.lazy_jax`,
:mod:`jaxhlm.stored_run`), gets the JAX path's numbers bit for bit, and can still use JAX
afterwards; whoever imports ``jax`` first, jaxhlm's settings hold."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxhlm import stored_run

FIT = """
import json, os, sys
import numpy as np
import jaxhlm
from jaxhlm import independent_groups
if os.environ.get("GROUPS_ON_HOST") == "no":   # Kenward-Roger and the profile by their compiled programs
    independent_groups.MAX_BLOCK = 0
df = jaxhlm.datasets.load("sleepstudy")
out = {}
for reml in (True, False):
    res = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", df).fit(reml=reml)
    out[str(reml)] = {"objective": res.objective, "theta": list(res.theta), "beta": list(res.fixef),
                      "sigma": res.sigma, "status": res.status, "gradient": list(res.gradient),
                      "vcov": res.vcov.to_numpy().ravel().tolist(),
                      "ranef": res.ranef.select_dtypes("number").to_numpy().ravel().tolist(),
                      "summary": str(res.summary()),   # Satterthwaite's program stored too
                      "kr": res.coef_table("kenward-roger").to_numpy().tolist() if reml else None,
                      "profile": res.confint(method="profile").to_numpy().tolist() if reml else None}
out["jax_imported"] = "jax" in sys.modules
out["traces"] = jaxhlm.fitting.trace_count()
if len(sys.argv) > 1:   # then JAX itself, in the same process: other programs through JAX
    boot = res.bootstrap(20, seed=1)   # compiled here: through JAX
    out["bootstrap"] = float(np.asarray(boot.converged).mean())
    import jax
    out["x64"] = bool(jax.config.jax_enable_x64)
print(json.dumps(out))
"""


def _run(cache, *args, env=None):
    env = dict(os.environ, JAXHLM_COMPILATION_CACHE=str(cache), JAXHLM_HOST_FIT="0", **(env or {}))
    out = subprocess.run([sys.executable, "-c", FIT, *args], capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("on_host", ["yes", "no"])
def test_a_second_process_fits_without_jax_bit_for_bit_and_can_use_jax_after(tmp_path, on_host):
    """Kenward-Roger's table and the profile intervals on the host (sleepstudy's subjects are
    independent groups: :mod:`jaxhlm.independent_groups`) or by their stored programs."""
    env = {"GROUPS_ON_HOST": on_host}
    first = _run(tmp_path, env=env)
    assert first["jax_imported"] and first["traces"] == 1   # REML and ML fits: one program
    stored = len(list((tmp_path / "jaxhlm-executables").glob("*" + stored_run.SUFFIX)))
    assert stored == (3 if on_host == "yes" else 6)   # fit, tests (and profile)
    second = _run(tmp_path, env=env)
    assert not second["jax_imported"] and second["traces"] == 0
    assert second == {**first, "jax_imported": False, "traces": 0}   # bit for bit
    third = _run(tmp_path, "then-jax", env=env)
    assert third["bootstrap"] == 1.0 and third["x64"]
    assert {k: third[k] for k in first if k not in ("jax_imported", "traces")} == \
        {k: first[k] for k in first if k not in ("jax_imported", "traces")}


def test_a_bad_file_or_another_platform_means_the_jax_path(tmp_path):
    first = _run(tmp_path)
    files = list((tmp_path / "jaxhlm-executables").glob("*" + stored_run.SUFFIX))
    for p in files:
        p.write_bytes(b"not a pickle")
    again = _run(tmp_path)
    assert again["jax_imported"] and again == {**first, "traces": 0}   # JAX's stored program
    # the REML fit's file was read and removed; the rest then ran through JAX, already imported
    assert len(list((tmp_path / "jaxhlm-executables").glob("*" + stored_run.SUFFIX))) == len(files) - 1
    stored = _run(tmp_path, env={"JAX_PLATFORMS": "cpu"})   # cpu: still one CPU device
    forced = _run(tmp_path, env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert forced["jax_imported"]
    assert {k: forced[k] for k in ("True", "False")} == {k: first[k] for k in ("True", "False")}
    assert stored["True"] == first["True"]


IMPORTS = """
import sys, json
order = sys.argv[1]
if order == "jax-first":
    import jax
import jaxhlm
before = "jax" in sys.modules
import jax
import jax.numpy as jnp
print(json.dumps({"before": before, "x64": bool(jax.config.jax_enable_x64),
                  "dtype": str(jnp.ones(2).dtype), "cache": bool(jax.config.jax_compilation_cache_dir)}))
"""


@pytest.mark.parametrize("order", ["jaxhlm-first", "jax-first"])
def test_importing_jaxhlm_leaves_jax_alone_but_its_settings_hold(order, tmp_path):
    env = dict(os.environ, JAXHLM_COMPILATION_CACHE=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", IMPORTS, order], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"before": order == "jax-first", "x64": True, "dtype": "float64", "cache": True}


def test_an_output_skeleton_rebuilds_its_tree():
    from jaxhlm.fitting import FitArrays
    from jaxhlm.kernel import Conditional

    tree = FitArrays(np.zeros(2), Conditional(*[np.ones(1)] * 3, [np.zeros(3)], []), (np.eye(2), None))
    skel = stored_run.skeleton(tree)
    flat = [np.zeros(2), np.ones(1), np.ones(1), np.ones(1), np.zeros(3), np.eye(2)]
    again = stored_run.rebuild(skel, iter(flat))
    assert type(again) is FitArrays and type(again.cond) is Conditional
    assert again.lams[1] is None and again.cond.b_var == []
    assert all(a is b for a, b in zip([again.opt, *again.cond[:3], again.cond.b[0], again.lams[0]], flat))
    with pytest.raises(ValueError, match="dict"):
        stored_run.skeleton({"a": np.zeros(1)})


BATCH = """
import json, sys
import numpy as np
import jaxhlm
df = jaxhlm.datasets.load("sleepstudy")
res = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", df).fit()
boot = res.bootstrap(150, seed=3)   # two chunks of 128 (the last one padded)
many = res._model.fit_many(res.simulate(20, seed=4))
tables = [many.coef_table(ddf).to_numpy().tolist() for ddf in ("satterthwaite", "kenward-roger")]
print(json.dumps({"jax_imported": "jax" in sys.modules,
                  "boot": [boot.objective.tolist(), boot.theta.tolist(), boot.status.tolist()],
                  "many": [many.objective.tolist(), many.fixef.tolist(), many.sigma.tolist()], "tables": tables}))
"""


def test_a_second_process_bootstraps_without_jax_bit_for_bit(tmp_path):
    env = dict(os.environ, JAXHLM_COMPILATION_CACHE=str(tmp_path))

    def run():
        out = subprocess.run([sys.executable, "-c", BATCH], capture_output=True, text=True,
                             timeout=300, env=env)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    first, second = run(), run()
    assert first["jax_imported"] and not second["jax_imported"]
    assert second["boot"] == first["boot"] and second["many"] == first["many"]
    assert second["tables"] == first["tables"]


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**40 + 5, -1, -(2**63), np.int32(-1), np.int64(-7),
                                  np.uint32(2**32 - 1), np.uint64(2**63), np.int16(-3)])
def test_key_data_is_jax_random_key(seed):
    import jax

    want = np.asarray(jax.random.key_data(jax.random.key(seed)))
    got = stored_run.key_data(seed)
    assert np.array_equal(got, want) and got.dtype == want.dtype


@pytest.mark.parametrize("seed", [1.0, True, np.float64(2.0), 2**64, np.array([1, 2])])
def test_key_data_leaves_other_seeds_to_jax(seed):
    assert stored_run.key_data(seed) is None


def test_key_data_leaves_another_generator_to_jax(monkeypatch):
    monkeypatch.setenv("JAX_DEFAULT_PRNG_IMPL", "rbg")
    assert stored_run.key_data(1) is None


RACE = """
import sys, threading, time
import jaxhlm
from jaxhlm import lazy_jax
t = threading.Thread(target=lambda: __import__("jax"))   # through jaxhlm's import hook
t.start()
while not hasattr(sys.modules.get("jax"), "config"):   # jax's import has begun, not ended
    time.sleep(0.0005)
lazy_jax.after_import(lambda: None)
t.join()
import jax
import jax.numpy as jnp
print(jnp.ones(1).dtype)
"""

FAILING = """
import warnings
import jaxhlm
from jaxhlm import lazy_jax
lazy_jax.after_import(lambda: 1 / 0)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import jax
import jax.numpy as jnp
print(jnp.ones(1).dtype, any("could not apply" in str(w.message) for w in caught))
"""


@pytest.mark.parametrize("script, want", [(RACE, "float64"), (FAILING, "float64 True")])
def test_jax_imported_in_another_thread_or_a_failing_setting_never_hangs_or_breaks_the_import(
        tmp_path, script, want):
    env = dict(os.environ, JAXHLM_COMPILATION_CACHE=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == want


GLMM_FIT = """
import json, sys
import jaxhlm
m = jaxhlm.GLMM("cbind(incidence, size - incidence) ~ period + (1 | herd)", jaxhlm.datasets.load("cbpp"),
                family="binomial")
res = m.fit()
print(json.dumps({"jax_imported": "jax" in sys.modules, "objective": res.objective,
                  "theta": res.theta.tolist(), "fixef": res.fixef.tolist(), "vcov": res.vcov.to_numpy().tolist(),
                  "summary": res.summary()}))
"""


def test_a_second_process_fits_a_glmm_without_jax_bit_for_bit(tmp_path):
    env = dict(os.environ, JAXHLM_COMPILATION_CACHE=str(tmp_path))
    runs = [subprocess.run([sys.executable, "-c", GLMM_FIT], capture_output=True, text=True, timeout=300, env=env)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr[-3000:]
    first, second = (json.loads(r.stdout.strip().splitlines()[-1]) for r in runs)
    assert first["jax_imported"] and not second["jax_imported"]
    assert {**second, "jax_imported": True} == first


REFERENCES = """
import json, sys
from pathlib import Path
import jaxhlm
out = {}
for path in sorted(Path(sys.argv[1]).glob("*.json")):
    ref = json.loads(path.read_text())
    if ref["name"] == "insteval_ml":
        continue
    res = jaxhlm.LMM(ref["formula"], jaxhlm.datasets.load(ref["dataset"])).fit(reml=ref["reml"])
    out[ref["name"]] = [res.objective, res.theta.tolist(), res.fixef.tolist(), res.vcov.to_numpy().tolist(),
                        res.ranef.select_dtypes("number").to_numpy().ravel().tolist()]
out["jax_imported"] = "jax" in sys.modules
print(json.dumps(out))
"""


def test_every_lme4_reference_fit_runs_without_jax_bit_for_bit(tmp_path):
    """lme4's reference designs (crossed, nested, uncorrelated, a singular fit): fitted
    through JAX, then in a second process through jaxlib alone, the same numbers."""
    from pathlib import Path

    env = dict(os.environ, JAXHLM_COMPILATION_CACHE=str(tmp_path), JAXHLM_HOST_FIT="0")   # the compiled fits
    refs = str(Path(__file__).parent / "reference")
    runs = [subprocess.run([sys.executable, "-c", REFERENCES, refs], capture_output=True, text=True,
                           timeout=600, env=env) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr[-3000:]
    first, second = (json.loads(r.stdout.strip().splitlines()[-1]) for r in runs)
    assert first.pop("jax_imported") and not second.pop("jax_imported")
    assert len(first) >= 10 and second == first


PROFILE_AFTER = """
import json, sys, jaxhlm
from jaxhlm import precompiled
from jaxhlm import independent_groups
independent_groups.MAX_BLOCK = 0   # the profile's compiled programs, not the host's groups
prepared = []
executable = precompiled.Precompiled.executable
def counted(self, *args):
    prepared.append(self.name)
    return executable(self, *args)
precompiled.Precompiled.executable = counted
res = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", jaxhlm.datasets.load("sleepstudy")).fit()
out = {"jax_after_fit": "jax" in sys.modules}
if len(sys.argv) > 1:
    out["profile"] = res.confint(method="profile").to_numpy().ravel().tolist()
    out["prepared"] = sorted(prepared)
print(json.dumps(out))
"""


def test_a_profile_in_a_process_without_jax_compiles_its_programs_together(tmp_path):
    """The fit stored, the profile's programs not: the fit runs without JAX, then the profiler
    imports it and compiles both programs together (``precompiled.prepare_together``); a
    later process finds both stored and prepares nothing, with the same intervals."""
    env = dict(os.environ, JAXHLM_COMPILATION_CACHE=str(tmp_path))

    def run(*args):
        out = subprocess.run([sys.executable, "-c", PROFILE_AFTER, *args], capture_output=True,
                             text=True, timeout=300, env=env)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    run()   # stores the fit
    first = run("profile")
    assert not first["jax_after_fit"] and first["prepared"] == ["profile_fixed", "profile_variance"]
    again = run("profile")
    assert not again["jax_after_fit"] and again["prepared"] == []
    assert again["profile"] == first["profile"]
