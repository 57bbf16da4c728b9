"""The command line: ``jaxhlm fit DATA FORMULA [--ml] [--json PATH]``."""

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


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "jaxhlm", "datasets"], capture_output=True, text=True)
    assert out.returncode == 0 and "sleepstudy" in out.stdout.split()
