"""Helper of ``benchmarks/gpu.sh``: the GPU machine's environment report, the reference check
(lme4's reference fits on the GPU and on the CPU), the grid's reduced configs, and the summary.

Standard library only at the top level, so that every subcommand that does not fit a model
runs (and reports) even where jax, pandas, formulaic, ... are missing; jax and jaxhlm are
imported only in the fitting child processes.  jaxhlm is used only through its public API
(``jaxhlm.datasets.load``, ``jaxhlm.LMM(formula, df).fit(reml=...)``, ``res.simulate``,
``model.fit_many``) and the bench only through ``python -m jaxhlm bench`` (gpu.sh).

    python benchmarks/gpu_check.py env                      # versions, devices, dependencies (stdout)
    python benchmarks/gpu_check.py reference OUTDIR [--budget S] [--smoke] [--models a,b]
        # writes OUTDIR/reference.json and OUTDIR/reference.txt; exit 0 = every comparison
        # passed, 1 = a comparison failed or could not be made, 2 = no GPU (GPU side not run;
        # the CPU side against lme4 passed), 3 = jaxhlm could not be imported on either side
    python benchmarks/gpu_check.py grid-plan OUTDIR --source TOML --mode reduced|split|whole
        # writes the grid's part configs OUTDIR/grid/configs/*.toml and OUTDIR/grid/plan.tsv
    python benchmarks/gpu_check.py grid-merge OUTDIR        # OUTDIR/grid/grid-all.csv (+ rows from killed parts' logs)
    python benchmarks/gpu_check.py summary OUTDIR           # OUTDIR/SUMMARY.md

The reference check runs two children at once (``_child``): "gpu" (JAX's default platform,
which must be a GPU) and "cpu" (``JAX_PLATFORMS=cpu``).  Each fits every model of
``tests/reference/*.json`` (InstEval last and only while time is left), times the first fit
(compilation included) and a refit, and fits ``model.fit_many(Y)`` for the same ``nsim``
simulated sleepstudy responses (simulated once, by the CPU child after its reference fits,
from its REML fit).
Each child saves its results after every step, so a child killed at the deadline still
leaves what it finished.  ``GPU_CHECK_FAKE_GPU=1`` (testing on a machine without a GPU)
runs the "gpu" child on the CPU too, labelled as fake.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO / "tests" / "reference"
OPTIONAL = ("insteval_ml",)  # fitted last, only while time is left; skipping it is no failure
GPU_CPU_TOL = 1e-8  # |GPU - CPU| <= GPU_CPU_TOL * (1 + |objective|)
LME4_TOL = 1e-6  # |objective - lme4| / |lme4| <= LME4_TOL (tests/test_reference.py's tolerance)
BATCH_FORMULA = "Reaction ~ Days + (Days | Subject)"
DEPENDENCIES = ("numpy", "scipy", "pandas", "formulaic", "optax", "numpyro", "filelock", "ml_dtypes", "jax",
                "jaxlib", "tomli", "matplotlib", "statsmodels")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, obj) -> None:
    """Write atomically (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str, allow_nan=True))
    os.replace(tmp, path)


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0][:400]


# ---------------------------------------------------------------------------------- env
def cmd_env(args) -> int:
    import importlib.metadata
    import importlib.util
    import platform

    print(f"python: {sys.version.split()[0]} ({sys.executable}); platform {platform.platform()}")
    print(f"cpus: {os.cpu_count()}")
    print("dependencies (installed version, or MISSING):")
    for dist in DEPENDENCIES:
        mod = dist
        found = importlib.util.find_spec(mod) is not None
        try:
            ver = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            ver = "(no metadata)" if found else None
        note = {"tomli": " (needed only on Python < 3.11)", "matplotlib": " (plots only; gpu.sh uses --no-plots)",
                "statsmodels": " (a bench peer; optional)"}.get(dist, "")
        print(f"  {dist:12s} {ver if found else 'MISSING'}{note}")
    try:
        import jax
        import jaxlib

        print(f"jax {jax.__version__}, jaxlib {jaxlib.__version__} (jaxhlm pins 0.9.2)")
        print(f"jax.default_backend(): {jax.default_backend()}")
        print(f"jax.devices(): {jax.devices()}")
        for d in jax.devices():
            print(f"  {d}: platform={d.platform} device_kind={getattr(d, 'device_kind', '?')}")
    except Exception as e:  # noqa: BLE001  (reported, not raised)
        print(f"jax: FAILED: {_err(e)}")
    try:
        import jaxhlm

        print(f"jaxhlm {getattr(jaxhlm, '__version__', '?')} imported from {jaxhlm.__file__}")
    except Exception as e:  # noqa: BLE001
        print(f"import jaxhlm: FAILED: {_err(e)}")
    return 0


# ---------------------------------------------------------------------------- reference
def reference_names(models: str | None) -> list[str]:
    names = sorted(p.stem for p in REFERENCE_DIR.glob("*.json"))
    if models:
        wanted = [m.strip() for m in models.split(",") if m.strip()]
        unknown = [m for m in wanted if m not in names]
        if unknown:
            raise SystemExit(f"unknown reference models {unknown}; have {names}")
        names = wanted
    # the optional (large) ones last
    return [n for n in names if n not in OPTIONAL] + [n for n in names if n in OPTIONAL]


