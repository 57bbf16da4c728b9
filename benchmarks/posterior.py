"""Posterior sampling efficiency: jaxhlm's NUTS (b integrated out) against Stan (explicit b).

Both sample sleepstudy, ``Reaction ~ Days + (Days | Subject)``, with the same priors
(each fixed effect ~ Normal(0, 1000), sigma and both SDs ~ HalfNormal(100), LKJ(2);
the Stan program is tests/reference/stan/sleepstudy.stan), CHAINS chains of WARMUP
warm-up and DRAWS kept iterations each.  The figure is effective samples per second:
the smallest bulk ESS over (beta, sigma, SDs, correlation) (rank-normalised, Vehtari et
al. 2021; rstan::ess_bulk for Stan, jaxhlm.bayes.posterior.ess_bulk for jaxhlm), divided by
the time of warm-up plus sampling, compilation excluded and reported apart:

- jaxhlm: :class:`jaxhlm.bayes.posterior.Sampler` (4 vectorized chains, one compiled
  program: :mod:`jaxhlm.bayes.chains`); the first run compiles (its compilation time is
  reported apart); the next REPS runs (fresh warm-up each, other seeds) reuse the
  executable and are timed until their draws are ready; the median is reported.  Then a
  second process on the cache the first left samples a data set of the same bucket (17
  subjects): its first run loads the stored chains instead of compiling them.
  The script starts with an empty compilation cache, so the compilation is cold.
- Stan: ``jaxhlm/tools/peers/stan_timing.R`` (rstan; chains one after another); its time
  is Stan's own clock (``get_elapsed_time``: warm-up + sampling summed over chains),
  which leaves out R's overhead around ``sampling()`` (also reported).

    python benchmarks/posterior.py [--chains 4] [--warmup 1000] [--draws 1000] [--reps 3]
                                   [--no-stan] [--out benchmarks/results/posterior-DATE.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# A new, empty compilation cache (unless the caller chose one): the compilation time
# reported is a cold compilation, not a load of an earlier run's program.
os.environ.setdefault("JAXHLM_COMPILATION_CACHE", tempfile.mkdtemp(prefix="jaxhlm-posterior-cache-"))

import jaxhlm  # noqa: E402  first: it sets XLA's log level before jax loads

import jax  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from jaxhlm.bayes.posterior import Sampler  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STAN_PROGRAM = ROOT / "tests" / "reference" / "stan" / "sleepstudy.stan"
FORMULA = "Reaction ~ Days + (Days | Subject)"


def priors() -> jaxhlm.Priors:
    return jaxhlm.Priors(fixef=dist.Normal(0, 1000), sigma=dist.HalfNormal(100),
                         sd=dist.HalfNormal(100), lkj=2.0)


def time_jaxhlm(chains: int, warmup: int, draws: int, reps: int) -> dict:
    model = jaxhlm.LMM(FORMULA, jaxhlm.datasets.load("sleepstudy"))
    began = time.perf_counter()
    sampler = Sampler(model, priors(), num_warmup=warmup, num_samples=draws, num_chains=chains)
    first = sampler.run(seed=0)
    first_seconds = time.perf_counter() - began
    runs = []
    for seed in range(1, reps + 1):
        began, cpu = time.perf_counter(), time.process_time()
        post = sampler.run(seed=seed)
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
        seconds = post.seconds["compile"] + post.seconds["warmup_and_sampling"]  # compile: 0 here
        ess = post.summary()["ess"]
        leapfrogs = int(post.stats["num_steps"].sum())
        runs.append({"seed": seed, "seconds": seconds, "run_wall_seconds": wall,
                     "run_cpu_seconds": cpu, **post.seconds,
                     "min_ess_bulk": float(ess.min()), "ess_bulk": ess.to_dict(),
                     "ess_per_second": float(ess.min()) / seconds, "divergences": post.divergences,
                     "sampling_leapfrog_steps": leapfrogs,
                     "mean_tree_size": float(post.stats["num_steps"].mean())})
    seconds = statistics.median(r["seconds"] for r in runs)
    return {"peer": "jaxhlm", "chains": chains, "chain_method": "vectorized", "warmup": warmup, "draws": draws,
            "first_run_seconds": first_seconds,
            "compile_seconds": first.seconds["compile"],
            "median_seconds": seconds,
            "median_cpu_seconds": statistics.median(r["run_cpu_seconds"] for r in runs),
            "median_ess_per_second": statistics.median(r["ess_per_second"] for r in runs),
            "first_run_divergences": first.divergences, "runs": runs,
            "compilation_cache": os.environ["JAXHLM_COMPILATION_CACHE"],
            "jax": jax.__version__, "numpyro": numpyro.__version__, "jaxhlm": jaxhlm.__version__,
            "device": str(jax.devices()[0])}


SECOND_PROCESS = r"""
import json, sys, time
t0 = time.perf_counter()
import jaxhlm, numpyro.distributions as dist
from jaxhlm.bayes.posterior import Sampler
df = jaxhlm.datasets.load("sleepstudy")
df = df[df.Subject.astype(str).isin(sorted(df.Subject.astype(str).unique())[:17])]
priors = jaxhlm.Priors(fixef=dist.Normal(0, 1000), sigma=dist.HalfNormal(100), sd=dist.HalfNormal(100), lkj=2.0)
t = time.perf_counter()
post = Sampler(jaxhlm.LMM(%(formula)r, df), priors, num_warmup=int(sys.argv[2]), num_samples=int(sys.argv[3]),
               num_chains=int(sys.argv[1])).run(seed=0)
