"""The command line: ``jaxhlm fit DATA FORMULA [--ml] [--json PATH]``, ``jaxhlm sample``."""

import json
import subprocess
import sys

import pytest

from jaxhlm.cli import main

F = "Reaction ~ Days + (Days | Subject)"


def test_fit_bundled_dataset_json_to_stdout(capsys):
    assert main(["fit", "sleepstudy", F, "--json", "-"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["objective"] == pytest.approx(1743.62827195849, rel=1e-9)
    assert out["fixef_names"] == ["(Intercept)", "Days"]


def test_fit_csv_ml_summary_and_json_file(tmp_path, sleepstudy, capsys):
    csv = tmp_path / "sleep.csv"
    sleepstudy.to_csv(csv, index=False)
    path = tmp_path / "fit.json"
    assert main(["fit", str(csv), F, "--ml", "--json", str(path)]) == 0
    text = capsys.readouterr().out
    assert "maximum likelihood" in text and "Fixed effects" in text
    assert json.loads(path.read_text())["objective"] == pytest.approx(1751.9393444632, rel=1e-9)


def test_errors_are_one_line_exit_2(capsys):
    assert main(["fit", "sleepstudy", "Reaction ~ Days + (Days | Subjct)"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxhlm: error:") and "Subjct" in err and "Traceback" not in err
    assert main(["fit", "missing.csv", F]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("argv, option", [
    (["sleepstudy", F, "--link", "logit"], "--link"),
    (["cbpp", "cbind(incidence, size - incidence) ~ period + (1 | herd)", "--family", "binomial", "--ml"], "--ml"),
    (["study.toml", "--nsim", "100"], "--nsim"),
])
def test_warmup_names_an_option_it_would_ignore(capsys, argv, option):
    assert main(["warmup", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"jaxhlm: error: warmup: {option} does not apply") and "Traceback" not in err


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "jaxhlm", "datasets"], capture_output=True, text=True)
    assert out.returncode == 0 and "sleepstudy" in out.stdout.split()


def test_fit_many_and_bootstrap_commands(tmp_path, capsys):
    import numpy as np
    import pandas as pd

    import jaxhlm

    res = jaxhlm.LMM(F, jaxhlm.datasets.load("sleepstudy")).fit()
    Y = pd.DataFrame(res.simulate(5, seed=2).T, columns=[f"gene{i}" for i in range(5)])
    Y.to_csv(tmp_path / "Y.csv", index=False)
    assert main(["fit-many", "sleepstudy", F, "--responses", str(tmp_path / "Y.csv"),
                 "--out", str(tmp_path / "fits.csv")]) == 0
    fits = pd.read_csv(tmp_path / "fits.csv")
    assert list(fits["response"]) == list(Y.columns) and fits["converged"].all()
    single = jaxhlm.LMM(F, jaxhlm.datasets.load("sleepstudy").assign(Reaction=Y["gene3"])).fit()
    assert fits.loc[3, "objective"] == pytest.approx(single.objective, rel=1e-8)
    assert main(["bootstrap", "sleepstudy", F, "--nsim", "40", "--seed", "3",
                 "--out", str(tmp_path / "boot.csv")]) == 0
    out = capsys.readouterr().out
    assert "95% bootstrap intervals" in out and "percentile_lower" in out
    assert len(pd.read_csv(tmp_path / "boot.csv")) == 40
    assert np.isfinite(pd.read_csv(tmp_path / "boot.csv")["objective"]).all()


def test_fit_with_prior_and_known_variances(capsys):
    assert main(["fit", "Dyestuff2", "Yield ~ 1 + (1 | Batch)", "--prior", "zero-avoiding", "--json", "-"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["objective"] == pytest.approx(166.1407071125, rel=1e-6) and not out["singular"]  # blme
    assert main(["fit", "eight_schools", "y ~ 1 + (1 | school)", "--residual-variance", "se2",
                 "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["fixef"][0] == pytest.approx(7.6856167, rel=1e-7)
    assert main(["fit", "eight_schools", "y ~ 1 + (1 | school)", "--residual-variance", "nope"]) == 2
    assert "residual_variance column 'nope'" in capsys.readouterr().err


def test_sample_prints_summary_and_writes_draws(tmp_path, capsys):
    out = tmp_path / "draws.csv"
    assert main(["sample", "eight_schools", "y ~ 1 + (1 | school)", "--residual-variance", "se2",
                 "--chains", "2", "--warmup", "200", "--draws", "100", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "sd(school:(Intercept))" in text and "r_hat" in text
    import pandas as pd

    draws = pd.read_csv(out)
    assert draws.shape == (200, 3) and list(draws.chain.unique()) == [0, 1]


def test_fit_with_satterthwaite_df_and_anova(capsys):
    assert main(["fit", "sleepstudy", F, "--ddf", "satterthwaite"]) == 0
    text = capsys.readouterr().out
    assert "t-tests use Satterthwaite's method" in text and "Pr(>|t|)" in text
    assert "Type III Analysis of Variance Table with Satterthwaite's method" in text and "DenDF" in text
    assert main(["anova", "sleepstudy", "Reaction ~ Days + (1 | Subject)", F]) == 0
    text = capsys.readouterr().out
    assert "Refitting REML fits with ML" in text and "42.1393" in text
    assert main(["anova", "sleepstudy", "Reaction ~ Days + (1 | Days)", F]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxhlm: error:") and "not nested" in err and "Refitting" not in err
