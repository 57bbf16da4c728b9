"""Probe: a GLMM of a nearby size in a second process (issue 12's buckets for GLMMs).

Process 1 (an empty compilation cache) fits a crossed binary design of 37 subjects x 9
trials over 13 items, ``y ~ x + (1 | s) + (1 | i)``, then its ``ranef`` and a
``bootstrap(200)``; process 2, on the cache process 1 left, does the same for 39 subjects
(the same bucket: 40 subjects, 14 items, 392 rows).  Each phase is timed in each process
(the fit includes building the model); run it with ``PYTHONPATH`` on two checkouts to
compare code.

    python benchmarks/probes/glmm_buckets.py [--reps 2]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np, pandas as pd, jaxhlm
subjects = int(sys.argv[1])
rng = np.random.default_rng(subjects)
s = np.repeat(np.arange(subjects), 9)
i = np.concatenate([rng.choice(13, 9, replace=False) for _ in range(subjects)])
x = rng.normal(size=s.size)
eta = 0.3 + 0.5 * x + 0.8 * rng.normal(size=subjects)[s] + 0.5 * rng.normal(size=13)[i]
df = pd.DataFrame({"y": rng.binomial(1, 1 / (1 + np.exp(-eta))), "x": x, "s": s.astype(str), "i": i.astype(str)})
out = {"import": time.perf_counter() - t0}
t = time.perf_counter(); res = jaxhlm.GLMM("y ~ x + (1 | s) + (1 | i)", df, family="binomial").fit()
out["fit"] = time.perf_counter() - t
t = time.perf_counter(); res.ranef; out["ranef"] = time.perf_counter() - t
t = time.perf_counter(); boot = res.bootstrap(200, seed=1); out["bootstrap_200"] = time.perf_counter() - t
out["process"] = time.perf_counter() - t0
out["converged"] = float(np.mean(boot.converged))
print(json.dumps(out))
"""


def run(subjects: int, cache: str) -> dict:
    env = dict(os.environ, JAXHLM_COMPILATION_CACHE=cache)
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(subjects)], capture_output=True, text=True,
                         env=env, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    rows = {"first (37 subjects, empty cache)": [], "second (39 subjects, same cache)": []}
    for _ in range(a.reps):
        with tempfile.TemporaryDirectory() as cache:
            rows["first (37 subjects, empty cache)"].append(run(37, cache))
            rows["second (39 subjects, same cache)"].append(run(39, cache))
    for name, runs in rows.items():
        print(name, {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]})


if __name__ == "__main__":
    main()
