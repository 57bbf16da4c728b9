"""What the side-by-side benchmarks (``inference.py``, ``glmm.py``, ``crossed.py``, the probes) share: a fresh process
whose last line of output is JSON, the ``--reps`` and ``--out`` arguments."""

from __future__ import annotations

import argparse
import compileall
import datetime
import functools
import json
import os
import subprocess
from pathlib import Path


def run_json(cmd, env=None, timeout=None) -> dict:
    """Run ``cmd`` in a fresh process (environment :func:`process_env`); its last line of
    standard output, parsed as JSON (a RuntimeError with the end of its standard error
    where it fails)."""
    out = subprocess.run(cmd, capture_output=True, text=True, env=process_env(env), timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def process_env(env: dict | None = None) -> dict:
    """``env`` (default this process's) for a timed process, as on a user's machine: without
    ``PYTHONDONTWRITEBYTECODE``, which this sandbox sets, and with jaxhlm's modules compiled
    to bytecode once (:func:`_bytecode`), as ``pip install`` does.  Otherwise every process
    of an editable install compiles jaxhlm's source again: ``import jaxhlm`` took 64 ms
    instead of 25 ms, and an InstEval process about 45 ms more (2026-12-04)."""
    env = dict(os.environ if env is None else env)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    _bytecode()
    return env


@functools.cache
def _bytecode() -> None:
    compileall.compile_dir(Path(__file__).resolve().parents[1] / "jaxhlm", quiet=1)


def reps_arguments(doc: str, **more: int) -> argparse.Namespace:
    """``--reps`` (default 3), ``--out`` (the JSON file to write; default
    :func:`results_path`'s) and any ``--name`` integers given with their defaults, with
    the script's first docstring line as description."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None,
                    help="the JSON file to write (default benchmarks/results/NAME-DATE.json)")
    for name, default in more.items():
        ap.add_argument("--" + name.replace("_", "-"), type=int, default=default)
    return ap.parse_args()


def results_path(args: argparse.Namespace, name: str) -> Path:
    """Where a run writes its JSON: ``--out``, else ``benchmarks/results/NAME-DATE.json``."""
    return args.out or Path(__file__).parent / "results" / f"{name}-{datetime.date.today().isoformat()}.json"
