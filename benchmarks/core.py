#!/usr/bin/env python
"""jaxhlm's core benchmark: speed of one fit, of the first fit in a fresh process, and of
InstEval, side by side with lme4 (R) and statsmodels MixedLM, all in ONE run.

    python benchmarks/core.py [--quick] [--out benchmarks/results/core-DATE.json]

What it measures (see benchmarks/README.md for what each figure means):

1. sleepstudy ``Reaction ~ Days + (Days | Subject)``, REML, one fit after compilation:
   (a) ``model.fit()`` on a prebuilt model, (b) ``jaxhlm.LMM(formula, df).fit()`` (model building
   included; lme4's figure is the whole ``lmer()`` call, so this is the like-for-like one),
   (c) the jitted kernel ``jaxhlm.fitting.fit_blocks`` alone. Each: 3 warm-ups, then the
   median of ``--reps`` (default 50) ``time.perf_counter`` timings. Versus lme4
   (``peers.time_lme4("sleepstudy_reml")``) and statsmodels (``peers.time_statsmodels``);
   ratios are peer_time / jaxhlm_time (above 1: jaxhlm is faster).
2. The first sleepstudy fit in a FRESH process, compilation included: ``python -c`` children that
   import jaxhlm, load the data, build the model and fit, reporting their own import / load /
   build / fit times; the child's whole wall time is measured from outside. Per repetition: a
   NEW empty cache dir (cold persistent cache), then a second process on the same dir (warm
   cache); plus one process with the cache off (``JAXHLM_COMPILATION_CACHE=0``).
3. InstEval ML ``y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)`` (73,421 obs) in a
   fresh child with a cold cache dir: build + first fit (compilation included), the child's
   peak RSS (``os.wait4`` rusage), the objective; then a second fit in the same child (the fit
   without compilation). Versus lme4's time, objective and (when measurable) peak RSS.
   Skipped with ``--quick``.

Peers missing (no R / lme4, no statsmodels) are reported as such and the run goes on.
Writes one JSON file (default ``benchmarks/results/core-DATE.json``) and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import gzip
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
from jaxhlm.tools import peers  # noqa: E402

SLEEP_FORMULA = "Reaction ~ Days + (Days | Subject)"
INSTEVAL_FORMULA = "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)"
# lme4 reference objectives (shared/ANCHORS.md, tests/reference)
REF_OBJECTIVE = {"sleepstudy_reml": 1743.6283, "insteval_ml": 237651.78}
TARGETS = {
    "sleepstudy_speedup_vs_lme4": 5.0,      # jaxhlm one fit <= 1/5 of lme4's time
    "fresh_first_fit_cold_s": 5.0,           # first fit in a fresh process, cold cache
    "fresh_first_fit_warm_cache_s": 1.5,     # same, persistent cache warm
    "insteval_speedup_vs_lme4": 4.0,         # InstEval compile-included <= 1/4 of lme4's time
    "insteval_peak_rss_bytes": 3e9,          # peak memory < 3 GB
}

# The code a fresh child runs: argv = [-c, dataset, formula, reml|ml, n_fits].
CHILD = r"""
import time
t0 = time.perf_counter()
import json, sys
import jax, jaxhlm
def vm_hwm():  # this process's peak RSS (VmHWM: its own address space, fresh at exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
t1 = time.perf_counter()
df = jaxhlm.datasets.load(sys.argv[1])
t2 = time.perf_counter()
model = jaxhlm.LMM(sys.argv[2], df)
t3 = time.perf_counter()
res = model.fit(reml=sys.argv[3] == "reml")
t4 = time.perf_counter()
out = {"import_s": t1 - t0, "load_s": t2 - t1, "build_s": t3 - t2, "first_fit_s": t4 - t3,
       "build_plus_first_fit_s": t4 - t2, "in_process_total_s": t4 - t0,
       "peak_rss_after_first_fit_bytes": vm_hwm(),
       "objective": res.objective, "iterations": res.iterations, "converged": bool(res.converged),
       "sigma": res.sigma, "nobs": res.nobs, "trace_count": jaxhlm.fitting.trace_count(),
       "cache_dir": jax.config.jax_compilation_cache_dir or None}
if int(sys.argv[4]) > 1:
    t5 = time.perf_counter()
    res2 = model.fit(reml=sys.argv[3] == "reml")
    out["second_fit_s"] = time.perf_counter() - t5
    out["second_fit_objective"] = res2.objective