def _child(spec: dict) -> int:
    """One platform's fits (runs in its own process; see the module docstring)."""
    role, deadline = spec["role"], spec["deadline"]
    path, work = Path(spec["out"]), Path(spec["work"])
    out = {"role": role, "status": "starting", "started_utc": _now(), "models": {}, "batch": None,
           "fake_gpu": bool(spec.get("fake_gpu")), "pid": os.getpid()}
    save = lambda: _write_json(path, out)  # noqa: E731
    save()
    try:
        import numpy as np
        import jax
        import jaxlib
    except Exception as e:  # noqa: BLE001
        out.update(status="import_error", error=f"import numpy/jax failed: {_err(e)}")
        save()
        return 0
    out.update(jax=jax.__version__, jaxlib=jaxlib.__version__)
    try:
        backend = jax.default_backend()
        devs = jax.devices()
    except Exception as e:  # noqa: BLE001
        out.update(status="no_gpu" if role == "gpu" else "error", error=f"JAX backend: {_err(e)}")
        save()
        return 0
    dev = devs[0]
    device = f"{dev.platform}:{getattr(dev, 'device_kind', '?')}"
    if out["fake_gpu"]:
        device += " (FAKE GPU: test mode, really the CPU)"
    out.update(backend=backend, devices=[str(d) for d in devs], device=device)
    if role == "gpu" and backend != "gpu" and not out["fake_gpu"]:
        out.update(status="no_gpu", error=f"JAX's default backend is {backend!r} (devices {out['devices']}): no GPU")
        save()
        return 0
    try:
        import jaxhlm
    except Exception as e:  # noqa: BLE001
        out.update(status="import_error", error=f"import jaxhlm failed: {_err(e)}")
        save()
        return 0
    out["jaxhlm_file"] = jaxhlm.__file__
    out["status"] = "running"
    save()
    left = lambda: deadline - time.time()  # noqa: E731
    y_path = work / "batch_Y.npy"
    batch_model = None

    def make_responses():
        nonlocal batch_model
        t = time.perf_counter()
        batch_model = jaxhlm.LMM(BATCH_FORMULA, jaxhlm.datasets.load("sleepstudy"))
        res = batch_model.fit(reml=True)
        Y = np.asarray(res.simulate(spec["nsim"], spec["seed"]), dtype=float)
        with open(y_path.with_name("batch_Y.tmp.npy"), "wb") as fh:
            np.save(fh, Y)
        os.replace(y_path.with_name("batch_Y.tmp.npy"), y_path)
        out["batch_responses"] = {"shape": list(Y.shape), "seconds": time.perf_counter() - t,
                                  "from": f"res.simulate({spec['nsim']}, {spec['seed']}) of the CPU's REML fit"}

    def fit_reference(name):
        need = spec["optional_min_s"] if name in OPTIONAL else spec["min_s"]
        if left() < need:
            out["models"][name] = {"skipped": f"time: {left():.0f} s left < {need:.0f} s"}
            save()
            return
        rec = {"device": device}
        try:
            ref = json.loads((REFERENCE_DIR / f"{name}.json").read_text())
            t = time.perf_counter()
            model = jaxhlm.LMM(ref["formula"], jaxhlm.datasets.load(ref["dataset"]))
            rec["build_s"] = time.perf_counter() - t
            t = time.perf_counter()
            res = model.fit(reml=ref["reml"])
            rec["fit_s"] = time.perf_counter() - t
            rec.update(objective=float(res.objective), theta=[float(v) for v in np.ravel(res.theta)],
                       converged=bool(res.converged))
            out["models"][name] = rec
            save()
            if left() > rec["fit_s"] + 10:
                t = time.perf_counter()
                res2 = model.fit(reml=ref["reml"])
                rec["refit_s"] = time.perf_counter() - t
                rec["refit_objective"] = float(res2.objective)
        except Exception as e:  # noqa: BLE001
            rec["error"] = _err(e)
        out["models"][name] = rec
        save()

    for name in [n for n in spec["models"] if n not in OPTIONAL]:
        fit_reference(name)
    if role == "cpu":  # after the reference fits, so that their first fits include compilation
        try:
            make_responses()
        except Exception as e:  # noqa: BLE001
            out["batch_responses"] = {"error": _err(e)}
        save()
    out["batch"] = _batch(spec, role, left, y_path, work, jaxhlm, np, device, batch_model)
    save()
    for name in [n for n in spec["models"] if n in OPTIONAL]:  # InstEval last, while time is left
        fit_reference(name)
    out["status"] = "done"
    out["finished_utc"] = _now()
    save()
    return 0


def _batch(spec, role, left, y_path, work, jaxhlm, np, device, model) -> dict:
    """fit_many on the shared simulated responses; objectives saved to work/batch_obj_ROLE.npy."""
    rec = {"device": device, "nsim": spec["nsim"]}
    if spec["nsim"] <= 0:
        return {"skipped": "nsim = 0"}
    while not y_path.exists():  # the CPU child writes it after its reference fits
        cpu = _read_json(work / "cpu.json") or {}
        if cpu.get("status") in ("import_error", "error", "done") or "error" in cpu.get("batch_responses", {}):
            return {"error": "the CPU child wrote no simulated responses"}
        if left() < 20:
            return {"skipped": "time: the simulated responses did not come in time"}
        time.sleep(0.5)
    if left() < spec["min_s"]:
        return {"skipped": f"time: {left():.0f} s left"}
    try:
        Y = np.load(y_path)
        if model is None:
            model = jaxhlm.LMM(BATCH_FORMULA, jaxhlm.datasets.load("sleepstudy"))
        t = time.perf_counter()
        b = model.fit_many(Y, True)
        rec["fit_many_s"] = time.perf_counter() - t
        obj = np.asarray(b.objective, dtype=float)
        np.save(work / f"batch_obj_{role}.npy", obj)
        rec.update(n=int(obj.size), nan=int(np.isnan(obj).sum()),
                   converged_fraction=float(np.mean(np.asarray(b.converged))))
        if left() > rec["fit_many_s"] + 10:
            t = time.perf_counter()
            model.fit_many(Y, True)
            rec["refit_many_s"] = time.perf_counter() - t
    except Exception as e:  # noqa: BLE001
        rec["error"] = _err(e)
    return rec


