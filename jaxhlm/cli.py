"""Command line.

    jaxhlm fit DATA "FORMULA" [--ml] [--json PATH] [--prior zero-avoiding|gamma]
               [--weights COL | --residual-variance COL]
               [--family binomial|poisson [--link L] [--nagq K]]
    jaxhlm sample DATA "FORMULA" [--chains 4] [--warmup 1000] [--draws 1000] [--seed S] [--out draws.csv]
    jaxhlm fit-many DATA "FORMULA" --responses Y.csv --out fits.csv [--ml] [--batch-size N]
    jaxhlm bootstrap DATA "FORMULA" --nsim N [--seed S] --out boot.csv [--ml] [--level L]
    jaxhlm datasets
    jaxhlm bench CONFIG.toml [--out-dir DIR] [--no-plots]
    jaxhlm study CONFIG.toml [--out-dir DIR] [--no-plots]
    jaxhlm warmup CONFIG.toml | jaxhlm warmup DATA "FORMULA" [--ml] [--nsim N] [--responses B] [--inference]
                                [--family binomial|poisson [--link L]]

DATA is a CSV or Parquet file, or the name of a bundled data set.  ``fit`` prints the
summary (``--json PATH`` writes the fit as JSON, ``--json -`` JSON alone to stdout;
``--prior`` gives blme's posterior mode; ``--weights`` / ``--residual-variance`` name a
column of prior weights or of known residual variances; ``--family`` fits a GLMM,
lme4's ``glmer``, :class:`jaxhlm.GLMM`).  ``sample`` draws from the
posterior by NUTS with the default priors (:class:`jaxhlm.Priors`) and prints its summary.
``fit-many`` fits every column of Y.csv (rows aligned with DATA) as a response;
``bootstrap`` refits N parametric-bootstrap replicates; both write one row per fit
and print a summary (and, for the bootstrap, the confidence intervals).  ``bench`` runs
a benchmark grid and ``study`` a simulation study described in TOML (``configs/``;
:mod:`jaxhlm.tools.bench`, :mod:`jaxhlm.tools.study`), writing CSV, JSON and PNG files.
``warmup`` compiles, and keeps on disk, the programs a study config will run, or those of
a model's fit, ``--nsim`` bootstrap and ``--responses`` batch (:meth:`jaxhlm.LMM.warmup`; with
``--family``, :meth:`jaxhlm.GLMM.warmup`),
so that the real run, and any model of the same size bucket, starts warm.  Errors are
one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
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


def _model(args):
    """The LMM of DATA and FORMULA (with --weights / --residual-variance), warnings on stderr."""
    from .model import LMM

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = LMM(args.formula, read_data(args.data), weights=args.weights,
                    residual_variance=args.residual_variance)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    return model


PRIORS = {"zero-avoiding": "zero_avoiding", "wishart": "wishart", "gamma": "gamma"}


def _fit(args) -> int:
    from .bayes import priors

    if args.family != "gaussian":   # a GLMM (glmer)
        from .glmm import GLMM

        res = GLMM(args.formula, read_data(args.data), family=args.family, link=args.link,
                   weights=args.weights).fit(nagq=args.nagq)
        print(res.summary())
        return 0
    prior = getattr(priors, PRIORS[args.prior])() if args.prior else None
    res = _model(args).fit(reml=not args.ml, prior=prior)
    if args.json == "-":
        print(res.to_json(indent=1))
        return 0
    print(res.summary(ddf=args.ddf))   # lme4's layout; lmerTest's with --ddf
    if args.ddf and args.ddf != "asymptotic" and len(res.fixef) > 1:
        table = res.anova(ddf=args.ddf)
        print(f"\n{table.attrs['heading']}:")
        print(table.to_string(float_format=lambda v: f"{v:.4g}"))
    if args.json:
        Path(args.json).write_text(res.to_json(indent=1))
    return 0


def _anova(args) -> int:
    from .inference import anova

    fits = []
    for formula in (args.reduced, args.full):
        args.formula = formula
        fits.append(_model(args).fit())
    table = anova(*fits)
    print("Refitting REML fits with ML (as lme4's anova does)")
    print(table.to_string(float_format=lambda v: f"{v:.6g}"))
    return 0


def _fit_many(args) -> int:
    from .model import LMM

    model = LMM(args.formula, read_data(args.data))
    Y = pd.read_csv(args.responses)
    if len(Y) != model.nobs:
        raise JaxhlmError(f"{args.responses} has {len(Y)} rows; the model has {model.nobs} "
                          "observations (rows with missing values in DATA are dropped first)")
    batch = model.fit_many(Y, reml=not args.ml, batch_size=args.batch_size, progress=True)
    frame = batch.to_frame()
    frame.insert(0, "response", list(Y.columns))
    frame.to_csv(args.out, index=False)
    print(batch.summary())
    return 0


def _bootstrap(args) -> int:
    from .model import LMM

    res = LMM(args.formula, read_data(args.data)).fit(reml=not args.ml)
    boot = res.bootstrap(args.nsim, args.seed, batch_size=args.batch_size, progress=True)
    boot.to_frame().to_csv(args.out, index=False)
    print(boot.summary())
    print(f"\n{args.level:.0%} bootstrap intervals")
    print(boot.confint(args.level).to_string(float_format=lambda v: f"{v:.5g}"))
    return 0


def _sample(args) -> int:
    post = _model(args).sample(num_warmup=args.warmup, num_samples=args.draws,
                               num_chains=args.chains, seed=args.seed)
    print(f"{post!r}; compilation {post.seconds['compile']:.1f} s, "
          f"warm-up and sampling {post.seconds['warmup_and_sampling']:.1f} s")
    print(post.summary().to_string(float_format=lambda v: f"{v:.4g}"))
    if args.out:
        pd.DataFrame({k: v.reshape(-1) for k, v in post.samples.items()}).assign(
            chain=np.repeat(np.arange(args.chains), args.draws)).to_csv(args.out, index=False)
    return 0


def _warmup_options(args) -> None:
    """A clear error for a warmup option that the target would ignore."""
    given = {"--ml": args.ml, "--nsim": args.nsim, "--responses": args.responses, "--inference": args.inference,
             "--family": args.family != "gaussian", "--link": args.link is not None}
    if args.formula is None:
        ignored, why = list(given), "a study config says what to prepare; model options go with DATA FORMULA"
    elif args.family == "gaussian":
        ignored, why = ["--link"], "a link is a GLMM's: give --family binomial or poisson with it"
    else:
        ignored, why = ["--ml", "--inference"], "they are an LMM's (a GLMM is fitted by ML, its tests are Wald's)"
    for option in ignored:
        if given[option]:
            raise JaxhlmError(f"warmup: {option} does not apply here: {why}")


def _warmup(args) -> int:
    import time

    _warmup_options(args)
    began = time.perf_counter()
    if args.formula is None:
        from .tools import study

        if not str(args.target).endswith(".toml"):
            raise JaxhlmError(f"warmup takes a study config (a .toml file) or DATA and FORMULA; got "
                              f"{args.target!r} alone")
        study.warmup(study.load_study(args.target))
    elif args.family != "gaussian":
        from .glmm import GLMM

        GLMM(args.formula, read_data(args.target), family=args.family, link=args.link).warmup(
            nsim=args.nsim, responses=args.responses)
    else:
        from .model import LMM

        LMM(args.formula, read_data(args.target)).warmup(not args.ml, nsim=args.nsim, responses=args.responses,
                                                         inference=args.inference)
    print(f"compiled and stored in {time.perf_counter() - began:.1f} s")
    return 0


def _config_run(args) -> int:
    from .tools import bench, study

    module = bench if args.command == "bench" else study
    table = module.main(args.config, args.out_dir, plots=not args.no_plots)
    shown = [c for c in module.COLUMNS_SHOWN if c in table]
    print(table[shown].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxhlm", description="Linear mixed models on JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit a linear mixed model and print its summary")
    fit.add_argument("data", help="CSV or Parquet file, or a bundled data set's name")
    fit.add_argument("formula", help="lme4 formula, e.g. 'Reaction ~ Days + (Days | Subject)'")
    fit.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    fit.add_argument("--json", metavar="PATH", help="write the fit as JSON to PATH ('-' for stdout)")
    fit.add_argument("--prior", choices=sorted(PRIORS), help="blme's zero-avoiding covariance prior: a posterior mode")
    fit.add_argument("--ddf", choices=["satterthwaite", "kenward-roger", "asymptotic"],
                     help="also print the fixed effects' t tests and type III F tests with these "
                          "degrees of freedom (lmerTest's; kenward-roger: pbkrtest's, REML only)")
    fit.add_argument("--family", choices=["gaussian", "binomial", "poisson"], default="gaussian",
                     help="binomial or poisson: a generalized linear mixed model (lme4's glmer)")
    fit.add_argument("--link", choices=["logit", "probit", "cloglog", "log"],
                     help="the GLMM's link (default: the family's canonical one)")
    fit.add_argument("--nagq", type=int, default=1,
                     help="GLMM: 1 = Laplace (glmer's default), 0 = beta inside PIRLS, K > 1 = adaptive "
                          "Gauss-Hermite quadrature with K nodes (one scalar random-effects term)")
    fit.set_defaults(run=_fit)
    lrt = sub.add_parser("anova", help="likelihood-ratio test of two nested models (lme4's anova)")
    lrt.add_argument("data", help="CSV or Parquet file, or a bundled data set's name")
    lrt.add_argument("reduced", help="the smaller model's formula")
    lrt.add_argument("full", help="the larger model's formula")
    lrt.set_defaults(run=_anova, weights=None, residual_variance=None)
    smp = sub.add_parser("sample", help="posterior draws by NUTS; prints their summary")
    smp.add_argument("data")
    smp.add_argument("formula")
    smp.add_argument("--chains", type=int, default=4)
    smp.add_argument("--warmup", type=int, default=1000)
    smp.add_argument("--draws", type=int, default=1000)
    smp.add_argument("--seed", type=int, default=0)
    smp.add_argument("--out", help="CSV of the draws, one row per draw")
    smp.set_defaults(run=_sample)
    for cmd in (fit, smp):
        group = cmd.add_mutually_exclusive_group()
        group.add_argument("--weights", metavar="COL", help="column of prior weights (lme4's weights)")
        group.add_argument("--residual-variance", metavar="COL",
                           help="column of known residual variances (sigma is then 1, not estimated)")
    many = sub.add_parser("fit-many", help="fit many responses on one design")
    many.add_argument("data")
    many.add_argument("formula")
    many.add_argument("--responses", required=True, help="CSV, one column per response")
    many.add_argument("--out", required=True, help="CSV of fits, one row per response")
    many.add_argument("--ml", action="store_true")
    many.add_argument("--batch-size", type=int, default=None,
                      help="fits per chunk (default: 128 on a CPU, 4,096 on an accelerator)")
    many.set_defaults(run=_fit_many)
    boot = sub.add_parser("bootstrap", help="parametric bootstrap of a fit")
    boot.add_argument("data")
    boot.add_argument("formula")
    boot.add_argument("--nsim", type=int, required=True)
    boot.add_argument("--seed", type=int, default=0)
    boot.add_argument("--out", required=True, help="CSV of refits, one row per replicate")
    boot.add_argument("--ml", action="store_true")
    boot.add_argument("--level", type=float, default=0.95)
    boot.add_argument("--batch-size", type=int, default=None,
                      help="fits per chunk (default: 128 on a CPU, 4,096 on an accelerator)")
    boot.set_defaults(run=_bootstrap)
    for name, default, what in (("bench", "benchmarks/results", "run a benchmark grid (configs/bench/*.toml)"),
                                ("study", "study-results", "run a simulation study (configs/study/*.toml)")):
        cmd = sub.add_parser(name, help=what)
        cmd.add_argument("config", help="TOML file")
        cmd.add_argument("--out-dir", default=default, help=f"where the files go (default {default})")
        cmd.add_argument("--no-plots", action="store_true", help="write no PNG plots")
        cmd.set_defaults(run=_config_run)
    warm = sub.add_parser("warmup", help="compile and store the programs a study or a model will run")
    warm.add_argument("target", help="a study config (TOML), or DATA followed by FORMULA")
    warm.add_argument("formula", nargs="?", help="lme4 formula (with DATA)")
    warm.add_argument("--ml", action="store_true")
    warm.add_argument("--nsim", type=int, default=0, help="bootstrap replicates to prepare for")
    warm.add_argument("--responses", type=int, default=0, help="responses of fit-many to prepare for")
    warm.add_argument("--inference", action="store_true",
                      help="also the t tables (Satterthwaite, Kenward-Roger) and the profile (an LMM's)")
    warm.add_argument("--family", default="gaussian", choices=["gaussian", "binomial", "poisson"],
                      help="a GLMM's family (default: an LMM)")
    warm.add_argument("--link", default=None, help="a GLMM's link (default: the family's canonical one)")
    warm.set_defaults(run=_warmup)
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
