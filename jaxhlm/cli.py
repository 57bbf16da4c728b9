"""Command line: ``jaxhlm fit DATA "FORMULA" [--ml] [--json PATH]``.

DATA is a CSV or Parquet file, or the name of a bundled data set (``jaxhlm datasets``
lists them).  The summary goes to stdout; ``--json PATH`` writes the fit as JSON
(``--json -``: JSON alone to stdout).  Errors are one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import pandas as pd

from . import datasets
from .errors import JaxhlmError


def read_data(source: str) -> pd.DataFrame:
    """A CSV or Parquet file by path, else a bundled data set by name."""
    path = Path(source)
    if path.suffix.lower() in (".csv", ".parquet", ".pq", ".gz") or path.exists():
        if not path.exists():
            raise JaxhlmError(f"no such file: {source}")
        if path.suffix.lower() in (".parquet", ".pq"):
            try:
                return pd.read_parquet(path)
            except ImportError as err:
                raise JaxhlmError(f"reading Parquet needs pyarrow (pip install 'jaxhlm[parquet]'): {err}") from None
        return pd.read_csv(path)
    return datasets.load(source)


def _fit(args) -> int:
    from .model import LMM

    data = read_data(args.data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = LMM(args.formula, data).fit(reml=not args.ml)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if args.json == "-":
        print(res.to_json(indent=1))
        return 0
    print(res.summary())
    if args.json:
        Path(args.json).write_text(res.to_json(indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxhlm", description="Linear mixed models on JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit a linear mixed model and print its summary")
    fit.add_argument("data", help="CSV or Parquet file, or a bundled data set's name")
    fit.add_argument("formula", help="lme4 formula, e.g. 'Reaction ~ Days + (Days | Subject)'")
    fit.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    fit.add_argument("--json", metavar="PATH", help="write the fit as JSON to PATH ('-' for stdout)")
    fit.set_defaults(run=_fit)
    ls = sub.add_parser("datasets", help="list the bundled data sets")
    ls.set_defaults(run=lambda a: print("\n".join(datasets.names())) or 0)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except JaxhlmError as err:
        print(f"jaxhlm: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