def _kill(p: subprocess.Popen) -> None:
    """End a child we started, and its process group (start_new_session=True)."""
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=5)
    except (ProcessLookupError, subprocess.TimeoutExpired, PermissionError):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def cmd_reference(args) -> int:
    t0 = time.time()
    out_dir = Path(args.out_dir).resolve()
    work = out_dir / "reference-work"
    work.mkdir(parents=True, exist_ok=True)
    for old in list(work.glob("*.json")) + list(work.glob("*.npy")):
        old.unlink()
    nsim = args.nsim if args.nsim is not None else (100 if args.smoke else 400)
    names = reference_names(args.models)
    if args.smoke or args.no_insteval:
        names = [n for n in names if n not in OPTIONAL]
    fake = os.environ.get("GPU_CHECK_FAKE_GPU", "") not in ("", "0")
    deadline = t0 + args.budget - 8  # leaves the parent time to compare and write
    spec = dict(models=names, nsim=nsim, seed=args.seed, deadline=deadline, min_s=8.0,
                optional_min_s=45.0, work=str(work))
    procs = {}
    for role in ("cpu", "gpu"):
        env = dict(os.environ)
        env.setdefault("JAXHLM_COMPILATION_CACHE", "0")  # compile for real: honest first-fit times
        env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        if role == "cpu" or fake:
            env["JAX_PLATFORMS"] = "cpu"
        s = dict(spec, role=role, out=str(work / f"{role}.json"), fake_gpu=fake and role == "gpu")
        log = open(work / f"{role}.log", "w")
        procs[role] = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "_child", json.dumps(s)],
                                       stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO),
                                       start_new_session=True)
        print(f"reference: {role} child started (pid {procs[role].pid}), log {work / (role + '.log')}", flush=True)
    killed = {}
    while any(p.poll() is None for p in procs.values()) and time.time() < deadline + 3:
        time.sleep(0.5)
    for role, p in procs.items():
        if p.poll() is None:
            killed[role] = f"killed at the deadline ({args.budget:.0f} s budget)"
            _kill(p)
    results = {role: (_read_json(work / f"{role}.json") or {"status": "error", "error": "no result file"})
               for role in procs}
    for role, p in procs.items():
        results[role]["exit_code"] = p.returncode
        if role in killed:
            results[role]["killed"] = killed[role]
    report = compare(results, names, work, t0, args, nsim)
    _write_json(out_dir / "reference.json", report)
    (out_dir / "reference.txt").write_text(render(report))
    print(render(report), flush=True)
    return report["exit_code"]


def _rel(a, b):
    return abs(a - b) / abs(b) if b else abs(a - b)


