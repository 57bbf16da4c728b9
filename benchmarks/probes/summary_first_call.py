"""Probe: a fit and its ``summary()`` (Satterthwaite's t tests) in a fresh process on an empty
compilation cache, against lmerTest's ``summary(lmer(...))`` in R: sleepstudy, the 60,000-row
crossed design of ``benchmarks/crossed.py`` and InstEval (REML, as lmerTest's summary).
Medians of ``REPS`` fresh processes; each side's time from after the data are read.

    python benchmarks/probes/summary_first_call.py [REPS] [PYTHONPATH of another jaxhlm]
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from crossed import FORMULA, design  # noqa: E402

CASES = {
    "sleepstudy": ("Reaction ~ Days + (Days | Subject)", None),
    "crossed 60,000 rows": (FORMULA, "crossed"),
    "InstEval": ("y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)", "InstEval"),
}

PY = r"""
import sys, time, json
import jaxhlm, pandas as pd
path = sys.argv[2]
df = jaxhlm.datasets.load("sleepstudy") if path == "-" else pd.read_csv(path, dtype=str).apply(
    lambda c: pd.to_numeric(c) if c.name in ("y", "x") else c)
t = time.perf_counter()
res = jaxhlm.LMM(sys.argv[1], df).fit()
fit = time.perf_counter() - t
text = res.summary()
print(json.dumps({"fit": fit, "with_summary": time.perf_counter() - t, "jax": "jax" in sys.modules,
                  "module": jaxhlm.__file__}))
"""

R = r"""
suppressMessages(library(lmerTest))
args <- commandArgs(TRUE)
df <- read.csv(args[2], colClasses = "factor")
for (col in intersect(c("y", "x", "Reaction", "Days"), names(df))) df[[col]] <- as.numeric(as.character(df[[col]]))
t <- system.time({m <- lmer(as.formula(args[1]), df); s <- summary(m)})[["elapsed"]]
cat(sprintf('{"with_summary": %.4f}\n', t))
"""


def run(cmd, env=None):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env,
                         cwd=tempfile.gettempdir())   # (not the checkout: PYTHONPATH's jaxhlm first)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    work = Path(tempfile.mkdtemp())
    import jaxhlm

    paths = {}
    for name, (formula, data) in CASES.items():
        path = work / f"{name.split()[0]}.csv"
        df = (jaxhlm.datasets.load("sleepstudy") if data is None else design(500, 240, 120, 1)
              if data == "crossed" else jaxhlm.datasets.load("InstEval"))
        df.to_csv(path, index=False)
        paths[name] = path
    env = dict(os.environ)
    if len(sys.argv) > 2:
        env["PYTHONPATH"] = sys.argv[2]
    for name, (formula, data) in CASES.items():
        ours = []
        for _ in range(reps):
            with tempfile.TemporaryDirectory() as cache:
                ours.append(run([sys.executable, "-c", PY, formula, str(paths[name]) if data else "-"],
                                dict(env, JAXHLM_COMPILATION_CACHE=cache)))
        theirs = [run(["Rscript", "-e", R, formula, str(paths[name])]) for _ in range(reps)]
        fit = statistics.median(o["fit"] for o in ours)
        both = statistics.median(o["with_summary"] for o in ours)
        r = statistics.median(o["with_summary"] for o in theirs)
        print(f"{name:22s} jaxhlm fit {fit:.3f} s, with summary {both:.3f} s (jax imported: "
              f"{sorted({o['jax'] for o in ours})}; {ours[0]['module']})   lmerTest lmer + summary {r:.3f} s   "
              f"ratio {r / both:.1f}")


if __name__ == "__main__":
    main()
