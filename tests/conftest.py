"""Shared test set-up: float64 JAX (jaxhlm turns it on), strict promotion, lme4 references.

The reference files in ``tests/reference/`` are lme4 1.1-31 fits (optimizer bobyqa),
copied from the project's shared material (``shared/reference/lme4``), made with
``shared/tools/refs.R``; the data sets are jaxhlm's bundled copies of lme4's.
"""

import json
import os
from pathlib import Path

os.environ.setdefault("JAXHLM_COMPILATION_CACHE", "0")  # tests compile for real

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import jaxhlm  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

REFERENCE = Path(__file__).parent / "reference"


def load_reference(name: str) -> dict:
    return json.loads((REFERENCE / f"{name}.json").read_text())


def reference_names() -> list[str]:
    return sorted(p.stem for p in REFERENCE.glob("*.json"))


def lme4_name(name: str) -> str:
    """formulaic's coefficient name in lme4's spelling: ``recipe[T.B]:temp`` -> ``recipeB:temp``."""
    import re

    return re.sub(r"([A-Za-z_.][\w.]*)\[T\.([^\]]+)\]", r"\1\2", name)


def run_on_cpu_devices(script: str, *args: str, devices: int = 4, timeout: float = 500) -> dict:
    """Run ``script`` (with ``args``) in a fresh Python that sees ``devices`` forced CPU
    devices; return the JSON object it prints last on stdout."""
    import subprocess
    import sys

    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAXHLM_COMPILATION_CACHE="0")
    run = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                         timeout=timeout, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture
def compiled_fits(monkeypatch):
    """Fits, and batches of fits, by the compiled programs instead of on the host
    (:mod:`jaxhlm.group_fit`), for tests of those programs (their reuse, their storage,
    their sharding) and of batched == looped with the batch's own optimiser (a fit on the
    host stops within its own optimiser's tolerance: ``tests/test_group_fit.py``)."""
    from jaxhlm import host_fit

    monkeypatch.setattr(host_fit, "ENABLED", False)


@pytest.fixture(autouse=True)
def _host_batches_by_rule_not_by_clock(monkeypatch):
    """Every batch a test runs on the host where it qualifies, whatever ran before in this
    worker: the host's share of a program's fits is counted in seconds
    (:data:`jaxhlm.batch.HOST_BUDGET`), so a hand-over by the clock would make a test's path
    depend on the machine's load and on the tests before it.  The hand-over has its own
    test (``tests/test_group_fit.py``); the compiled batches theirs (:func:`compiled_fits`)."""
    from jaxhlm import batch

    monkeypatch.setattr(batch, "_HOST_SECONDS", {})
    monkeypatch.setattr(batch, "HOST_BUDGET", float("inf"))


def assert_fits_agree(host, ref):
    """A fit on the host (:mod:`jaxhlm.host_fit`) and the compiled program's fit of the same
    model agree to the optimisers' tolerance: both stop at a predicted decrease of 1e-12
    (1 + |f|), so the objectives agree to 1e-9 (the host's no higher) and theta to about
    1e-5 on flat criteria; β̂ within 1e-4 of its standard errors, those, σ̂ and b to 1e-4."""
    assert host.status == 0 and ref.status == 0
    assert host.objective <= ref.objective + 1e-9 * abs(ref.objective)
    assert host.objective == pytest.approx(ref.objective, rel=1e-9)
    np.testing.assert_allclose(host.theta, ref.theta, atol=1e-4)
    se = ref.fixef_se.to_numpy()
    np.testing.assert_allclose(host.fixef.to_numpy(), ref.fixef.to_numpy(), atol=1e-4 * se.max())
    np.testing.assert_allclose(host.fixef_se.to_numpy(), se, rtol=1e-4)
    assert host.sigma == pytest.approx(ref.sigma, rel=1e-4)
    for a, b in zip(host._cond.b, ref._cond.b):
        np.testing.assert_allclose(a, b, atol=1e-4 * max(np.abs(b).max(), 1e-8))


@pytest.fixture(scope="session")
def fits_agree():
    """:func:`assert_fits_agree`, for the tests of the host's fits."""
    return assert_fits_agree


@pytest.fixture(scope="session")
def sleepstudy():
    return jaxhlm.datasets.load("sleepstudy")


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    The suite compiles several hundred XLA:CPU programs (fits, batches, NUTS); each
    keeps memory mappings alive while cached, and a full run once crashed inside XLA's
    compiler late in the suite (the kernel's limit is vm.max_map_count = 65,530
    mappings per process).  Modules share no compiled programs that matter for speed.
    """
    yield
    import gc

    jax.clear_caches()
    gc.collect()