def compare(results: dict, names: list[str], work: Path, t0: float, args, nsim: int) -> dict:
    gpu, cpu = results["gpu"], results["cpu"]
    no_gpu = gpu.get("status") == "no_gpu"
    gpu_ran = not no_gpu  # else every GPU result is expected
    failures, notes, rows = [], [], []
    for side, r in (("GPU", gpu), ("CPU", cpu)):
        if r.get("status") in ("import_error", "error"):
            failures.append(f"{side} side: {r.get('error', r.get('status'))}")
        if r.get("killed"):
            notes.append(f"{side} child {r['killed']}")
    if no_gpu:
        notes.append(f"no GPU: {gpu.get('error', '')}")
    for name in names:
        ref = json.loads((REFERENCE_DIR / f"{name}.json").read_text())
        row = {"name": name, "dataset": ref["dataset"], "formula": ref["formula"], "reml": ref["reml"],
               "lme4_objective": ref["objective"], "optional": name in OPTIONAL}
        g = gpu.get("models", {}).get(name)
        c = cpu.get("models", {}).get(name)
        row["gpu"], row["cpu"] = g, c
        problems = []
        for side, r, ran in (("GPU", g, gpu_ran), ("CPU", c, True)):
            if not ran:
                continue
            side_status = (gpu if side == "GPU" else cpu).get("status")
            if r is None and side_status in ("import_error", "error"):
                problems.append(f"{side}: not fitted ({side_status})")
            elif r is None:
                problems.append(f"{side}: not fitted (child ended or was killed first)")
            elif "skipped" in r:
                problems.append(f"{side}: skipped ({r['skipped']})")
            elif "objective" not in r:
                problems.append(f"{side}: {r.get('error', 'no objective')}")
            else:
                rel = (r["objective"] - ref["objective"]) / abs(ref["objective"])
                row[f"{side.lower()}_vs_lme4_rel"] = rel
                row[f"{side.lower()}_vs_lme4_ok"] = abs(rel) <= LME4_TOL
                if abs(rel) > LME4_TOL:
                    problems.append(f"{side}: objective {r['objective']:.10g} vs lme4 {ref['objective']:.10g} "
                                    f"(relative {rel:+.2e} > {LME4_TOL:g})")
                if not r.get("converged", True):
                    problems.append(f"{side}: not converged")
                if "error" in r:
                    problems.append(f"{side}: refit: {r['error']}")
        if g and c and "objective" in g and "objective" in c:
            d = abs(g["objective"] - c["objective"])
            row["abs_diff_gpu_cpu"] = d
            row["scaled_diff_gpu_cpu"] = d / (1 + abs(c["objective"]))
            row["gpu_cpu_ok"] = d <= GPU_CPU_TOL * (1 + abs(c["objective"]))
            if g.get("theta") and c.get("theta") and len(g["theta"]) == len(c["theta"]):
                row["max_abs_theta_diff"] = max(abs(a - b) for a, b in zip(g["theta"], c["theta"]))
            if not row["gpu_cpu_ok"]:
                problems.append(f"|GPU-CPU| = {d:.3e} > {GPU_CPU_TOL:g} (1 + |objective|)")
        skipped_only = problems and all("skipped" in p or "not fitted" in p for p in problems)
        if not problems:
            row["status"] = "pass" if gpu_ran else "pass (CPU vs lme4 only; no GPU)"
        elif row["optional"] and skipped_only:
            row["status"] = "skipped"
            notes.append(f"{name}: " + "; ".join(problems))
        else:
            row["status"] = "FAIL"
            failures.append(f"{name}: " + "; ".join(problems))
        row["problems"] = problems
        rows.append(row)
    batch = _compare_batch(gpu, cpu, gpu_ran, work, nsim)
    if batch["status"] == "FAIL":
        failures.append("batch: " + "; ".join(batch["problems"]))
    if gpu.get("status") == "import_error" and cpu.get("status") == "import_error" or (
            no_gpu and cpu.get("status") == "import_error"):
        code, verdict = 3, "FAIL: jaxhlm (or jax) could not be imported"
    elif failures:
        code, verdict = 1, "FAIL"
    elif no_gpu or not gpu_ran:
        code, verdict = 2, "NO GPU: the CPU side passed against lme4; GPU comparisons not made"
    else:
        code, verdict = 0, "PASS"
    return {"created_utc": _now(), "elapsed_s": time.time() - t0, "budget_s": args.budget,
            "smoke": bool(args.smoke), "verdict": verdict, "exit_code": code,
            "tolerances": {"gpu_vs_cpu": f"|GPU - CPU| <= {GPU_CPU_TOL:g} * (1 + |CPU objective|)",
                           "vs_lme4": f"|objective - lme4| / |lme4| <= {LME4_TOL:g}"},
            "children_ran_concurrently": True,
            "gpu": {k: v for k, v in gpu.items() if k not in ("models", "batch")},
            "cpu": {k: v for k, v in cpu.items() if k not in ("models", "batch")},
            "models": rows, "batch": batch, "failures": failures, "notes": notes}


def _compare_batch(gpu, cpu, gpu_ran, work, nsim) -> dict:
    out = {"formula": BATCH_FORMULA, "reml": True, "nsim": nsim, "gpu": gpu.get("batch"), "cpu": cpu.get("batch"),
           "responses": cpu.get("batch_responses"), "problems": []}
    try:
        import numpy as np
    except ImportError:
        out.update(status="FAIL", problems=["numpy missing in the parent"])
        return out
    c_path, g_path = work / "batch_obj_cpu.npy", work / "batch_obj_gpu.npy"
    if not c_path.exists():
        out["problems"].append(f"CPU: no batch objectives ({(cpu.get('batch') or {})})")
    if gpu_ran and not g_path.exists():
        out["problems"].append(f"GPU: no batch objectives ({(gpu.get('batch') or {})})")
    if c_path.exists() and g_path.exists():
        c, g = np.load(c_path), np.load(g_path)
        if c.shape != g.shape:
            out["problems"].append(f"shapes differ: GPU {g.shape}, CPU {c.shape}")
        else:
            both = ~np.isnan(c) & ~np.isnan(g)
            scaled = np.abs(g - c)[both] / (1 + np.abs(c[both]))
            out.update(n=int(c.size), nan_gpu=int(np.isnan(g).sum()), nan_cpu=int(np.isnan(c).sum()),
                       nan_mismatch=int((np.isnan(c) != np.isnan(g)).sum()),
                       max_abs_diff=float(np.abs(g - c)[both].max()) if both.any() else None,
                       max_scaled_diff=float(scaled.max()) if both.any() else None,
                       n_over_tol=int((scaled > GPU_CPU_TOL).sum()))
            if out["nan_mismatch"]:
                out["problems"].append(f"{out['nan_mismatch']} fits NaN on one side only")
            if out["n_over_tol"]:
                out["problems"].append(f"{out['n_over_tol']} of {c.size} fits differ by more than "
                                       f"{GPU_CPU_TOL:g} (1 + |objective|); max {out['max_scaled_diff']:.3e}")
    if out["problems"]:
        out["status"] = "FAIL"
    else:
        out["status"] = "pass" if gpu_ran else "not compared (no GPU)"
    return out


