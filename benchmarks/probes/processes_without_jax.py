"""Whole processes that find their programs stored: how long each takes, and whether it
imported ``jax`` (:mod:`jaxhlm.lazy_jax`, :mod:`jaxhlm.stored_run`).

    python benchmarks/probes/processes_without_jax.py [--reps 3] [--jaxhlm PATH]

Each case runs once on an empty cache (which stores its programs), then ``--reps`` times in
fresh processes on that cache; the figure is the median from the process's start (imports
included) to the end of its last call.  ``--jaxhlm PATH`` runs another checkout (put first
on ``PYTHONPATH``), e.g. a ``git worktree`` of an older commit, for a before/after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from side_by_side import run_json  # noqa: E402

CASES = {
    "sleepstudy fit": """
res = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", jaxhlm.datasets.load("sleepstudy")).fit()
""",
    "sleepstudy fit + summary()": """
res = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", jaxhlm.datasets.load("sleepstudy")).fit()
text = res.summary()
""",
    "sleepstudy fit + bootstrap(1000)": """
res = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", jaxhlm.datasets.load("sleepstudy")).fit()
boot = res.bootstrap(1000, seed=1)
""",
    "sleepstudy fit + KR table + profile": """
res = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", jaxhlm.datasets.load("sleepstudy")).fit()
table = res.coef_table("kenward-roger")
ci = res.confint(method="profile")
""",
    "cbpp GLMM fit + summary()": """
res = jaxhlm.GLMM("cbind(incidence, size - incidence) ~ period + (1 | herd)", jaxhlm.datasets.load("cbpp"),
                  family="binomial").fit()
text = res.summary()
""",
}

HEAD = "import sys, time, json\nt0 = time.perf_counter()\nimport jaxhlm\n"
TAIL = "\nprint(json.dumps({'seconds': time.perf_counter() - t0, 'jax': 'jax' in sys.modules}))\n"


def run(code: str, cache: str, path: str | None) -> dict:
    env = dict(os.environ, JAXHLM_COMPILATION_CACHE=cache)
    if path:
        env["PYTHONPATH"] = path + os.pathsep + env.get("PYTHONPATH", "")
    return run_json([sys.executable, "-c", HEAD + code + TAIL], env, timeout=600)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--jaxhlm", help="a checkout of jaxhlm to run instead of the installed one")
    args = ap.parse_args(argv)
    for name, code in CASES.items():
        with tempfile.TemporaryDirectory() as cache:
            empty = run(code, cache, args.jaxhlm)
            stored = [run(code, cache, args.jaxhlm) for _ in range(args.reps)]
        seconds = [r["seconds"] for r in stored]
        print(f"{name:<34} empty cache {empty['seconds']:6.3f} s   stored {statistics.median(seconds):6.3f} s "
              f"{[round(s, 3) for s in seconds]}   jax imported: {sorted({r['jax'] for r in stored})}", flush=True)


if __name__ == "__main__":
    main()