out["peak_rss_bytes"] = vm_hwm()
print(json.dumps(out), flush=True)
"""


# ---------------------------------------------------------------------------------------------
# helpers

def summarize(times):
    times = [float(t) for t in times]
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {"median_seconds": statistics.median(times), "min_seconds": min(times),
            "mean_seconds": statistics.fmean(times), "q1_seconds": q[0], "q3_seconds": q[2],
            "n": len(times), "times_seconds": times}


def time_reps(f, reps, warmup=3, traces=lambda: 0):
    """Median etc. of ``reps`` timings of f() after ``warmup`` calls; ``traces()`` (a compilation
    counter) is read around both, to show that the timed calls compiled nothing."""
    n0 = traces()
    for _ in range(warmup):
        f()
    n1 = traces()
    gc.collect()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return {**summarize(times), "compilations_in_warmup": n1 - n0, "compilations_in_timed_reps": traces() - n1}


def child_env(cache_setting):
    env = dict(os.environ)
    # A user-level JAX cache setting would override jaxhlm's choice and spoil the cold/warm runs.
    for k in list(env):
        if k.startswith("JAX_COMPILATION_CACHE") or k.startswith("JAX_PERSISTENT_CACHE"):
            env.pop(k)
    env["JAXHLM_COMPILATION_CACHE"] = cache_setting
    return env


def run_child(args, env, timeout=1800):
    """Run ``python -c CHILD args`` and return its JSON plus the wall time measured from outside
    and the child's own rusage (os.wait4: this child only, not all children)."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE,
                             stderr=err, env=env, cwd=tempfile.gettempdir())
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        try:
            out = p.stdout.read()
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
            p.stdout.close()
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"child {args[:1]} exited {p.returncode}:\n"
                               f"{err.read().decode(errors='replace')[-3000:]}")
    res = json.loads(out.decode().strip().splitlines()[-1])
    # ru_maxrss of a child on Linux also counts the pages it shared with this (forked) parent
    # before exec, so it is at least this parent's RSS; the child's own VmHWM is the figure used.
    res.update(process_wall_s=wall, wait4_ru_maxrss_bytes=ru.ru_maxrss * 1024,
               child_user_s=ru.ru_utime, child_sys_s=ru.ru_stime, child_cpu_s=ru.ru_utime + ru.ru_stime)
    return res


def _proc_bytes(path, key):
    """A ``key: N kB`` line of a /proc file, in bytes (None where there is no /proc)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None


def own_peak_rss():
    return _proc_bytes("/proc/self/status", "VmHWM")


def source_fingerprint():
    """Which jaxhlm was measured: git HEAD, whether jaxhlm/ differs from it, and a hash of the
    package's source files (read at the start and the end of the run, to catch edits mid-run)."""
    import hashlib
    import jaxhlm
    pkg = Path(jaxhlm.__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(pkg.rglob("*.py")):
        h.update(str(f.relative_to(pkg)).encode()); h.update(f.read_bytes())
    out = {"package_dir": str(pkg), "source_sha256": h.hexdigest()[:16], "git_head": None, "git_dirty": None}
    try:
        git = lambda *a: subprocess.run(["git", "-C", str(pkg.parent), *a], capture_output=True, text=True,
                                        timeout=30).stdout.strip()
        out["git_head"] = git("rev-parse", "--short", "HEAD") or None
        out["git_dirty"] = bool(git("status", "--porcelain", "--", str(pkg)))
    except (OSError, subprocess.SubprocessError):
        pass
    return out


class Contention:
    """CPU time that OTHER processes used on this machine while a section ran: the machine's busy
    time from /proc/stat minus this process's and its (waited-for) children's CPU time. On a
    shared 2-core box another job's compile or fit can slow jaxhlm's figures many-fold; a section
    with a large ``other_cpu_share`` should be measured again on a quiet machine."""

    def __init__(self):
        self.sections = {}

    @staticmethod
    def _snap():
        try:
            v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
            busy = (v[0] + v[1] + v[2] + v[5] + v[6]) / os.sysconf("SC_CLK_TCK")  # user nice system irq softirq
        except (OSError, ValueError, IndexError):
            busy = None
        own = sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                  for f in ("ru_utime", "ru_stime"))
        return time.perf_counter(), busy, own

    def start(self):
        return self._snap()

    def stop(self, name, s0):
        t1, b1, o1 = self._snap()
        t0, b0, o0 = s0
        wall = t1 - t0
        other = None if b0 is None else max(0.0, (b1 - b0) - (o1 - o0))
        self.sections[name] = {"wall_s": wall, "own_cpu_s": o1 - o0, "other_cpu_s": other,
                               "other_cpu_share": None if other is None else other / (wall * (os.cpu_count() or 1))}