def _f(v, fmt):
    """format(v, fmt), or "-" padded to fmt's width when v is missing."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        m = re.match(r"^([<>^]?)[+ -]?(\d+)", fmt)
        if not m:
            return "-"
        return format("-", (m.group(1) or ">") + m.group(2))
    return format(v, fmt)


def render(rep: dict) -> str:
    g, c = rep["gpu"], rep["cpu"]
    lines = [f"jaxhlm reference check, GPU vs CPU vs lme4  ({rep['created_utc']}, {rep['elapsed_s']:.0f} s"
             f"{', smoke' if rep['smoke'] else ''})",
             f"VERDICT: {rep['verdict']}  (exit code {rep['exit_code']})",
             f"tolerances: {rep['tolerances']['gpu_vs_cpu']};  {rep['tolerances']['vs_lme4']}",
             f"GPU side: status {g.get('status')}, device {g.get('device', '-')}, jax {g.get('jax', '-')}"
             + (f"  [{g['error']}]" if g.get("error") else "") + (f"  [{g['killed']}]" if g.get("killed") else ""),
             f"CPU side: status {c.get('status')}, device {c.get('device', '-')}, jax {c.get('jax', '-')}"
             + (f"  [{c['error']}]" if c.get("error") else "") + (f"  [{c['killed']}]" if c.get("killed") else ""),
             "times: first fit (compilation included, unless an earlier model of the same shapes compiled it) / "
             "refit, seconds; the GPU and CPU sides ran at the same time",
             ""]
    head = (f"{'model':24s} {'GPU objective':>20s} {'CPU objective':>20s} {'lme4 objective':>20s} "
            f"{'|GPU-CPU|':>10s} {'<=tol':>5s} {'GPU-lme4 rel':>12s} {'CPU-lme4 rel':>12s} "
            f"{'GPU fit/refit s':>16s} {'CPU fit/refit s':>16s}  status")
    lines += [head, "-" * len(head)]
    for r in rep["models"]:
        gm, cm = r.get("gpu") or {}, r.get("cpu") or {}
        ok = r.get("gpu_cpu_ok")
        lines.append(
            f"{r['name']:24s} {_f(gm.get('objective'), '20.12f')} {_f(cm.get('objective'), '20.12f')} "
            f"{r['lme4_objective']:20.12f} {_f(r.get('abs_diff_gpu_cpu'), '10.2e')} "
            f"{'-' if ok is None else ('yes' if ok else 'NO'):>5s} {_f(r.get('gpu_vs_lme4_rel'), '+12.2e')} "
            f"{_f(r.get('cpu_vs_lme4_rel'), '+12.2e')} "
            f"{_f(gm.get('fit_s'), '7.2f'):>7s}/{_f(gm.get('refit_s'), '<8.4f'):8s} "
            f"{_f(cm.get('fit_s'), '7.2f'):>7s}/{_f(cm.get('refit_s'), '<8.4f'):8s}  {r['status']}")
        for p in r.get("problems", []):
            lines.append(f"{'':26s}{p}")
    b = rep["batch"]
    gb, cb = b.get("gpu") or {}, b.get("cpu") or {}
    lines += ["", f"batch: model.fit_many(Y), Y = {b['nsim']} simulated sleepstudy responses "
                  f"({b['formula']}, REML): {b['status']}",
              f"  max |GPU-CPU| {_f(b.get('max_abs_diff'), '.3e')}, max |GPU-CPU|/(1+|obj|) "
              f"{_f(b.get('max_scaled_diff'), '.3e')}, fits over tolerance {b.get('n_over_tol', '-')}, "
              f"NaN GPU/CPU {b.get('nan_gpu', '-')}/{b.get('nan_cpu', '-')}",
              f"  GPU fit_many {_f(gb.get('fit_many_s'), '.2f')} s first, {_f(gb.get('refit_many_s'), '.3f')} s again, "
              f"converged {_f(gb.get('converged_fraction'), '.3f')}  {gb.get('error', gb.get('skipped', ''))}",
              f"  CPU fit_many {_f(cb.get('fit_many_s'), '.2f')} s first, {_f(cb.get('refit_many_s'), '.3f')} s again, "
              f"converged {_f(cb.get('converged_fraction'), '.3f')}  {cb.get('error', cb.get('skipped', ''))}"]
    for p in b.get("problems", []):
        lines.append(f"  problem: {p}")
    if rep["failures"]:
        lines += ["", "failures:"] + [f"  - {f}" for f in rep["failures"]]
    if rep["notes"]:
        lines += ["", "notes:"] + [f"  - {n}" for n in rep["notes"]]
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------- grid
# The reduced GPU grid, in priority order: each part is a separate `jaxhlm bench` run (its own
# CSV/JSON), started only while enough time is left, so that a part cut short by the time limit
# loses only itself.  Models come from the source config (formula, obs_per_group, items); each
# entry overrides groups and batch sizes.  min_s: the time a part needs to be started.
REDUCED_PLAN = [
    {"part": "intercept", "model": "intercept", "batch_sizes": [1000, 100000], "min_s": 45},
    {"part": "slope", "model": "slope", "batch_sizes": [1000, 100000], "min_s": 45},
    {"part": "groups", "model": "groups", "groups": [10000], "batch_sizes": [1, 100], "min_s": 45},
    {"part": "crossed", "model": "crossed", "batch_sizes": [1000, 10000], "min_s": 45},
    {"part": "intercept-1e6-gpu", "model": "intercept", "batch_sizes": [1000000], "backends": ["gpu"],
     "min_s": 90},
]
REDUCED_SETTINGS = {"reps": 3, "warmup": 1, "max_call_s": 5.0, "cell_timeout_s": 90.0,
                    # lme4 and statsmodels are not installed on the GPU machine; the smoke grid
                    # (GPU_SH_SMOKE=1) keeps its peers, to check that missing ones are skipped
                    "peers": []}


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def _toml(grid: dict, comment: str) -> str:
    lines = [f"# {line}" for line in comment.splitlines()]
    for k, v in grid.items():
        if k != "models":
            lines.append(f"{k} = {_toml_value(v)}")
    for m in grid.get("models", []):
        lines += ["", "[[models]]"] + [f"{k} = {_toml_value(v)}" for k, v in m.items()]
    return "\n".join(lines) + "\n"


def _load_toml(path: Path) -> dict:
    try:
        import tomllib
    except ImportError:
        import tomli as tomllib  # type: ignore[no-redef]
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def cmd_grid_plan(args) -> int:
    out_dir = Path(args.out_dir).resolve()
    grid_dir = out_dir / "grid"
    (grid_dir / "configs").mkdir(parents=True, exist_ok=True)
    (grid_dir / "logs").mkdir(parents=True, exist_ok=True)
    source = Path(args.source).resolve()
    plan, notes = [], []
    try:
        src = _load_toml(source)
    except Exception as e:  # noqa: BLE001
        src = None
        notes.append(f"could not read {source} ({_err(e)}): running it whole")
    mode = args.mode if src is not None else "whole"
    if mode == "whole":
        plan.append((f"{src['name'] if src else source.stem}", str(source), args.min_s))
    elif mode == "split":  # each model of the source as its own part, unchanged
        for i, m in enumerate(src["models"], 1):
            part = dict(src, name=f"{src['name']}-p{i}-{m['name']}", models=[m])
            path = grid_dir / "configs" / f"{part['name']}.toml"
            path.write_text(_toml(part, f"part {i} of {source.name} (model {m['name']!r}), written by gpu_check.py"))
            plan.append((part["name"], str(path), args.min_s))
    else:  # reduced
        by_name = {m["name"]: m for m in src["models"]}
        settings = {k: v for k, v in src.items() if k not in ("models", "name", "description")}
        settings.update(REDUCED_SETTINGS)
        whole = dict(name=f"{src['name']}-reduced",
                     description=f"reduced {src['name']} grid (benchmarks/gpu_check.py), run in parts",
                     **{k: v for k, v in settings.items() if k not in ("backends",)},
                     backends=list(src.get("backends", ["gpu", "cpu"])), models=[])
        for i, entry in enumerate(REDUCED_PLAN, 1):
            m = by_name.get(entry["model"])
            if m is None:
                notes.append(f"model {entry['model']!r} not in {source.name}: part {entry['part']!r} dropped")
                continue
            model = dict(m)
            model["name"] = entry["part"]
            if "groups" in entry:
                model["groups"] = entry["groups"]
            model["batch_sizes"] = entry["batch_sizes"]
            backends = entry.get("backends", list(src.get("backends", ["gpu", "cpu"])))
            part = dict(name=f"{src['name']}-p{i}-{entry['part']}",
                        description=f"part {i} of the reduced {src['name']} grid: {entry['part']}",
                        **{k: v for k, v in settings.items() if k != "backends"},
                        backends=backends, models=[model])
            path = grid_dir / "configs" / f"{part['name']}.toml"
            path.write_text(_toml(part, f"part {i} of the reduced copy of {source.name}, written by "
                                        "benchmarks/gpu_check.py grid-plan; run by benchmarks/gpu.sh"))
            plan.append((part["name"], str(path), max(entry["min_s"], args.min_s)))
            if backends == whole["backends"]:
                whole["models"].append(model)
        path = grid_dir / "configs" / f"{whole['name']}.toml"
        path.write_text(_toml(whole, f"the reduced copy of {source.name} as one grid (for a rerun with more "
                                     "time);\ngpu.sh ran it as the parts in this folder, plus a GPU-only "
                                     "B = 10^6 part.\nChanged: " + ", ".join(f"{k} = {_toml_value(v)}"
                                                                             for k, v in REDUCED_SETTINGS.items())
                                     + "; fewer batch sizes and group counts per model."))
        notes.append(f"the reduced grid as one file: {path}")
    with open(grid_dir / "plan.tsv", "w") as fh:
        for name, path, min_s in plan:
            fh.write(f"{name}\t{path}\t{int(min_s)}\n")
    _write_json(grid_dir / "plan.json", {"source": str(source), "mode": mode, "notes": notes,
                                         "parts": [{"name": n, "config": p, "min_s": s} for n, p, s in plan]})
    for n in notes:
        print(f"grid-plan: {n}")
    print(f"grid-plan: {len(plan)} part(s) ({mode}) in {grid_dir / 'plan.tsv'}")
    return 0


LOG_ROW = re.compile(r"^\[(\d+)/(\d+)\]\s+(\S+)\s+groups=([\d,]+)\s+nobs=([\d,]+)\s+B=([\d,]+)\s+(\S+?):\s+(.*)$")


def _num(s: str):
    try:
        return float(s.replace(",", ""))
    except ValueError:
        return None


def _rows_from_log(text: str, part: str) -> list[dict]:
    """A killed part wrote no CSV; its progress lines still give one row per finished cell."""
    rows = []
    for line in text.splitlines():
        m = LOG_ROW.match(line.strip())
        if not m:
            continue
        rest = m.group(8)
        row = {"part": part, "source": "log (part cut short)", "model": m.group(3),
               "groups": int(_num(m.group(4))), "nobs": int(_num(m.group(5))), "batch_size": int(_num(m.group(6))),
               "backend": m.group(7)}
        fm = re.match(r"([\d,.]+) fits/s, median ([\d,.]+) ms, compile ([\d,.]+) s", rest)
        if fm:
            row.update(status="ok", fits_per_s=_num(fm.group(1)), median_s=_num(fm.group(2)) / 1e3,
                       compile_s=_num(fm.group(3)))
        else:
            sm = re.match(r"(\w+)\s*\((.*)\)\s*$", rest)
            row.update(status=sm.group(1) if sm else "?", reason=sm.group(2) if sm else rest)
        rows.append(row)
    return rows


def _part_files(grid_dir: Path, name: str, ext: str) -> list[Path]:
    pat = re.compile(rf"^bench-{re.escape(name)}-\d{{4}}-\d\d-\d\d\.{ext}$")
    return sorted(p for p in grid_dir.glob(f"bench-*.{ext}") if pat.match(p.name))


def cmd_grid_merge(args) -> int:
    grid_dir = Path(args.out_dir).resolve() / "grid"
    plan = (_read_json(grid_dir / "plan.json") or {}).get("parts", [])
    runs = {}
    if (grid_dir / "parts.tsv").exists():
        for line in (grid_dir / "parts.tsv").read_text().splitlines():
            f = line.split("\t")
            if len(f) >= 4:
                runs[f[0]] = {"outcome": f[1], "rc": f[2], "seconds": f[3], "note": f[4] if len(f) > 4 else ""}
    rows, parts = [], []
    for p in plan:
        name = p["name"]
        csvs, jsons = _part_files(grid_dir, name, "csv"), _part_files(grid_dir, name, "json")
        info = {"name": name, "config": p["config"], **runs.get(name, {"outcome": "not run"}),
                "csv": [str(c) for c in csvs], "json": [str(j) for j in jsons]}
        if csvs:
            with open(csvs[-1], newline="") as fh:
                for r in csv.DictReader(fh):
                    rows.append({"part": name, "source": csvs[-1].name, **r})
        else:
            log = grid_dir / "logs" / f"{name}.log"
            got = _rows_from_log(log.read_text(errors="replace"), name) if log.exists() else []
            rows += got
            info["rows_from_log"] = len(got)
        info["rows"] = sum(1 for r in rows if r["part"] == name)
        parts.append(info)
    cols = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    merged = grid_dir / "grid-all.csv"
    with open(merged, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols or ["part"])
        w.writeheader()
        w.writerows(rows)
    _write_json(grid_dir / "grid-status.json", {"merged_csv": str(merged), "parts": parts})
    print(f"grid-merge: {len(rows)} rows from {len(parts)} part(s) -> {merged}")
    return 0


# ------------------------------------------------------------------------------ summary
def _steps(out_dir: Path) -> list[dict]:
    steps = []
    p = out_dir / "steps.tsv"
    if p.exists():
        for line in p.read_text().splitlines():
            f = line.split("\t")
            if len(f) >= 3:
                steps.append({"step": f[0], "rc": f[1], "seconds": f[2], "note": f[3] if len(f) > 3 else ""})
    return steps


def cmd_summary(args) -> int:
    out_dir = Path(args.out_dir).resolve()
    rel = lambda p: os.path.relpath(p, out_dir)  # noqa: E731
    L = [f"# jaxhlm GPU check: {args.mode}", "",
         f"Written {_now()} by `benchmarks/gpu.sh` (`benchmarks/gpu_check.py summary`). "
         f"All paths are relative to this folder ({out_dir}).", ""]
    env = out_dir / "env.txt"
    if env.exists():
        txt = env.read_text(errors="replace")
        gpu_lines = [ln.strip() for ln in txt.splitlines() if re.search(r"jax\.devices\(\)|default_backend|^jax |"
                                                                        r"MISSING|FAILED|nvidia-smi: not|"
                                                                        r"^jaxhlm |^python:|NVIDIA H|GPU-", ln)]
        L += ["## Environment (`env.txt`)", ""] + [f"- `{ln}`" for ln in gpu_lines[:20]] + [""]
    L += ["## Steps", "", "| step | exit code | seconds | note |", "| --- | --- | --- | --- |"]
    for s in _steps(out_dir):
        L.append(f"| {s['step']} | {s['rc']} | {s['seconds']} | {s['note']} |")
    L.append("")
    rep = _read_json(out_dir / "reference.json")
    L += ["## Reference check (`reference.txt`, `reference.json`)", ""]
    if rep is None:
        L += ["**No result**: the reference step wrote no `reference.json` (see `run.log` and "
              "`reference-work/*.log`).", ""]
    else:
        side = lambda d: f"{d.get('status')}, device {d.get('device', '-')}"  # noqa: E731
        L += [f"**{rep['verdict']}** (exit code {rep['exit_code']}; GPU side: {side(rep['gpu'])}; "
              f"CPU side: {side(rep['cpu'])}; {rep['elapsed_s']:.0f} s).", "",
              f"Tolerances: {rep['tolerances']['gpu_vs_cpu']}; {rep['tolerances']['vs_lme4']}.", "",
              "| model | GPU objective | CPU objective | lme4 | abs(GPU-CPU) | GPU fit s | CPU fit s | status |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in rep["models"]:
            g, c = r.get("gpu") or {}, r.get("cpu") or {}
            L.append(f"| {r['name']} | {_f(g.get('objective'), '.10f')} | {_f(c.get('objective'), '.10f')} | "
                     f"{r['lme4_objective']:.10f} | {_f(r.get('abs_diff_gpu_cpu'), '.2e')} | "
                     f"{_f(g.get('fit_s'), '.2f')} | {_f(c.get('fit_s'), '.2f')} | {r['status']} |")
        b = rep["batch"]
        L += ["", f"Batch (`fit_many`, {b['nsim']} simulated sleepstudy responses): **{b['status']}**, "
                  f"max abs(GPU-CPU) {_f(b.get('max_abs_diff'), '.3e')}, "
                  f"max scaled {_f(b.get('max_scaled_diff'), '.3e')}, over tolerance {b.get('n_over_tol', '-')}.", ""]
        if rep["failures"]:
            L += ["Failures:", ""] + [f"- {f}" for f in rep["failures"]] + [""]
        if rep["notes"]:
            L += ["Notes:", ""] + [f"- {n}" for n in rep["notes"]] + [""]
    L += ["## Grid (`python -m jaxhlm bench`)", ""]
    plan = _read_json(out_dir / "grid" / "plan.json")
    status = _read_json(out_dir / "grid" / "grid-status.json")
    if plan is None:
        L += ["No grid plan was written (see `run.log`).", ""]
    else:
        L += [f"Source config `{plan['source']}`, mode `{plan['mode']}`."] + [f"- {n}" for n in plan["notes"]] + [""]
    if status:
        L += [f"All rows merged: `{rel(status['merged_csv'])}`.", "",
              "| part | outcome | exit code | seconds | rows | CSV | JSON | log |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for p in status["parts"]:
            csvs = ", ".join(f"`{rel(c)}`" for c in p["csv"]) or (
                "-" if p.get("outcome") in ("skipped", "not run") else
                f"none ({p.get('rows_from_log', 0)} rows read from its log)")
            jsons = ", ".join(f"`{rel(j)}`" for j in p["json"]) or "none"
            L.append(f"| {p['name']} | {p.get('outcome')} {p.get('note', '')} | {p.get('rc', '-')} | "
                     f"{p.get('seconds', '-')} | {p.get('rows', 0)} | {csvs} | {jsons} | `grid/logs/{p['name']}.log` |")
        L.append("")
        try:
            with open(status["merged_csv"], newline="") as fh:
                rows = list(csv.DictReader(fh))
        except OSError:
            rows = []
        if rows:
            L += ["| model | groups | B | backend | status | fits/s | median s | compile s | device / reason |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
            for r in rows:
                fps = _num(r.get("fits_per_s") or "")
                med = _num(r.get("median_s") or "")
                comp = _num(r.get("compile_s") or "")
                L.append(f"| {r.get('model')} | {r.get('groups')} | {r.get('batch_size')} | {r.get('backend')} | "
                         f"{r.get('status')} | {_f(fps, ',.0f')} | {_f(med, '.4g')} | {_f(comp, '.3g')} | "
                         f"{r.get('device') or r.get('reason', '')} |")
            L.append("")
    L += ["## Files", "",
          "- `env.txt`: nvidia-smi, Python, jax/jaxlib, `jax.devices()`, dependencies",
          "- `reference.txt`, `reference.json`: the reference check; `reference-work/`: the children's raw "
          "results and logs",
          "- `grid/`: the bench's `bench-*.csv`/`.json` per part, `grid-all.csv` (all parts), `configs/` "
          "(the configs run), `logs/`, `plan.tsv`, `parts.tsv`",
          "- `steps.tsv`, `run.log`: gpu.sh's own record", ""]
    (out_dir / "SUMMARY.md").write_text("\n".join(L))
    print(f"summary: {out_dir / 'SUMMARY.md'}")
    return 0


# --------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        return _child(json.loads(argv[1]))
    ap = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("env").set_defaults(run=cmd_env)
    r = sub.add_parser("reference")
    r.add_argument("out_dir")
    r.add_argument("--budget", type=float, default=140.0, help="seconds for the whole check (default 140)")
    r.add_argument("--nsim", type=int, default=None, help="simulated responses for fit_many (400; 100 with --smoke)")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--models", help="comma-separated reference names (default: all of tests/reference/*.json)")
    r.add_argument("--no-insteval", action="store_true")
    r.add_argument("--smoke", action="store_true", help="no InstEval, nsim 100")
    r.set_defaults(run=cmd_reference)
    p = sub.add_parser("grid-plan")
    p.add_argument("out_dir")
    p.add_argument("--source", required=True)
    p.add_argument("--mode", choices=("reduced", "split", "whole"), default="reduced")
    p.add_argument("--min-s", type=int, default=20, help="least time left to start a part")
    p.set_defaults(run=cmd_grid_plan)
    m = sub.add_parser("grid-merge")
    m.add_argument("out_dir")
    m.set_defaults(run=cmd_grid_merge)
    s = sub.add_parser("summary")
    s.add_argument("out_dir")
    s.add_argument("--mode", default="run")
    s.set_defaults(run=cmd_summary)
    args = ap.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
