"""What the side-by-side benchmarks (``inference.py``, ``glmm.py``) share: a fresh process
whose last line of output is JSON, and the ``--reps`` argument."""

from __future__ import annotations

import argparse
import json
import subprocess


def run_json(cmd, env=None) -> dict:
    """Run ``cmd`` in a fresh process; its last line of standard output, parsed as JSON."""
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def reps_arguments(doc: str, **more: int) -> argparse.Namespace:
    """``--reps`` (default 3) and any ``--name`` integers given with their defaults, with
    the script's first docstring line as description."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    for name, default in more.items():
        ap.add_argument("--" + name.replace("_", "-"), type=int, default=default)
    return ap.parse_args()
