"""A second process loads the compiled fit from disk: no tracing, the same numbers; JAX's
own persistent cache stays on, and an executable JAX loaded from that cache is not stored."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxhlm.precompiled import Precompiled, prepare_together

SCRIPT = """
import json, jaxhlm
df = jaxhlm.datasets.load("sleepstudy")
res = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", df).fit()
again = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", df).fit(reml=False)
print(json.dumps({"traces": jaxhlm.fitting.trace_count(), "objective": res.objective, "theta": list(res.theta),
                  "ml": again.objective}))
"""
REML = 1743.6282719585


def _run(cache):
    env = dict(os.environ, JAXHLM_COMPILATION_CACHE=str(cache), JAXHLM_HOST_FIT="0")   # the compiled fit
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _stored(cache):
    return sorted(p.name for p in (cache / "jaxhlm-executables").glob("*.pickle"))


def test_second_process_loads_the_compiled_fit(tmp_path):
    first = _run(tmp_path)
    assert first["traces"] == 1 and len(_stored(tmp_path)) == 1  # REML and ML: one program
    assert any(p.name.startswith("jit_fit_blocks_") for p in tmp_path.iterdir())  # JAX's cache is on
    second = _run(tmp_path)
    assert second["traces"] == 0
    assert second == {**first, "traces": 0}  # bit for bit
    assert abs(first["objective"] - REML) < 1e-6


def test_jax_cache_hits_and_bad_files_mean_a_normal_compilation(tmp_path):
    first = _run(tmp_path)
    for p in (tmp_path / "jaxhlm-executables").glob("*.pickle"):
        p.write_bytes(b"not a pickle")
    for p in (tmp_path / "jaxhlm-executables").glob("*.xla"):   # jaxhlm.stored_run's: not this test's
        p.unlink()
    again = _run(tmp_path)  # the bad files go; JAX's cache has both programs: nothing is stored
    assert again["traces"] == 1 and _stored(tmp_path) == []
    assert again == first



PLAIN = """
import jaxhlm, numpy as np
from jaxhlm import fitting
m = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", jaxhlm.datasets.load("sleepstudy"))
for reml in (True, False):   # the programs under jax.jit's own name, as an older jaxhlm compiled them
    fitting._PRECOMPILED.jitted(m.bucketed.blocks, m.bucketed.structure, reml, fitting.Options(),
                                np.asarray(m.theta_start), None, fitting.GAUSSIAN, None)
"""


def test_programs_in_jax_cache_under_another_name_are_still_stored(tmp_path):
    """JAX's cache holding the same programs, lowered under jax.jit's own name (an older
    jaxhlm, or a fit outside the store), does not keep them out of the store."""
    env = dict(os.environ, JAXHLM_COMPILATION_CACHE=str(tmp_path), JAXHLM_HOST_FIT="0")
    out = subprocess.run([sys.executable, "-c", PLAIN], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert any(p.name.startswith("jit__fit_program") for p in tmp_path.iterdir())
    first = _run(tmp_path)
    assert first["traces"] == 1 and len(_stored(tmp_path)) == 1
    assert _run(tmp_path)["traces"] == 0


def test_the_versions_of_traced_packages_key_a_stored_program(monkeypatch):
    """The stored NUTS chains trace NumPyro's kernel: a new NumPyro version, like a new
    JAX or jaxhlm, means another file, never a stale program loaded."""
    import numpyro

    from jaxhlm.bayes.chains import CHAINS

    key = ((), "tree", (), None)
    before = CHAINS.file_key(key)
    monkeypatch.setattr(numpyro, "__version__", numpyro.__version__ + ".post1")
    assert CHAINS.file_key(key) != before


def test_compile_options_this_xla_does_not_know_are_left_out(monkeypatch):
    """Under a jaxlib other than the pinned one, an XLA option that its compiler refuses is
    dropped instead of failing every fit (jaxlib 0.11.2 has no
    ``xla_cpu_use_fusion_emitters``); the options it knows are kept."""
    import jaxlib

    from jaxhlm import precompiled

    monkeypatch.setattr(jaxlib, "__version__", "0.0.0")
    monkeypatch.setattr(precompiled, "_KNOWN_OPTIONS", {})
    options = {"xla_cpu_no_such_option_here": False, "xla_backend_optimization_level": 0}
    assert precompiled.known_options(options) == {"xla_backend_optimization_level": 0}


def test_programs_prepared_together_compile_once_and_a_failure_waits_for_its_call():
    """``prepare_together`` compiles in threads what the calls then use (no new
    compilation), and a program that fails to compile raises at its own call, not there."""
    def fails(x):
        raise ValueError("this program does not compile")

    good = Precompiled(lambda x: x * 2.0 + 1.0, (), "test_prepared")
    bad = Precompiled(fails, (), "test_prepared_failing")
    x = np.arange(3.0)
    prepare_together([(good, (x,)), (bad, (x,))])
    assert len(good._memory) == 1
    np.testing.assert_array_equal(np.asarray(good(x)), x * 2.0 + 1.0)
    assert len(good._memory) == 1
    with pytest.raises(ValueError, match="does not compile"):
        bad(x)
