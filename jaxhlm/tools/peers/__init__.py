"""Time the peers (lme4 in R, statsmodels MixedLM) from Python, for jaxhlm's benchmarks.

    time_lme4(case, reps, datadir)         runs `Rscript lme4_timing.R DATADIR CASE REPS`
    time_statsmodels(case, reps, datadir)  runs `python statsmodels_timing.py DATADIR CASE REPS`

Each returns the script's JSON object as a dict (median_seconds, min_seconds, times_seconds,
fits_per_second, versions, ...; see the scripts' headers for what each CASE measures), or None,
with the reason printed, when the peer is not installed or its script fails. reps=None uses the
script's default. Standard library only; the peers are optional and never needed by jaxhlm.
Case "cell" times any model: DATADIR then holds cell.json and cell.csv (as jaxhlm's
``jaxhlm bench`` writes them; see lme4_timing.R's header).

    python peers.py DATADIR [CASE ...]     prints one JSON line per (peer, case)
"""
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
LME4_CASES = ("sleepstudy_reml", "insteval_ml", "sleepstudy_refit", "one_design_many", "cell")
STATSMODELS_CASES = ("sleepstudy_reml", "one_design_many", "cell")


def _run(peer, cmd, timeout):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"{peer}: timed out after {timeout} s: {' '.join(cmd)}")
        return None
    if p.returncode != 0:
        print(f"{peer}: exit {p.returncode}: {' '.join(cmd)}\n{p.stderr[-2000:]}")
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def time_lme4(case, reps=None, datadir="../shared/data", optimizer="bobyqa", timeout=3600):
    """lme4 timings of `case`; optimizer "bobyqa" or "default" (lme4's lmerControl(): nloptwrap)."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        print("lme4: Rscript not found (apt-get install r-base-core r-cran-lme4 r-cran-jsonlite)")
        return None
    probe = subprocess.run([rscript, "-e", "quit(status = !all(sapply(c('lme4', 'jsonlite'), "
                            "requireNamespace, quietly = TRUE)))"], capture_output=True)
    if probe.returncode != 0:
        print("lme4: R packages lme4/jsonlite not installed (apt-get install r-cran-lme4 r-cran-jsonlite)")
        return None
    cmd = [rscript, str(HERE / "lme4_timing.R"), str(datadir), case, "" if reps is None else str(reps), optimizer]
    return _run("lme4", cmd, timeout)


def time_statsmodels(case, reps=None, datadir="../shared/data", timeout=3600):
    """statsmodels MixedLM timings of `case`, run with this Python interpreter."""
    missing = [m for m in ("statsmodels", "pandas") if importlib.util.find_spec(m) is None]
    if missing:
        print(f"statsmodels: {', '.join(missing)} not installed (pip install statsmodels)")
        return None
    cmd = [sys.executable, str(HERE / "statsmodels_timing.py"), str(datadir), case]
    return _run("statsmodels", cmd + ([] if reps is None else [str(reps)]), timeout)


if __name__ == "__main__":
    datadir, cases = sys.argv[1], sys.argv[2:] or [c for c in LME4_CASES if c != "cell"]
    for c in cases:
        for peer, f, ok in (("lme4", time_lme4, LME4_CASES), ("statsmodels", time_statsmodels, STATSMODELS_CASES)):
            if c in ok:
                r = f(c, None, datadir)
                if r is not None:
                    r.pop("times_seconds", None); r.pop("lmer_times_seconds", None)
                    print(json.dumps(r))
