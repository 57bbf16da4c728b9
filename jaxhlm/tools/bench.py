"""The benchmark grid: throughput of batched fits per model, design size, batch size and backend.

A grid (``configs/bench/*.toml``, schema :class:`Grid`) lists models (a formula on a
simulated design of :mod:`jaxhlm.tools.designs`: ``groups`` subjects x ``obs_per_group``, with
``items`` crossed), batch sizes B, backends and repetitions.  A cell is one (model,
groups, backend, B): B responses simulated from the model with beta = 0.5, theta = 1
(each random effect's SD equal to sigma; correlations 0) and sigma = 1, fitted by
``model.fit_many(Y)``.  Each cell runs in a fresh Python process (``python -m
jaxhlm.tools.bench CELL``) with the persistent compilation cache off, so that

- ``compile_s`` is the first call's wall time minus the median of the later ones
  (tracing, lowering and XLA compilation of the vmapped fit, plus its straggler pass);
- ``median_s``, ``q1_s``, ``q3_s``, ``min_s``, ``max_s``: ``reps`` timed calls after
  ``warmup`` untimed ones (``time.perf_counter``; ``fit_many`` returns host arrays, so
  each call has waited for the device); ``fits_per_s`` = B / median;
- ``peak_rss_mib`` is the process's peak resident memory (``VmHWM``: the JAX runtime,
  the design and the batch), ``peak_device_mib`` the accelerator's
  ``memory_stats()["peak_bytes_in_use"]`` (none on CPU);
- a cell whose median call takes longer than ``max_call_s`` ends its row: the larger
  batch sizes of that (model, groups, backend) are skipped, as are cells whose responses
  would need more than ``max_response_gib``;
- ``backend`` selects JAX's platform (``cpu`` runs with ``JAX_PLATFORMS=cpu``; any
  other name must be JAX's default backend in a plain process, e.g. ``gpu``), and a
  backend JAX does not see is reported as ``unavailable`` and skipped;
- ``other_cpu`` is the share of the machine's CPU that other processes used while the
  cell ran (``/proc/stat`` minus the worker's own CPU time, from the design's build to
  the last timed call): above ~0.1 the figures are disturbed.

Peers (``peers = ["lme4", "statsmodels"]``): for each (model, groups) the same design
and the first ``peer_fits`` of the same responses go to ``benchmarks/peers`` (lme4:
``refit()`` and ``lmer()`` loops; statsmodels: MixedLM refits, one grouping factor
only); ``lme4_ratio`` = jaxhlm fits/s over lme4 refits/s (peer time per fit over
jaxhlm's).  ``objective_first`` and ``lme4_objective_first`` are both fits' criteria
on the first response: equal when both fitted the same data.  A missing peer is
reported and the run goes on.

Each run writes ``bench-NAME-DATE.csv`` (one row per cell), ``.json`` (the config,
versions, machine, rows and peers' raw figures) and the plots ``-throughput.png`` and
``-groups.png`` (:mod:`jaxhlm.tools.plots`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from . import peers
from .configs import ConfigError, check, load, nonempty, positive

TRUE_FIXEF, TRUE_SIGMA = 0.5, 1.0


@dataclasses.dataclass(frozen=True)
class Model:
    """One model of a grid: a formula on :func:`jaxhlm.tools.designs.frame` designs."""

    name: str
    formula: str
    groups: tuple[int, ...] = dataclasses.field(metadata=nonempty(check(lambda v: v >= 2, "at least 2")))
    obs_per_group: int = dataclasses.field(metadata=positive())
    items: int = dataclasses.field(default=0, metadata=check(lambda v: v >= 0, "0 or more"))
    batch_sizes: tuple[int, ...] = dataclasses.field(default=(), metadata=positive())  # () = the grid's


@dataclasses.dataclass(frozen=True)
class Grid:
    """A benchmark grid (see the module docstring); ``configs/bench/*.toml``."""

    name: str
    models: tuple[Model, ...] = dataclasses.field(metadata=nonempty())
    batch_sizes: tuple[int, ...] = dataclasses.field(default=(1,), metadata=positive(nonempty=True))
    backends: tuple[str, ...] = dataclasses.field(default=("cpu",), metadata=nonempty())
    reps: int = dataclasses.field(default=5, metadata=positive())
    warmup: int = dataclasses.field(default=1, metadata=check(lambda v: v >= 0, "0 or more"))
    reml: bool = True
    chunk_size: int = dataclasses.field(default=4096, metadata=positive())
    seed: int = 0
    max_response_gib: float = dataclasses.field(default=4.0, metadata=check(lambda v: v > 0, "positive"))
    peers: tuple[Literal["lme4", "statsmodels"], ...] = ()
    peer_fits: int = dataclasses.field(default=10, metadata=positive())
    peer_timeout_s: float = dataclasses.field(default=600.0, metadata=check(lambda v: v > 0, "positive"))
    cell_timeout_s: float = dataclasses.field(default=1800.0, metadata=check(lambda v: v > 0, "positive"))
    max_call_s: float = dataclasses.field(default=60.0, metadata=check(lambda v: v > 0, "positive"))
    description: str = ""


def load_grid(path) -> Grid:
    """Read and check a grid: the schema, then each formula on its smallest design."""
    from . import designs
    from ..errors import JaxhlmError
    from ..frame import build

    grid = load(path, Grid)
    names = [m.name for m in grid.models]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: model names must differ; got {names}")
    for i, m in enumerate(grid.models):
        try:
            build(m.formula, designs.frame(min(m.groups), m.obs_per_group, m.items))
        except JaxhlmError as err:
            raise ConfigError(f"{path}: models[{i}].formula {m.formula!r} does not fit its design "
                              f"(columns: {designs.COLUMNS}{'' if m.items else '; no item: items = 0'}): "
                              f"{' '.join(str(err).split())}") from None
    return grid


def cells(grid: Grid):
    """The grid's cells in run order: (model, groups, backend, batch size)."""
    for m in grid.models:
        for g in m.groups:
            for backend in grid.backends:
                for B in m.batch_sizes or grid.batch_sizes:
                    yield m, g, backend, B


# ---------------------------------------------------------------------- the parent
def run(grid: Grid, out_dir, *, plots: bool = True, log=None) -> pd.DataFrame:
    """Run every cell (each in a fresh process), then the peers; write CSV, JSON and plots.
    Progress goes to ``log`` (default stderr)."""
    log = log or sys.stderr
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"bench-{grid.name}-{_dt.date.today()}"
    began = _dt.datetime.now(_dt.timezone.utc)
    todo = list(cells(grid))
    rows, peer_raw, unavailable, slow = [], {}, {}, {}
    for k, (m, g, backend, B) in enumerate(todo, 1):
        spec = dict(formula=m.formula, groups=g, obs_per_group=m.obs_per_group, items=m.items,
                    seed=grid.seed, backend=backend, batch_size=B, reps=grid.reps,
                    warmup=grid.warmup, reml=grid.reml, chunk_size=grid.chunk_size)
        nobs = g * m.obs_per_group
        row = dict(model=m.name, formula=m.formula, groups=g, obs_per_group=m.obs_per_group,
                   items=m.items, nobs=nobs, batch_size=B, backend=backend)
        gib = B * nobs * 8 / 2**30
        if backend in unavailable:
            out = {"status": "unavailable", "reason": unavailable[backend]}
        elif gib > grid.max_response_gib:
            out = {"status": "skipped", "reason": f"responses need {gib:.1f} GiB > max_response_gib "
                                                  f"{grid.max_response_gib:g}"}
        elif (m.name, g, backend) in slow and B > slow[m.name, g, backend]:
            out = {"status": "skipped", "reason": f"B = {slow[m.name, g, backend]:,} took longer than "
                                                  f"max_call_s = {grid.max_call_s:g} s a call"}
        else:
            out = _spawn(spec, grid.cell_timeout_s)
            if out["status"] == "unavailable":
                unavailable[backend] = out["reason"]
            if out["status"] == "ok" and out["median_s"] > grid.max_call_s:
                slow[m.name, g, backend] = B
        row.update(out)
        rows.append(row)
        print(f"[{k}/{len(todo)}] {_describe(row)}", file=log, flush=True)
        last_of_design = k == len(todo) or todo[k][:2] != (m, g)
        if grid.peers and last_of_design:
            peer_raw[f"{m.name}/{g}"] = _time_peers(grid, m, g, log)
    frame = pd.DataFrame(rows)
    frame = _with_peer_ratios(frame, peer_raw)
    frame.to_csv(stem.with_suffix(".csv"), index=False)
    info = {"config": dataclasses.asdict(grid), "started_utc": began.isoformat(timespec="seconds"),
            "finished_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(), "peers": peer_raw,
            "rows": json.loads(frame.to_json(orient="records"))}
    stem.with_suffix(".json").write_text(json.dumps(info, indent=1))
    written = [stem.with_suffix(".csv"), stem.with_suffix(".json")]
    if plots:
        from . import plots as _plots

        written += _plots.bench(frame, stem, grid.name, log)
    print("wrote " + ", ".join(str(p) for p in written), file=log)
    return frame


def _describe(row: dict) -> str:
    head = (f"{row['model']} groups={row['groups']:,} nobs={row['nobs']:,} B={row['batch_size']:,} "
            f"{row['backend']}")
    if row["status"] != "ok":
        return f"{head}: {row['status']} ({row['reason']})"
    return (f"{head}: {row['fits_per_s']:,.0f} fits/s, median {row['median_s'] * 1e3:,.1f} ms, "
            f"compile {row['compile_s']:.2f} s, peak RSS {row['peak_rss_mib']:,.0f} MiB"
            + (f", other CPU {row['other_cpu']:.0%}" if row.get("other_cpu") is not None else ""))


def _spawn(spec: dict, timeout: float | None = None) -> dict:
    """Run one cell in a fresh process; its last stdout line is the result as JSON."""
    env = dict(os.environ, JAXHLM_COMPILATION_CACHE="0")
    if spec["backend"] == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
    cmd = [sys.executable, "-m", "jaxhlm.tools.bench", json.dumps(spec)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "error", "reason": f"timed out after {timeout} s"}
    if p.returncode != 0 or not p.stdout.strip():
        last = (p.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": "error", "reason": f"exit {p.returncode}: {last[:300]}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def _time_peers(grid: Grid, m: Model, groups: int, log) -> dict:
    """Time the peers on (model, groups): the same design and responses, written by a worker."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="jaxhlm-peer-") as tmp:
        spec = dict(task="peer_data", formula=m.formula, groups=groups, obs_per_group=m.obs_per_group,
                    items=m.items, seed=grid.seed, backend="cpu", reml=grid.reml,
                    peer_fits=grid.peer_fits, peer_dir=tmp)
        made = _spawn(spec, grid.cell_timeout_s)
        if made["status"] != "ok":
            print(f"  peers: could not write their data: {made['reason']}", file=log)
            return {}
        for name in grid.peers:
            timer = peers.time_lme4 if name == "lme4" else peers.time_statsmodels
            said = io.StringIO()
            with contextlib.redirect_stdout(said):
                res = timer("cell", grid.peer_fits, tmp, timeout=grid.peer_timeout_s)
            if res is None:
                res = {"status": "unavailable", "reason": " ".join(said.getvalue().split())[:500]}
            elif "skipped" in res:
                res = {"status": "unavailable", "reason": res["skipped"]}
            else:
                res.pop("times_seconds", None)
                res.pop("lmer_times_seconds", None)
                res["status"] = "ok"
            out[name] = res
            rate = f"{res['fits_per_second']:,.1f} fits/s" if res["status"] == "ok" else res["reason"]
            print(f"  {name} on {m.name} groups={groups:,}: {rate}", file=log, flush=True)
    return out


def _with_peer_ratios(frame: pd.DataFrame, peer_raw: dict) -> pd.DataFrame:
    """Peer fits/s per row (from its design) and jaxhlm fits/s over the peer's."""
    wanted = {"lme4_fits_per_s": ("lme4", "fits_per_second"),
              "lme4_lmer_fits_per_s": ("lme4", "lmer_fits_per_second"),
              "lme4_objective_first": ("lme4", "objective_first"),
              "statsmodels_fits_per_s": ("statsmodels", "fits_per_second")}
    cols = {c: [] for c in wanted}
    for _, row in frame.iterrows():
        got = peer_raw.get(f"{row['model']}/{row['groups']}", {})
        for col, (peer, key) in wanted.items():
            ok = got.get(peer, {}).get("status") == "ok"
            cols[col].append(got[peer][key] if ok else np.nan)
    frame = frame.assign(**cols)
    if "fits_per_s" in frame:
        frame["lme4_ratio"] = frame["fits_per_s"] / frame["lme4_fits_per_s"]
        frame["statsmodels_ratio"] = frame["fits_per_s"] / frame["statsmodels_fits_per_s"]
    return frame


def machine() -> dict:
    """Where and with what the run was made (the parent's view; devices come from cells)."""
    import importlib.metadata

    import jax
    import jaxlib

    from .. import __version__

    def version(dist):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(dist)
        return None

    return {"cpu": _cpu_model(), "logical_cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "jaxhlm": __version__, "git": _git(), "numpy": np.__version__, "pandas": pd.__version__,
            "matplotlib": version("matplotlib"), "statsmodels": version("statsmodels")}


def _git() -> str | None:
    """The source tree's HEAD, flagged when jaxhlm/ has uncommitted changes."""
    repo = Path(__file__).resolve().parents[1]
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], capture_output=True,
                                    text=True, timeout=30).stdout.strip()
    try:
        head, dirty = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "--", "jaxhlm")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}{' + uncommitted changes in jaxhlm/' if dirty else ''}" if head else None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# ---------------------------------------------------------------------- the worker
def _cpu_snapshot():
    """(wall, machine busy CPU seconds from /proc/stat or None, this process's CPU seconds)."""
    busy = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        busy = (v[0] + v[1] + v[2] + v[5] + v[6]) / os.sysconf("SC_CLK_TCK")
    own = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), busy, own.ru_utime + own.ru_stime


def _other_cpu(s0, s1) -> float | None:
    """Share of the machine's CPU used by other processes between two snapshots."""
    (t0, b0, o0), (t1, b1, o1) = s0, s1
    if b0 is None or b1 is None:
        return None
    return max(0.0, (b1 - b0) - (o1 - o0)) / ((t1 - t0) * (os.cpu_count() or 1))


def _peak_rss_mib() -> float | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def _design(spec: dict):
    """The cell's model (on its simulated design) and the true parameters."""
    import jax

    from . import designs
    from ..model import LMM

    df = designs.frame(spec["groups"], spec["obs_per_group"], spec["items"], spec["seed"])
    model = LMM(spec["formula"], df)
    fixef = np.full(model.structure.p, TRUE_FIXEF)
    theta = model.structure.theta_start()
    key = jax.random.fold_in(jax.random.key(spec["seed"]), spec["groups"])
    return df, model, (fixef, theta, TRUE_SIGMA), key


def _cell(spec: dict) -> dict:
    """Measure one cell (see the module docstring); runs in the worker process."""
    import jax

    from . import designs
    from ..fitting import trace_count

    want = spec["backend"]
    try:
        have = jax.default_backend()
    except RuntimeError as err:
        return {"status": "unavailable", "reason": str(err).splitlines()[0]}
    if have != want:
        return {"status": "unavailable",
                "reason": f"JAX sees no {want} backend here (its default backend is {have})"}
    device = jax.devices()[0]
    s0 = _cpu_snapshot()
    t = time.perf_counter()
    df, model, truth, key = _design(spec)
    build_s = time.perf_counter() - t
    B = spec["batch_size"]
    Y = designs.simulate(model, *truth, key, np.arange(B))
    fit = lambda: model.fit_many(Y, spec["reml"], batch_size=spec["chunk_size"])
    t = time.perf_counter()
    first = fit()
    first_s = time.perf_counter() - t
    for _ in range(spec["warmup"]):
        fit()
    traces = trace_count()
    times = []
    for _ in range(spec["reps"]):
        t = time.perf_counter()
        fit()
        times.append(time.perf_counter() - t)
    s1 = _cpu_snapshot()
    median = statistics.median(times)
    q1, q3 = np.quantile(times, [0.25, 0.75])
    stats = device.memory_stats() or {}
    peak_dev = stats.get("peak_bytes_in_use")
    return {"status": "ok", "reason": "", "device": f"{device.platform}:{device.device_kind}",
            "n_devices": jax.device_count(), "nfixef": model.structure.p,
            "ntheta": int(model.structure.theta_lower().size),
            "build_s": build_s, "first_call_s": first_s, "compile_s": max(first_s - median, 0.0),
            "median_s": median, "q1_s": float(q1), "q3_s": float(q3), "min_s": min(times),
            "max_s": max(times), "reps": len(times), "fits_per_s": B / median,
            "peak_rss_mib": _peak_rss_mib(),
            "peak_device_mib": None if peak_dev is None else peak_dev / 2**20,
            "converged_fraction": float(first.converged.mean()),
            "objective_first": float(first.objective[0]),
            "compilations_timed": trace_count() - traces, "other_cpu": _other_cpu(s0, s1),
            "jax": jax.__version__}


def _peer_data(spec: dict) -> dict:
    """Write the design and its first ``peer_fits`` responses for the peer scripts' ``cell`` case:
    ``cell.csv`` (design columns, then y_1 .. y_K) and ``cell.json`` (formula, REML, columns)."""
    from . import designs

    df, model, truth, key = _design(spec)
    K = spec["peer_fits"]
    Y = designs.simulate(model, *truth, key, np.arange(K))
    names = [f"y_{i + 1}" for i in range(K)]
    out = pd.concat([df.drop(columns="y"), pd.DataFrame(Y.T, columns=names)], axis=1)
    out["y"] = Y[0]
    folder = Path(spec["peer_dir"])
    out.to_csv(folder / "cell.csv", index=False)
    factors = [c for c in ("subject", "item", "condition") if c in df]
    (folder / "cell.json").write_text(json.dumps(
        {"formula": spec["formula"], "reml": spec["reml"], "response": "y", "responses": names,
         "factors": factors}))
    return {"status": "ok", "reason": ""}


def _worker(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    try:
        out = _peer_data(spec) if spec.get("task") == "peer_data" else _cell(spec)
    except Exception as err:  # reported as the cell's status; the run goes on
        traceback.print_exc()
        out = {"status": "error", "reason": f"{type(err).__name__}: {err}".splitlines()[0][:300]}
    print(json.dumps(out))
    return 0


def main(config, out_dir, plots: bool = True) -> pd.DataFrame:
    """``jaxhlm bench CONFIG``: load, check and run a grid; the cell table."""
    return run(load_grid(config), out_dir, plots=plots)


COLUMNS_SHOWN = ["model", "groups", "batch_size", "backend", "status", "compile_s", "median_s",
                 "fits_per_s", "peak_rss_mib", "lme4_ratio", "statsmodels_ratio"]
"""The cell table's columns the command line prints."""


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
