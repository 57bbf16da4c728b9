"""Batches over several processes (``jax.distributed``): two local CPU processes, one
device each, fit one sharded batch and both get every result."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import jaxhlm

F = "Reaction ~ Days + (Days | Subject)"

WORKER = """
import json, sys
import jax, jaxhlm
jax.distributed.initialize(f"localhost:{sys.argv[2]}", num_processes=2, process_id=int(sys.argv[1]))
assert jax.process_count() == 2 and len(jax.devices()) == 2 and len(jax.local_devices()) == 1
jaxhlm.batch.STRAGGLER_AFTER = 5   # most fits go on to the second pass
res = jaxhlm.LMM(sys.argv[3], jaxhlm.datasets.load("sleepstudy")).fit()
out = res._model.fit_many(res.simulate(8, seed=3))
print(json.dumps({"objective": out.objective.tolist(), "theta": out.theta.tolist(),
                  "iterations": out.iterations.tolist()}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(300)
def test_fit_many_over_two_processes_equals_one_process(sleepstudy, monkeypatch, compiled_fits):
    env = dict(os.environ, JAXHLM_COMPILATION_CACHE="0", JAXHLM_HOST_FIT="0")   # the compiled batch
    env.pop("XLA_FLAGS", None)
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(i), port, F], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    try:
        runs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, runs):
        assert p.returncode == 0, err[-2000:]
    first, second = (json.loads(out.strip().splitlines()[-1]) for out, _ in runs)
    assert first == second   # every process gets all the results
    monkeypatch.setattr(jaxhlm.batch, "STRAGGLER_AFTER", 5)
    res = jaxhlm.LMM(F, sleepstudy).fit()
    single = res._model.fit_many(res.simulate(8, seed=3))
    assert max(first["iterations"]) > 5  # fits went on to the straggler pass
    np.testing.assert_allclose(first["objective"], single.objective, rtol=1e-10)
    np.testing.assert_allclose(first["theta"], single.theta, rtol=1e-6, atol=1e-8)
