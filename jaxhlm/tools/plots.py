"""PNG plots of benchmark grids and simulation studies (matplotlib, Agg canvas).

- :func:`bench`: fits per second against the batch size, one line per backend and number
  of groups, the peers' refit rates as dotted lines (``-throughput.png``); the median wall
  time of one batch against the number of groups, one line per backend and batch size
  (``-groups.png``, for models run at several group counts).  Log-log axes.
- :func:`power_curve`: power against the effect size, one line per design, bars of its
  95% Clopper-Pearson interval (simr's), a dashed line at the test's level (``-power.png``).

matplotlib is optional (``pip install 'jaxhlm[bench]'``): without it the plots are
skipped with a message.  Figures are drawn on ``matplotlib.figure.Figure`` with the Agg
canvas, never through pyplot, so no global backend is set.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd


def _figure(npanels: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = min(npanels, 3)
    nrows = math.ceil(npanels / ncols)
    fig = Figure(figsize=(5.2 * ncols, 4.0 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(nrows, ncols, i + 1) for i in range(npanels)]


def _available(log) -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("plots skipped: matplotlib is not installed (pip install 'jaxhlm[bench]')",
              file=log or sys.stderr)
        return False
    return True


def _lines(ax, rows: pd.DataFrame, series: str, x: str, y: str, label) -> dict:
    """One line of y against x per (backend, value of ``series``), coloured by the value;
    returns the colours, so that the peers' lines can match them."""
    colour = {v: f"C{i}" for i, v in enumerate(sorted(rows[series].unique()))}
    for (backend, value), line in rows.groupby(["backend", series], sort=True):
        line = line.sort_values(x)
        ax.plot(line[x], line[y], BACKEND_STYLE.get(backend, "s-."), color=colour[value],
                label=f"jaxhlm {backend}, {label(value)}")
    return colour


def bench(frame: pd.DataFrame, stem: Path, title: str, log=None) -> list[Path]:
    """The grid's throughput and group-scaling plots; returns the files written."""
    ok = frame[frame["status"] == "ok"] if "status" in frame else frame
    if ok.empty or not _available(log):
        return []
    written = []
    models = list(dict.fromkeys(ok["model"]))
    fig, axes = _figure(len(models))
    for ax, name in zip(axes, models):
        rows = ok[ok["model"] == name]
        colour = _lines(ax, rows, "groups", "batch_size", "fits_per_s", lambda g: f"{g:,} groups")
        for peer, style in PEER_STYLE.items():
            for groups, rate in rows.groupby("groups")[f"{peer}_fits_per_s"].first().dropna().items():
                ax.axhline(rate, ls=style, color=colour[groups], lw=1.2,
                           label=f"{peer} refit loop, {groups:,} groups")
        _style(ax, "batch size (fits per call)", "fits per second", name, rows)
    fig.suptitle(f"{title}: throughput against batch size")
    written.append(_save(fig, stem, "-throughput.png"))

    scaled = [m for m in models if ok[ok["model"] == m]["groups"].nunique() > 1]
    if scaled:
        fig, axes = _figure(len(scaled))
        for ax, name in zip(axes, scaled):
            rows = ok[ok["model"] == name]
            _lines(ax, rows, "batch_size", "groups", "median_s", lambda B: f"B = {B:,}")
            _style(ax, "number of groups", "median wall time of one batch (s)", name, rows)
        fig.suptitle(f"{title}: time against number of groups")
        written.append(_save(fig, stem, "-groups.png"))
    return written


def power_curve(cells: pd.DataFrame, stem: Path, title: str, level: float, log=None) -> list[Path]:
    """Power against effect size per design (groups, obs_per_group, items); returns the file."""
    if cells.empty or not _available(log):
        return []
    fig, (ax,) = _figure(1)
    for (g, m, items), line in cells.groupby(["groups", "obs_per_group", "items"], sort=True):
        line = line.sort_values("effect")
        label = f"{g} groups x {m} obs" + (f", {items} items" if items else "")
        bars = [line["power"] - line["power_lower"], line["power_upper"] - line["power"]]
        ax.errorbar(line["effect"], line["power"], yerr=bars, fmt="o-", capsize=3, label=label)
    ax.axhline(level, ls="--", color="grey", lw=1)
    ax.axhline(0.8, ls=":", color="grey", lw=1)
    ax.set(xlabel="effect (true coefficient)", ylabel="power", ylim=(-0.02, 1.02), title=title)
    ax.title.set_fontsize(10)
    ax.legend(fontsize=8)
    return [_save(fig, stem, "-power.png")]


BACKEND_STYLE = {"cpu": "o-", "gpu": "^--", "tpu": "v--"}
PEER_STYLE = {"lme4": ":", "statsmodels": "-."}


def _style(ax, xlabel: str, ylabel: str, name: str, rows: pd.DataFrame) -> None:
    from matplotlib.ticker import LogFormatterSciNotation, NullFormatter

    ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel,
           title=f"{name}: {rows['formula'].iloc[0]}")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(LogFormatterSciNotation())
        axis.set_minor_formatter(NullFormatter())
    ax.title.set_fontsize(9)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)


def _save(fig, stem: Path, suffix: str) -> Path:
    path = Path(f"{stem}{suffix}")
    fig.savefig(path, dpi=110)
    return path

