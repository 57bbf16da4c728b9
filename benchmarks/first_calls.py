"""First calls side by side with glmm (PyPI, a Rust engine with no compilation step): every
case in fresh processes, jaxhlm with an empty compilation cache and with a cache warmed by
*another* data set of the same bucket (jaxhlm.padding).

    python -m venv /tmp/peers && /tmp/peers/bin/pip install glmm pandas
    python benchmarks/first_calls.py --glmm-python /tmp/peers/bin/python [--reps 3]

Cases (issue 12's table): sleepstudy's whole process (import, read, fit); its
``bootstrap(nsim=1000)`` (jaxhlm: the call alone, its fit done before; glmm: a loop of
1,000 ``glmm.fit`` on jaxhlm's simulated responses); 2,000 responses of one 120-row design
(20 donors x 6 samples, ``y ~ cond + (1 | donor)``; warmed by a 19-donor design); InstEval's
whole process (import, read the CSV, ML fit), jaxhlm's in a second process on the same
data and cache.  The bootstrap and the 2,000 responses are timed twice: the call alone, and
from the process's start to the call's end ("(process)": imports and model included; jaxhlm
imports ``jax`` only when a program must be compiled, :mod:`jaxhlm.lazy_jax`).  Each figure is
the median over ``--reps`` fresh processes; ratios are glmm / jaxhlm (above 1: jaxhlm faster).
Writes ``benchmarks/results/first-calls-DATE.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from side_by_side import run_json  # noqa: E402

SLEEP = "Reaction ~ Days + (Days | Subject)"
DESIGN = "y ~ cond + (1 | donor)"
INSTEVAL = "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)"

JAXHLM = r"""
import sys, time, json
t0 = time.perf_counter()
import jaxhlm, numpy as np, pandas as pd
case, k = sys.argv[1], int(sys.argv[2])
def sleep(k):
    df = jaxhlm.datasets.load("sleepstudy")
    keep = sorted(df.Subject.astype(str).unique())[:k]
    return df[df.Subject.astype(str).isin(keep)]
if case == "whole":
    res = jaxhlm.LMM(%(sleep)r, sleep(k)).fit()
    print(json.dumps({"seconds": time.perf_counter() - t0}))
elif case == "insteval":
    df = pd.read_csv(sys.argv[3], dtype={c: str for c in ("s", "d", "dept", "service")})
    res = jaxhlm.LMM(%(insteval)r, df).fit(reml=False)
    print(json.dumps({"seconds": time.perf_counter() - t0, "objective": res.objective}))
elif case == "bootstrap":
    res = jaxhlm.LMM(%(sleep)r, sleep(k)).fit()
    t = time.perf_counter(); boot = res.bootstrap(1000, seed=1); first = time.perf_counter() - t
    process = time.perf_counter() - t0
    t = time.perf_counter(); res.bootstrap(1000, seed=2); warm = time.perf_counter() - t
    if len(sys.argv) > 3:
        np.savetxt(sys.argv[3], res.simulate(1000, seed=1), delimiter=",")
    print(json.dumps({"seconds": first, "warm": warm, "process": process, "converged": float(boot.converged.mean())}))
elif case == "many":
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"donor": np.repeat([f"d{i}" for i in range(k)], 6),
                       "cond": np.tile(["a", "b"], 3 * k)})
    Y = rng.normal(size=(2000, len(df))) + rng.normal(size=(2000, k)).repeat(6, axis=1)
    df["y"] = Y[0]
    model = jaxhlm.LMM(%(design)r, df)
    t = time.perf_counter(); out = model.fit_many(Y); first = time.perf_counter() - t
    process = time.perf_counter() - t0
    t = time.perf_counter(); model.fit_many(Y); warm = time.perf_counter() - t
    if len(sys.argv) > 3:
        df.to_csv(sys.argv[3] + ".design.csv", index=False); np.savetxt(sys.argv[3], Y, delimiter=",")
    print(json.dumps({"seconds": first, "warm": warm, "process": process, "converged": float(out.converged.mean())}))
""" % {"sleep": SLEEP, "design": DESIGN, "insteval": INSTEVAL}

GLMM = r"""
import sys, time, json
t0 = time.perf_counter()
import glmm, numpy as np, pandas as pd
case = sys.argv[1]
if case == "whole":
    glmm.fit(pd.read_csv(sys.argv[2]), %(sleep)r, reml=True)
    print(json.dumps({"seconds": time.perf_counter() - t0}))
elif case == "insteval":
    df = pd.read_csv(sys.argv[2], dtype={c: str for c in ("s", "d", "dept", "service")})
    glmm.fit(df, %(insteval)r, reml=False)
    print(json.dumps({"seconds": time.perf_counter() - t0}))