def n_files(d):
    return sum(len(fs) for _, _, fs in os.walk(d))


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def mem_total_bytes():
    return _proc_bytes("/proc/meminfo", "MemTotal")


def version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def r_versions():
    """R and lme4 versions without running a benchmark (None where missing)."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        return None, None
    try:
        p = subprocess.run([rscript, "-e", "cat(R.version.string, '\\n'); "
                            "cat(tryCatch(as.character(packageVersion('lme4')), error = function(e) 'NA'))"],
                           capture_output=True, text=True, timeout=120)
        r, lme4 = (p.stdout.strip().splitlines() + ["", ""])[:2]
        return r or None, (None if lme4 in ("", "NA") else lme4)
    except (OSError, subprocess.SubprocessError):
        return None, None


def resolve_datadir(arg, tmp):
    """The peers read CSVs; use --datadir, else ../shared/data, else the CSVs bundled with jaxhlm."""
    for d in ([Path(arg)] if arg else []) + [REPO.parent / "shared" / "data"]:
        if (d / "sleepstudy.csv").exists() and (d / "InstEval.csv").exists():
            return d.resolve(), "given" if arg else "shared"
    import jaxhlm.datasets
    out = Path(tmp) / "data"
    out.mkdir()
    for name in ("sleepstudy", "InstEval"):
        with (jaxhlm.datasets._DATA / f"{name}.csv.gz").open("rb") as fh:
            (out / f"{name}.csv").write_bytes(gzip.decompress(fh.read()))
    return out, "bundled with jaxhlm"


def strip_times(d):
    return None if d is None else {k: v for k, v in d.items() if k not in ("times_seconds", "lmer_times_seconds")}


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def fmt_s(x):
    if x is None:
        return "—"
    return f"{x * 1e3:.2f} ms" if x < 1 else f"{x:.2f} s"


def fmt_r(x):
    return "—" if x is None else f"{x:.2f}x"


# ---------------------------------------------------------------------------------------------
# the three parts

def part_insteval(datadir, log):
    out = {"formula": INSTEVAL_FORMULA, "reml": False}
    # lme4 first: then RUSAGE_CHILDREN's ru_maxrss (the largest child waited for so far) is the R
    # process's peak RSS, provided it rose during the call and exceeds this parent's own peak
    # (a forked child's ru_maxrss starts from the parent's RSS at fork).
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    log("InstEval: lme4 (1 fit, ~20 s) ...")
    lme4 = peers.time_lme4("insteval_ml", 1, datadir)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    parent = own_peak_rss() or 0
    if lme4 is None:
        log("InstEval: lme4 not available; going on without it")
    else:
        ok = after > before and after > parent
        lme4["peak_rss_bytes"] = after if ok else None
        lme4["peak_rss_note"] = ("ru_maxrss of the R child (RUSAGE_CHILDREN), above this parent's own peak"
                                 if ok else "not measurable: an earlier child or this parent was larger")
    out["lme4"] = strip_times(lme4)

    log("InstEval: jaxhlm in a fresh process, cold cache (~20 s) ...")
    with tempfile.TemporaryDirectory(prefix="jaxhlm-bench-cache-") as cache:
        j = run_child(["InstEval", INSTEVAL_FORMULA, "ml", "2"], child_env(cache))
        j["cache_files_written"] = n_files(cache)
    out["jaxhlm"] = j
    lt = lme4["median_seconds"] if lme4 else None
    out["speedup_vs_lme4_build_plus_first_fit"] = ratio(lt, j["build_plus_first_fit_s"])
    out["speedup_vs_lme4_process_wall"] = ratio(lt, j["process_wall_s"])
    out["speedup_vs_lme4_second_fit"] = ratio(lt, j.get("second_fit_s"))
    out["objective_diff_vs_lme4"] = None if lme4 is None else j["objective"] - lme4["objective"]
    out["objective_diff_vs_reference"] = j["objective"] - REF_OBJECTIVE["insteval_ml"]
    return out


def part_sleepstudy_one_fit(datadir, reps, log):
    import jax
    import jaxhlm
    from jaxhlm.fitting import fit_blocks

    df = jaxhlm.datasets.load("sleepstudy")
    model = jaxhlm.LMM(SLEEP_FORMULA, df)
    out = {"formula": SLEEP_FORMULA, "reml": True, "warmup": 3, "reps": reps}

    log(f"sleepstudy: jaxhlm (a) model.fit(), {reps} reps ...")
    tc = jaxhlm.fitting.trace_count
    a = time_reps(lambda: model.fit(reml=True), reps, traces=tc)
    log(f"sleepstudy: jaxhlm (b) LMM(formula, df).fit(), {reps} reps ...")
    b = time_reps(lambda: jaxhlm.LMM(SLEEP_FORMULA, df).fit(reml=True), reps, traces=tc)
    log(f"sleepstudy: jaxhlm (c) fit_blocks kernel, {reps} reps ...")
    # Called as the brief of this benchmark names it; note that jax.jit keys its cache on how the
    # arguments are passed, so this (options left to its default) compiles once more than fit().
    c = time_reps(lambda: jax.block_until_ready(fit_blocks(model.blocks, model.structure, True)), reps,
                  traces=tc)
    log("sleepstudy: jaxhlm LMM(formula, df) build alone, for the breakdown ...")
    build = time_reps(lambda: jaxhlm.LMM(SLEEP_FORMULA, df), reps)
    res = model.fit(reml=True)
    out["jaxhlm"] = {
        "fit_prebuilt": a, "build_and_fit": b, "kernel_fit_blocks": c, "build_only": build,
        "objective": res.objective, "iterations": res.iterations, "evaluations": res.evaluations,
        "converged": bool(res.converged), "sigma": res.sigma,
    }

    log(f"sleepstudy: lme4, {reps} reps ...")
    lme4 = peers.time_lme4("sleepstudy_reml", reps, datadir)
    if lme4 is None:
        log("sleepstudy: lme4 not available; going on without it")
    log(f"sleepstudy: statsmodels, {reps} reps ...")
    sm = peers.time_statsmodels("sleepstudy_reml", reps, datadir)
    if sm is None:
        log("sleepstudy: statsmodels not available; going on without it")
    out["lme4"], out["statsmodels"] = strip_times(lme4), strip_times(sm)
    for peer, d in (("lme4", lme4), ("statsmodels", sm)):
        pt = d["median_seconds"] if d else None
        out[f"speedup_vs_{peer}"] = {k: ratio(pt, v["median_seconds"]) for k, v in
                                     (("fit_prebuilt", a), ("build_and_fit", b), ("kernel_fit_blocks", c))}
    return out


def part_fresh_process(reps, log):
    out = {"formula": SLEEP_FORMULA, "reml": True, "runs": []}
    args = ["sleepstudy", SLEEP_FORMULA, "reml", "2"]
    for i in range(reps):
        with tempfile.TemporaryDirectory(prefix="jaxhlm-bench-cache-") as cache:
            log(f"fresh process {i + 1}/{reps}: cold cache ...")
            cold = run_child(args, child_env(cache))
            cold["cache_files_written"] = n_files(cache)
            log(f"fresh process {i + 1}/{reps}: warm cache ...")
            warm = run_child(args, child_env(cache))
        out["runs"].append({"cold_cache": cold, "warm_cache": warm})
    log("fresh process: cache disabled ...")
    out["cache_off"] = run_child(args, child_env("0"))
    for mode in ("cold_cache", "warm_cache"):
        out[f"{mode}_median"] = {k: statistics.median(r[mode][k] for r in out["runs"]) for k in
                                 ("import_s", "load_s", "build_s", "first_fit_s", "second_fit_s",
                                  "in_process_total_s", "process_wall_s", "child_cpu_s", "peak_rss_bytes")}
    return out


# ---------------------------------------------------------------------------------------------

def targets(res):
    t = {}
    ss = res.get("sleepstudy_one_fit", {})
    sp = ss.get("speedup_vs_lme4") or {}
    if sp.get("build_and_fit") is not None:
        for k in ("build_and_fit", "fit_prebuilt", "kernel_fit_blocks"):
            t[f"sleepstudy one fit, {k}: lme4/jaxhlm >= 5"] = {
                "value": sp[k], "met": sp[k] >= TARGETS["sleepstudy_speedup_vs_lme4"]}
    fp = res.get("fresh_process", {})
    for mode, lim in (("cold_cache", TARGETS["fresh_first_fit_cold_s"]),
                      ("warm_cache", TARGETS["fresh_first_fit_warm_cache_s"])):
        m = fp.get(f"{mode}_median")
        if m:
            t[f"fresh process, {mode}: first fit < {lim} s"] = {"value": m["first_fit_s"], "met": m["first_fit_s"] < lim}
            t[f"fresh process, {mode}: whole process wall < {lim} s"] = {
                "value": m["process_wall_s"], "met": m["process_wall_s"] < lim}
    ie = res.get("insteval")
    if ie:
        s = ie["speedup_vs_lme4_build_plus_first_fit"]
        if s is not None:
            t["InstEval build + first fit (compile included): lme4/jaxhlm >= 4"] = {
                "value": s, "met": s >= TARGETS["insteval_speedup_vs_lme4"]}
        rss = ie["jaxhlm"]["peak_rss_bytes"]
        t["InstEval peak RSS < 3 GB"] = {"value": rss, "met": rss < TARGETS["insteval_peak_rss_bytes"]}
    return t


def print_report(res):
    P = print
    P()
    P(f"jaxhlm core benchmark  {res['date']}  {res['machine']['cpu_model']} x{res['machine']['logical_cpus']}, "
      f"devices {res['machine']['jax_devices']}")
    v = res["versions"]
    P("versions: " + ", ".join(f"{k} {v[k]}" for k in v if v[k]))
    src = res["jaxhlm_source_at_start"]
    P(f"jaxhlm source: git {src['git_head']}{' + uncommitted changes' if src['git_dirty'] else ''}, "
      f"sha256 {src['source_sha256']}"
      + ("   WARNING: jaxhlm's source changed during the run" if res.get("jaxhlm_source_changed_during_run") else ""))
    ss = res.get("sleepstudy_one_fit")
    if ss:
        P()
        P(f"1. sleepstudy REML, one fit after compilation (median of {ss['reps']}; ratio = peer / jaxhlm)")
        P(f"   {'':34s} {'median':>10s} {'min':>10s} {'lme4/this':>10s} {'sm/this':>10s}")
        for k, label in (("fit_prebuilt", "jaxhlm (a) model.fit()"),
                         ("build_and_fit", "jaxhlm (b) LMM(f, df).fit()"),
                         ("kernel_fit_blocks", "jaxhlm (c) fit_blocks kernel")):
            d = ss["jaxhlm"][k]
            P(f"   {label:34s} {fmt_s(d['median_seconds']):>10s} {fmt_s(d['min_seconds']):>10s} "
              f"{fmt_r(ss['speedup_vs_lme4'][k]):>10s} {fmt_r(ss['speedup_vs_statsmodels'][k]):>10s}")
        for peer, label in (("lme4", "lme4 lmer() (bobyqa)"), ("statsmodels", "statsmodels MixedLM build+fit")):
            d = ss[peer]
            if d:
                P(f"   {label:34s} {fmt_s(d['median_seconds']):>10s} {fmt_s(d['min_seconds']):>10s}")
            else:
                P(f"   {label:34s} not available")
        jj = ss["jaxhlm"]
        P(f"   jaxhlm LMM(f, df) build alone: median {fmt_s(jj['build_only']['median_seconds'])}; compilations "
          f"in warm-ups (a)/(b)/(c): {jj['fit_prebuilt']['compilations_in_warmup']}/"
          f"{jj['build_and_fit']['compilations_in_warmup']}/{jj['kernel_fit_blocks']['compilations_in_warmup']}, "
          f"in timed reps: {jj['fit_prebuilt']['compilations_in_timed_reps']}/"
          f"{jj['build_and_fit']['compilations_in_timed_reps']}/{jj['kernel_fit_blocks']['compilations_in_timed_reps']}")
        P(f"   objective: jaxhlm {ss['jaxhlm']['objective']:.6f} ({ss['jaxhlm']['iterations']} iterations), "
          f"lme4 {ss['lme4']['objective'] if ss['lme4'] else '—'}, "
          f"statsmodels {ss['statsmodels']['objective'] if ss['statsmodels'] else '—'}")
    fp = res.get("fresh_process")
    if fp:
        P()
        P(f"2. sleepstudy first fit in a fresh process (median of {len(fp['runs'])} runs; cache-off: 1 run)")
        P(f"   {'':22s} {'import':>9s} {'build':>9s} {'1st fit':>9s} {'2nd fit':>9s} {'process':>9s} "
          f"{'proc CPU':>9s} {'peak RSS':>9s}")
        rows = [("cold cache (new dir)", fp["cold_cache_median"]), ("warm cache (same dir)", fp["warm_cache_median"]),
                ("cache off", fp["cache_off"])]
        for label, m in rows:
            P(f"   {label:22s} {fmt_s(m['import_s']):>9s} {fmt_s(m['build_s']):>9s} {fmt_s(m['first_fit_s']):>9s} "
              f"{fmt_s(m['second_fit_s']):>9s} {fmt_s(m['process_wall_s']):>9s} {fmt_s(m['child_cpu_s']):>9s} "
              f"{m['peak_rss_bytes'] / 2**20:>6.0f} MiB")
    ie = res.get("insteval")
    if ie:
        j, l = ie["jaxhlm"], ie["lme4"]
        P()
        P("3. InstEval ML, fresh process, cold cache (compilation included)")
        P(f"   jaxhlm: build {fmt_s(j['build_s'])} + first fit {fmt_s(j['first_fit_s'])} = "
          f"{fmt_s(j['build_plus_first_fit_s'])}; process wall {fmt_s(j['process_wall_s'])}, CPU "
          f"{fmt_s(j['child_cpu_s'])} (incl. import, load "
          f"and a 2nd fit of {fmt_s(j.get('second_fit_s'))}); peak RSS {j['peak_rss_bytes'] / 2**30:.2f} GiB; "
          f"objective {j['objective']:.4f} ({j['iterations']} iterations, converged {j['converged']})")
        if l:
            rss = "—" if l.get("peak_rss_bytes") is None else f"{l['peak_rss_bytes'] / 2**30:.2f} GiB"
            P(f"   lme4:   lmer() {fmt_s(l['median_seconds'])}; peak RSS {rss}; objective {l['objective']:.4f}")
            P(f"   lme4/jaxhlm: build+first fit {fmt_r(ie['speedup_vs_lme4_build_plus_first_fit'])}, "
              f"whole process {fmt_r(ie['speedup_vs_lme4_process_wall'])}, "
              f"2nd fit {fmt_r(ie['speedup_vs_lme4_second_fit'])}; "
              f"objective jaxhlm - lme4 = {ie['objective_diff_vs_lme4']:.3g}")
        else:
            P("   lme4: not available")
    P()
    P("CPU used by OTHER processes on this machine during each part (share of all cores):")
    P("   " + ", ".join(f"{k} {fmt_s(d['other_cpu_s'])} ({100 * d['other_cpu_share']:.0f}%)"
                        for k, d in res.get("contention", {}).items() if d["other_cpu_s"] is not None))
    if any((d["other_cpu_share"] or 0) > 0.1 for d in res.get("contention", {}).values()):
        P("   WARNING: other jobs used more than 10% of the CPU during a part: its figures are inflated; "
          "measure again on a quiet machine")
    P()
    P("Targets")
    for k, d in res["targets"].items():
        val = d["value"]
        sval = f"{val / 2**30:.2f} GiB" if "RSS" in k else (fmt_r(val) if "lme4/" in k else fmt_s(val))
        P(f"   [{'MET' if d['met'] else 'NOT MET':7s}] {k}: {sval}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="skip InstEval; one fresh-process repetition")
    ap.add_argument("--out", help="JSON output (default benchmarks/results/core-DATE[-quick].json)")
    ap.add_argument("--reps", type=int, default=50, help="timed sleepstudy fits per variant and peer (>= 50)")
    ap.add_argument("--fresh-reps", type=int, default=None,
                    help="cold/warm fresh-process pairs (default 3, 1 with --quick)")
    ap.add_argument("--datadir", help="CSV data for the peers (default ../shared/data, else jaxhlm's bundled data)")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                    help="first wait up to SECONDS for a 20-s window in which other processes use < 5%% "
                         "of the CPU (shared machines); the run goes on regardless afterwards")
    args = ap.parse_args(argv)
    fresh_reps = args.fresh_reps or (1 if args.quick else 3)
    t_start = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t_start:7.1f} s] {msg}", file=sys.stderr, flush=True)

    # The parent's own fits (part 1) run with jaxhlm's persistent cache OFF, so that nothing
    # depends on what ~/.cache/jaxhlm/xla holds (warm-ups compile). The children set their own.
    parent_cache_env = os.environ.get("JAXHLM_COMPILATION_CACHE")
    os.environ["JAXHLM_COMPILATION_CACHE"] = "0"
    import jax
    import jaxlib
    import jaxhlm

    now = _dt.datetime.now().astimezone()
    r_version, lme4_version = r_versions()
    res = {
        "benchmark": "jaxhlm core", "date": now.date().isoformat(), "datetime": now.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "quick": args.quick,
        "machine": {"cpu_model": cpu_model(), "logical_cpus": os.cpu_count(),
                    "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                    "mem_total_bytes": mem_total_bytes(), "platform": platform.platform(),
                    "jax_devices": [str(d) for d in jax.devices()],
                    "jax_device_kinds": [getattr(d, "device_kind", None) for d in jax.devices()],
                    "jax_backend": jax.default_backend()},
        "versions": {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
                     "jaxhlm": jaxhlm.__version__, "numpy": version("numpy"), "pandas": version("pandas"),
                     "R": r_version, "lme4": lme4_version, "statsmodels": version("statsmodels")},
        "jaxhlm_source_at_start": source_fingerprint(),
        "parent_process_compilation_cache": jax.config.jax_compilation_cache_dir or None,
        "parent_env_JAXHLM_COMPILATION_CACHE_before_override": parent_cache_env,
        "loadavg_at_start": os.getloadavg(),
        "targets_definition": TARGETS, "reference_objectives": REF_OBJECTIVE,
    }
    if r_version is None or lme4_version is None:
        log("lme4: R or lme4 not installed; lme4 figures will be missing")
    if res["versions"]["statsmodels"] is None:
        log("statsmodels: not installed; statsmodels figures will be missing")

    if args.wait_quiet > 0:
        deadline, cont = time.perf_counter() + args.wait_quiet, Contention()
        while True:
            c0 = cont.start(); time.sleep(20); cont.stop("wait", c0)
            share = cont.sections["wait"]["other_cpu_share"]
            if share is None or share < 0.05 or time.perf_counter() > deadline:
                break
            log(f"waiting for a quiet machine: other processes used {100 * share:.0f}% of the CPU")
        res["other_cpu_share_before_start"] = share
        log(f"starting; other processes used {100 * (share or 0):.0f}% of the CPU in the last 20 s")
    with tempfile.TemporaryDirectory(prefix="jaxhlm-bench-") as tmp:
        datadir, source = resolve_datadir(args.datadir, tmp)
        res["peer_datadir"], res["peer_data_source"] = str(datadir), source
        # InstEval first: the box is quiet, and lme4's peak RSS can be read from RUSAGE_CHILDREN.
        cont = Contention()
        if not args.quick:
            c0 = cont.start()
            res["insteval"] = part_insteval(datadir, log)
            cont.stop("insteval", c0)
        c0 = cont.start()
        res["sleepstudy_one_fit"] = part_sleepstudy_one_fit(datadir, args.reps, log)
        cont.stop("sleepstudy_one_fit", c0)
        c0 = cont.start()
        res["fresh_process"] = part_fresh_process(fresh_reps, log)
        cont.stop("fresh_process", c0)
        res["contention"] = cont.sections
    res["targets"] = targets(res)
    res["loadavg_at_end"] = os.getloadavg()
    res["jaxhlm_source_at_end"] = source_fingerprint()
    res["jaxhlm_source_changed_during_run"] = (res["jaxhlm_source_at_end"]["source_sha256"]
                                               != res["jaxhlm_source_at_start"]["source_sha256"])
    res["total_benchmark_seconds"] = time.perf_counter() - t_start

    out = Path(args.out) if args.out else HERE / "results" / f"core-{res['date']}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print_report(res)
    print(f"\nwrote {out}  ({res['total_benchmark_seconds']:.0f} s in all)")


if __name__ == "__main__":
    main()
