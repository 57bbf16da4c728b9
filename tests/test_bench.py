"""The benchmark grid (``jaxhlm bench``): the smoke grid end to end, and config checking."""

import importlib.util
import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jaxhlm.tools import bench, peers
from jaxhlm.cli import main
from jaxhlm.tools.configs import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "bench"


def _lme4_installed() -> bool:
    rscript = shutil.which("Rscript")
    return rscript is not None and subprocess.run(
        [rscript, "-e", "quit(status = !all(sapply(c('lme4', 'jsonlite'), requireNamespace, quietly = TRUE)))"],
        capture_output=True).returncode == 0


@pytest.mark.timeout(600)
def test_smoke_grid_writes_csv_json_and_plots(tmp_path, capsys):
    """configs/bench/smoke.toml through the command line: every CPU cell measured (no
    compilation during the timed calls, every fit converged), a backend JAX does not see
    reported, peers timed where installed, and the CSV, JSON and both PNGs written."""
    assert main(["bench", str(CONFIGS / "smoke.toml"), "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert "fits_per_s" in out.out and "[4/8]" in out.err
    (csv,) = tmp_path.glob("bench-smoke-*.csv")
    rows = pd.read_csv(csv)
    grid = bench.load_grid(CONFIGS / "smoke.toml")
    assert len(rows) == len(list(bench.cells(grid))) == 8
    cpu = rows[rows["backend"] == "cpu"]
    assert (cpu["status"] == "ok").all(), cpu["reason"].tolist()
    assert (cpu["fits_per_s"] > 0).all() and (cpu["compile_s"] > 0).all()
    assert (cpu["min_s"] <= cpu["median_s"]).all() and (cpu["median_s"] <= cpu["max_s"]).all()
    assert np.allclose(cpu["fits_per_s"], cpu["batch_size"] / cpu["median_s"])
    assert (cpu["compilations_timed"] == 0).all() and (cpu["converged_fraction"] == 1).all()
    assert (cpu["nobs"] == cpu["groups"] * 8).all() and (cpu["peak_rss_mib"] > 0).all()
    assert cpu["device"].str.startswith("cpu").all()
    assert rows[rows["backend"] == "gpu"]["status"].isin(["ok", "unavailable"]).all()
    if _lme4_installed():
        assert (cpu["lme4_ratio"] > 0).all() and (cpu["lme4_lmer_fits_per_s"] > 0).all()
        # the same data on both sides: the REML criteria of the first response agree
        np.testing.assert_allclose(cpu["objective_first"], cpu["lme4_objective_first"], rtol=1e-7)
    else:
        assert "lme4" in out.err and cpu["lme4_ratio"].isna().all()
    if importlib.util.find_spec("statsmodels"):
        assert (cpu["statsmodels_ratio"] > 0).all()
    info = json.loads(csv.with_suffix(".json").read_text())
    assert info["config"]["name"] == "smoke" and info["machine"]["jax"] and len(info["rows"]) == 8
    for suffix in ("-throughput.png", "-groups.png"):
        png = Path(f"{csv.with_suffix('')}{suffix}")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


GRID = """
name = "t"
batch_sizes = [4]
reps = 2
[[models]]
name = "m"
formula = "y ~ x + (1 | subject)"
groups = [5]
obs_per_group = 4
"""


@pytest.mark.parametrize("edit,message", [
    (("reps = 2", "reps = \"2\""), "'reps' must be an integer, got '2' (a string)"),
    (("batch_sizes = [4]", "batch_size = [4]"), "unknown key 'batch_size' (did you mean 'batch_sizes'?)"),
    (("batch_sizes = [4]", "batch_sizes = [4, 0]"), "'batch_sizes' must be at least 1, got 0"),
    (("groups = [5]", "groups = 5"), "'models[0].groups' must be an array of integers, got 5"),
    (("obs_per_group = 4", "obs_per_group = 4\nitem = 3"), "unknown key 'models[0].item' (did you mean 'items'?)"),
    (("reps = 2", "reps = 2\npeers = [\"nlme\"]"), "'peers[0]' must be one of 'lme4', 'statsmodels', got 'nlme'"),
    (("reps = 2", "reps = 2\nbackends = \"cpu\""), "'backends' must be an array of strings"),
    (("(1 | subject)", "(1 | item)"), "models[0].formula 'y ~ x + (1 | item)' does not fit its design"),
    (("name = \"m\"\n", ""), "missing required key 'models[0].name'"),
    (("reps = 2", "reps = [2"), "not valid TOML"),
    (("batch_sizes = [4]", "batch_sizes = []"), "'batch_sizes' must not be empty"),
    (("reps = 2", "reps = 2\npeers = \"lme4\""), "'peers' must be an array of values from 'lme4', 'statsmodels', got 'lme4'"),
])
def test_config_errors_name_the_key(tmp_path, capsys, edit, message):
    path = tmp_path / "grid.toml"
    assert edit[0] in GRID
    path.write_text(GRID.replace(edit[0], edit[1], 1))
    with pytest.raises(ConfigError) as err:
        bench.load_grid(path)
    assert message in str(err.value), str(err.value)
    assert main(["bench", str(path), "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxhlm: error:") and message in err and "Traceback" not in err
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_slow_rows_unseen_backends_and_big_cells_are_skipped(tmp_path):
    """After a cell slower than max_call_s, the larger batch sizes of its row are skipped; a
    backend JAX does not see is probed once; cells over max_response_gib are not run."""
    path = tmp_path / "grid.toml"
    path.write_text(GRID.replace("batch_sizes = [4]", "batch_sizes = [4, 8, 10000000]\nmax_call_s = 1e-9\n"
                                 "max_response_gib = 1.0\nbackends = [\"cpu\", \"tpu\"]"))
    rows = bench.run(bench.load_grid(path), tmp_path, plots=False, log=io.StringIO())
    assert rows["status"].tolist() == ["ok", "skipped", "skipped"] + ["unavailable"] * 3
    assert "max_call_s" in rows["reason"][1] and "GiB > max_response_gib" in rows["reason"][2]
    assert "no tpu backend" in rows["reason"][3]


def test_missing_config_is_a_clear_error(capsys):
    assert main(["bench", "no/such/grid.toml"]) == 2
    assert "no such config file: no/such/grid.toml" in capsys.readouterr().err


def test_shipped_grids_load():
    names = {p.stem: bench.load_grid(p) for p in sorted(CONFIGS.glob("*.toml"))}
    assert set(names) >= {"smoke", "cpu", "gpu", "insteval"}
    gpu = names["gpu"]
    assert "gpu" in gpu.backends and max(gpu.batch_sizes) == 10**6
    assert max(g for m in gpu.models for g in m.groups) == 10**5
    assert names["insteval"].models[0].groups[0] * names["insteval"].models[0].obs_per_group > 70_000


def test_statsmodels_peer_reads_one_term_formulas():
    spec = importlib.util.spec_from_file_location(
        "sm_timing", peers.HERE / "statsmodels_timing.py")
    if importlib.util.find_spec("statsmodels") is None:
        pytest.skip("statsmodels not installed")
    sm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sm)
    assert sm.one_term("y ~ x + (1 | subject)") == ("y ~ x", "~1", "subject")
    assert sm.one_term("y ~ (time | subject) + time") == ("y ~ time", "~time", "subject")
    assert sm.one_term("y ~ (0 + time | subject)") == ("y ~ 1", "~0 + time", "subject")
    assert isinstance(sm.one_term("y ~ c + (1 | subject) + (1 | item)"), str)
    assert isinstance(sm.one_term("y ~ (t || subject)"), str)