print(json.dumps({"first_run_seconds": time.perf_counter() - t, "process_seconds": time.perf_counter() - t0,
                  **post.seconds}))
""" % {"formula": FORMULA}


def time_second_process(chains: int, warmup: int, draws: int) -> dict:
    """A new process on the cache the first run left, with another data set of the same
    bucket (17 subjects): its first run loads the stored chains (:mod:`jaxhlm.bayes.chains`)."""
    out = subprocess.run([sys.executable, "-c", SECOND_PROCESS, str(chains), str(warmup), str(draws)],
                         capture_output=True, text=True, env=dict(os.environ), timeout=900)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_stan(chains: int, warmup: int, draws: int, seed: int = 1) -> dict | None:
    rscript = shutil.which("Rscript")
    if rscript is None:
        print("stan: Rscript not found (apt-get install r-cran-rstan); skipped")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "sleepstudy.csv"
        jaxhlm.datasets.load("sleepstudy").to_csv(csv, index=False)
        cmd = [rscript, str(ROOT / "jaxhlm" / "tools" / "peers" / "stan_timing.R"), str(STAN_PROGRAM), str(csv),
               str(chains), str(warmup), str(draws), str(seed)]
        run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        print(f"stan: failed ({run.stderr.strip().splitlines()[-1:]}); skipped")
        return None
    out = json.loads(run.stdout.strip().splitlines()[-1])
    out["seconds"] = out["warmup_seconds"] + out["sampling_seconds"]
    out["ess_per_second_stan_clock"] = out["min_ess_bulk"] / out["seconds"]
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-stan", action="store_true")
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / f"posterior-{datetime.date.today()}.json")
    a = ap.parse_args(argv)
    jx = time_jaxhlm(a.chains, a.warmup, a.draws, a.reps)
    jx["second_process"] = time_second_process(a.chains, a.warmup, a.draws)
    stan = None if a.no_stan else time_stan(a.chains, a.warmup, a.draws)
    result = {"date": str(datetime.date.today()), "machine": platform.processor() or platform.machine(),
              "command": "python benchmarks/posterior.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "jaxhlm": jx, "stan": stan}
    print(f"sleepstudy posterior, {a.chains} chains x ({a.warmup} warm-up + {a.draws} draws)")
    print(f"  jaxhlm: compile {jx['compile_seconds']:.1f} s; warm-up + sampling {jx['median_seconds']:.2f} s "
          f"(median of {a.reps}; CPU time {jx['median_cpu_seconds']:.2f} s); "
          f"min bulk ESS/s {jx['median_ess_per_second']:.0f}")
    second = jx["second_process"]
    print(f"  jaxhlm, second process (17 subjects, same cache): first run {second['first_run_seconds']:.2f} s "
          f"(loading the stored chains {second['compile']:.2f} s), whole process {second['process_seconds']:.2f} s")
    if stan:
        ratio = jx["median_ess_per_second"] / stan["ess_per_second_stan_clock"]
        result["ratio_ess_per_second"] = ratio
        print(f"  Stan:   compile {stan['compile_seconds']:.1f} s; warm-up + sampling {stan['seconds']:.2f} s "
              f"(Stan's clock; sampling() wall {stan['sample_seconds']:.1f} s); min bulk ESS/s "
              f"{stan['ess_per_second_stan_clock']:.0f}")
        print(f"  ratio (jaxhlm / Stan, ESS per second): {ratio:.1f}x")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {a.out}")
    return result


if __name__ == "__main__":
    main()