else:
    df = pd.read_csv(sys.argv[2])
    Y = np.loadtxt(sys.argv[3], delimiter=",")
    formula, col = (%(sleep)r, "Reaction") if case == "bootstrap" else (%(design)r, "y")
    t = time.perf_counter()
    for y in Y:
        glmm.fit(df.assign(**{col: y}), formula, reml=True)
    print(json.dumps({"seconds": time.perf_counter() - t, "process": time.perf_counter() - t0}))
""" % {"sleep": SLEEP, "design": DESIGN, "insteval": INSTEVAL}


def _run(python: str, script: str, *args: str, cache: str | None = None) -> dict:
    env = dict(os.environ)
    if cache is not None:
        env["JAXHLM_COMPILATION_CACHE"] = cache
    return run_json([python, "-c", script, *args], env, timeout=900)


def _jaxhlm(case: str, k: int, warm_k: int | None, save: str | None = None) -> dict:
    """One fresh process in a new cache directory, first warmed (another process) with
    ``warm_k`` groups when given (InstEval: ``save`` is its CSV, warmed by itself)."""
    with tempfile.TemporaryDirectory() as cache:
        if warm_k is not None:
            _run(sys.executable, JAXHLM, case, str(warm_k), *([save] if save else []), cache=cache)
        return _run(sys.executable, JAXHLM, case, str(k), *([save] if save else []), cache=cache)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--glmm-python", help="a Python with glmm installed (a separate venv)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="cases to run: whole bootstrap many insteval")
    ap.add_argument("--out", default=f"benchmarks/results/first-calls-{datetime.date.today()}.json")
    args = ap.parse_args(argv)
    import jax
    import jaxhlm

    work = Path(tempfile.mkdtemp())
    sleep_csv = work / "sleepstudy.csv"
    jaxhlm.datasets.load("sleepstudy").to_csv(sleep_csv, index=False)
    rows = []

    def record(case, who, cache, values):
        med = statistics.median(values)
        rows.append({"case": case, "who": who, "cache": cache, "median_s": med, "runs_s": values})
        print(f"{case:<28} {who:<7} {cache:<34} {med:8.3f} s  {['%.3f' % v for v in values]}", flush=True)

    insteval_csv = work / "InstEval.csv"
    jaxhlm.datasets.load("InstEval").to_csv(insteval_csv, index=False)
    cases = [("whole", "sleepstudy whole process", 18, 17), ("bootstrap", "sleepstudy bootstrap(1000)", 18, 17),
             ("many", "2,000 responses, 120 rows", 20, 19), ("insteval", "InstEval ML whole process", 0, 0)]
    if args.only:
        cases = [c for c in cases if c[0] in args.only]
    for case, label, k, warm_k in cases:
        save = {"whole": None, "insteval": str(insteval_csv)}.get(case, str(work / f"{case}.csv"))
        empty = [_jaxhlm(case, k, None, save) for _ in range(args.reps)]
        warmed = [_jaxhlm(case, k, warm_k, save if case == "insteval" else None) for _ in range(args.reps)]
        record(label, "jaxhlm", "empty cache", [r["seconds"] for r in empty])
        record(label, "jaxhlm", "second process (same data)" if case == "insteval"
               else f"cache warmed by {warm_k} groups", [r["seconds"] for r in warmed])
        if case not in ("whole", "insteval"):
            record(label, "jaxhlm", "warm (same process)", [r["warm"] for r in empty])
        if args.glmm_python:
            data = {"many": f"{save}.design.csv", "insteval": save}.get(case, str(sleep_csv))
            extra = [save] if save and case != "insteval" else []
            peer = [_run(args.glmm_python, GLMM, case, data, *extra) for _ in range(args.reps)]
            record(label, "glmm", "", [r["seconds"] for r in peer])
        if case not in ("whole", "insteval"):   # the same, from the process's start (imports included)
            whole = f"{label} (process)"
            record(whole, "jaxhlm", "empty cache", [r["process"] for r in empty])
            record(whole, "jaxhlm", f"cache warmed by {warm_k} groups", [r["process"] for r in warmed])
            if args.glmm_python:
                record(whole, "glmm", "", [r["process"] for r in peer])
    for label in dict.fromkeys(r["case"] for r in rows):
        peer = [r for r in rows if r["case"] == label and r["who"] == "glmm"]
        if peer:
            for r in rows:
                if r["case"] == label and r["who"] == "jaxhlm":
                    r["glmm_over_jaxhlm"] = peer[0]["median_s"] / r["median_s"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"device": str(jax.devices()[0]), "jax": jax.__version__,
                                          "command": " ".join(sys.argv), "rows": rows}, indent=1))
    print("ratios (glmm / jaxhlm):")
    for r in rows:
        if "glmm_over_jaxhlm" in r:
            print(f"  {r['case']:<28} {r['cache']:<34} {r['glmm_over_jaxhlm']:.2f}")


if __name__ == "__main__":
    main()
