"""The compiled NUTS driver (jaxhlm.bayes.chains): one compilation serves every run, the
chain methods give the same chains, thinning keeps every k-th draw, bad settings are
named.  Statistical correctness is tested in test_posterior.py and test_calibration.py.

The chain methods compute the same chains from the same keys, but batched and
unbatched programs round differently (about 1e-16 relative per operation), and NUTS
amplifies rounding differences over many iterations; so the comparisons use short
runs (3 warm-up + 5 draws), where they agree to about 1e-11, and allow 1e-8.
"""

import json
import os
import subprocess
import sys

import jax
import jax.monitoring
import numpy as np
import pytest

import jaxhlm
from jaxhlm.bayes.chains import Schedule, chain
from jaxhlm.bayes.posterior import Sampler, numpyro_model

SHORT = dict(num_warmup=3, num_samples=5, precondition=False)


@pytest.fixture(scope="module")
def schools():
    return jaxhlm.LMM("y ~ 1 + (1 | school)", jaxhlm.datasets.load("eight_schools"), residual_variance="se2")


def _assert_same_draws(a, b):
    assert a.samples.keys() == b.samples.keys()
    for name in a.samples:
        np.testing.assert_allclose(a.samples[name], b.samples[name], rtol=1e-8, atol=1e-10, err_msg=name)


def test_a_second_run_compiles_nothing_and_a_seed_repeats(schools):
    sampler = Sampler(schools, num_warmup=50, num_samples=20, num_chains=2, chain_method="sequential")
    events = []
    listener = lambda event, *a, **k: events.append(event) if "/compile" in event else None  # noqa: E731
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        first = sampler.run(seed=1)
        compiled = len(events)
        other = sampler.run(seed=2)
        again = sampler.run(seed=1)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiled > 0 and first.seconds["compile"] > 0
    assert events[compiled:] == []   # no tracing, lowering or compilation after the first run
    assert other.seconds["compile"] < 0.01 and again.seconds["compile"] < 0.01
    for name, x in first.samples.items():
        assert x.shape == (2, 20)
        np.testing.assert_array_equal(again.samples[name], x)
        assert not np.array_equal(other.samples[name], x)
    assert first.stats["num_steps"].shape == (2, 20) and first.stats["num_steps"].min() >= 1


def test_vectorized_and_sequential_chains_agree(schools):
    runs = [Sampler(schools, num_chains=2, chain_method=m, **SHORT).run(seed=4)
            for m in ("vectorized", "sequential")]
    _assert_same_draws(*runs)
    assert not np.array_equal(runs[0].samples["(Intercept)"][0], runs[0].samples["(Intercept)"][1])


PARALLEL = """
import json, warnings
import numpy as np, jax, jaxhlm
from jaxhlm.bayes.posterior import Sampler
assert len(jax.local_devices()) == 2
m = jaxhlm.LMM("y ~ 1 + (1 | school)", jaxhlm.datasets.load("eight_schools"), residual_variance="se2")
with warnings.catch_warnings():
    warnings.simplefilter("error")
    out = {method: Sampler(m, num_warmup=3, num_samples=5, num_chains=4, chain_method=method,
                           precondition=False).run(seed=4).samples
           for method in ("parallel", "vectorized")}
print(json.dumps({k: {n: v.tolist() for n, v in s.items()} for k, s in out.items()}))
"""


@pytest.mark.timeout(300)
def test_parallel_chains_over_two_devices_agree_with_vectorized():
    env = dict(os.environ, JAXHLM_COMPILATION_CACHE="0",
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    run = subprocess.run([sys.executable, "-c", PARALLEL], env=env, capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    for name in out["vectorized"]:
        par, vec = np.array(out["parallel"][name]), np.array(out["vectorized"][name])
        assert par.shape == (4, 5)
        np.testing.assert_allclose(par, vec, rtol=1e-8, atol=1e-10, err_msg=name)


def test_parallel_on_one_device_says_so(schools):
    if len(jax.local_devices()) > 1:
        pytest.skip("several devices")
    with pytest.warns(UserWarning, match="1 local device.*run vectorized"):
        Sampler(schools, num_chains=2, chain_method="parallel", **SHORT)


def test_thinning_keeps_every_kth_draw(schools):
    fn = numpyro_model(schools, jaxhlm.Priors().resolve(schools))
    key = jax.random.key(7)
    full, _ = jax.jit(chain(fn, Schedule(4, 12)))(key, schools.blocks)
    thin, stats = jax.jit(chain(fn, Schedule(4, 4, thinning=3)))(key, schools.blocks)
    assert stats["diverging"].shape == (4,)
    for name, x in thin.items():
        np.testing.assert_allclose(x, full[name][2::3], rtol=1e-8, err_msg=name)


@pytest.mark.parametrize("kwargs, message", [
    (dict(chain_method="threads"), "chain_method must be one of 'vectorized'"),
    (dict(num_warmup=-1), "num_warmup must be an integer >= 0"),
    (dict(num_samples=0), "num_samples must be an integer >= 1"),
    (dict(thinning=2.5), "thinning must be an integer >= 1"),
    (dict(num_chains=0), "num_chains must be an integer >= 1"),
    (dict(target_accept_prob=1.2), r"target_accept_prob must lie in \(0, 1\)"),
    (dict(fixed={"sigam": 1.0}), "fixed: no parameter named 'sigam'"),
])
def test_bad_settings_are_named(schools, kwargs, message):
    with pytest.raises(jaxhlm.JaxhlmError, match=message):
        Sampler(schools, precondition=False, **kwargs)
