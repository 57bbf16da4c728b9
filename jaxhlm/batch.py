"""Many fits at once: one design with many responses, simulation, parametric bootstrap.

A response enters the blocks only through Z_1'y, the last row and column of ``Arr``
and nobs (:func:`jaxhlm.blocks.with_responses`), so B responses on one design are B
copies of those small arrays around one shared design; ``jax.vmap`` of
:func:`jaxhlm.fitting.fit_blocks` fits them all in one compiled program, and a
replicate costs nothing in n.  The design's blocks are padded to their bucket
(:mod:`jaxhlm.padding`), and batches run in chunks of :func:`chunk_size` fits (the last
one padded), so nearby designs and batch sizes reuse one compiled program, which is
also kept on disk (:mod:`jaxhlm.precompiled`) for the next process; chunks bound
memory, and each chunk's batch
axis is sharded across all visible devices (``jax.sharding``: a one-axis Mesh and
NamedSharding; the design is replicated).  Inside a batch nothing raises: each fit
carries its ``status``.  :func:`fit_datasets` fits one formula to many data sets the
same way, each data set's blocks padded to common shapes (:mod:`jaxhlm.stacking`).

Several processes or hosts: call ``jax.distributed.initialize(coordinator_address,
num_processes, process_id)`` in each, before any JAX computation, then make the same
calls on the same data (same responses, same seeds) in every process.  ``jax.devices()``
is then global: each chunk is sharded over every process's devices, each process
computes its shards, and the results are gathered so that every process gets them all
(tested with two CPU processes on one machine, jax 0.9.2, whose CPU collectives are
gloo's).

Where the model's rows fall into small independent groups (:mod:`jaxhlm.group_fit`,
without a residual structure), ``fit_many`` (and so the bootstrap's refits) fits on the host
first, all responses stepping together in NumPy, and hands over to the compiled program
once the host has spent :data:`HOST_BUDGET` seconds on that program in this process
(:func:`_fit_on_host`): a first batch compiles nothing, and a long run still ends on the
compiled program.

Simulation follows lme4's ``simulate.merMod``: y* = X beta-hat + Z Lambda-hat u + e
with u ~ N(0, sigma-hat^2 I) and e ~ N(0, sigma-hat^2 I).  Replicate i draws from
``jax.random.fold_in(key, i)``, so the same seed gives the same replicates whatever the
chunking.  The parametric bootstrap (lme4's ``bootMer``, MixedModels.jl's
``parametricbootstrap``) simulates, then refits each replicate.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from typing import Any, ClassVar

from .lazy_jax import jax, jnp
import numpy as np
import pandas as pd

from . import tables
from .blocks import Blocks, response_axes, response_products, with_products, with_responses
from .fitting import Options, fit_blocks, storable
from . import bucket_choice, lazy_jax, stored_run
from .padding import ladder
from .precompiled import OLDER_EMITTERS, Precompiled, level_one
from .residual import whiten as _whiten
from .optimize import Status
from .pages import small_pages
from .stacking import stack
from .start import moment_starts


STRAGGLER_AFTER = 20
"""Iterations of the first pass over a batch; fits still running then continue in a
second, smaller batch (vmapped fits step together until the slowest is done, and a
rare slow fit, e.g. a singular one creeping along a flat valley, would otherwise hold
its whole chunk for 100+ steps while the median fit needs under 10)."""


def _fit_chunk_program(blocks, theta0, max_iter, hessian0, st, reml, options, axes):
    # A batch keeps no conditional modes (b, their covariances): left out of the program.
    return jax.vmap(lambda b, t: fit_blocks(b, st, reml, options, t, max_iter=max_iter, hessian0=hessian0,
                                            modes=False),
                    in_axes=(type(blocks)(*axes), 0))(blocks, theta0)


_STATIC_CHUNK = (4, 6, 7)   # reml is an argument: REML and ML batches share a program
_FIT_CHUNK = Precompiled(_fit_chunk_program, _STATIC_CHUNK, "fit_chunk", cpu_options=OLDER_EMITTERS,
                         level=level_one, without_jax=True)


def _fit_chunk(blocks, theta0, max_iter, hessian0, st, reml, options, axes):
    """A chunk of vmapped fits: kept on disk (:mod:`jaxhlm.precompiled`) where it can be."""
    program = _FIT_CHUNK if storable(st, options) else _FIT_CHUNK.jitted
    return program(blocks, theta0, max_iter, hessian0, st, reml, options, axes)


def chunk_size(B: int, batch_size: int | None = None, ndev: int = 1) -> int:
    """Fits per chunk for a batch of B: B moved up the padding ladder
    (:func:`jaxhlm.padding.ladder`), at most ``batch_size`` (default
    :data:`CHUNK_CPU` on a CPU, :data:`CHUNK_ACCELERATOR` elsewhere), and a multiple of
    the device count.  Every chunk has this size (the last one padded), so batches of
    nearby sizes, and every batch larger than the largest chunk, share one program:
    ``fit_many`` of 2,000 after 1,500, ``bootstrap(10_000)`` after ``bootstrap(1_000)``."""
    size = min(ladder(max(B, 1)), max_chunk(batch_size))
    return -(-size // ndev) * ndev


def max_chunk(batch_size: int | None = None) -> int:
    """The largest chunk: ``batch_size``, by default :data:`CHUNK_CPU` on a CPU and
    :data:`CHUNK_ACCELERATOR` elsewhere."""
    if batch_size is None:
        cpu = stored_run.jax_free() or jax.default_backend() == "cpu"
        batch_size = CHUNK_CPU if cpu else CHUNK_ACCELERATOR
    return max(int(batch_size), 1)


CHUNK_CPU = 128
"""Fits per chunk on a CPU: more only adds memory (a sleepstudy bootstrap of 2,048 took
0.45 s in chunks of 128, 256 or 1,024, and 0.54 s in chunks of 64), and the second
pass over the few slow fits runs in chunks of the same program."""

CHUNK_ACCELERATOR = 4096
"""Fits per chunk on a GPU or TPU, where wider batches keep the device busy."""


@dataclasses.dataclass
class BatchResult:
    """B fits of one model: arrays with the batch on the first axis.

    ``objective`` (B,), ``fixef`` and ``fixef_se`` (B, p), ``theta`` (B, ntheta),
    ``sigma`` (B,), ``sd`` (B, k) and ``corr`` (B, c) named by ``sd_names`` and
    ``corr_names`` (the rows of ``varcorr``), ``status``, ``iterations``,
    ``converged`` and ``singular`` (B,).  ``model``: the :class:`~jaxhlm.model.LMM` of
    :func:`fit_many`, or the :class:`~jaxhlm.stacking.Stacked` data sets of
    :func:`fit_datasets` (either gives ``formula``, ``structure``, ``specs`` (the terms
    with their names) and the fixed-effect names).  ``lams``: per term, lambda_k of
    every fit (B, p_k, p_k).  ``sources``: where each fit's blocks come from, to compute
    statistics of the fits later (:meth:`coef_table`): tuples (positions of the fits in
    the batch, ``take`` as in :func:`_run_chunks`, their padded structure).
    """

    model: Any
    reml: bool
    objective: np.ndarray
    fixef: np.ndarray
    fixef_se: np.ndarray
    theta: np.ndarray
    sigma: np.ndarray
    status: np.ndarray
    iterations: np.ndarray
    lams: tuple = dataclasses.field(repr=False)
    sources: tuple = dataclasses.field(default=(), repr=False)
    sd: np.ndarray = dataclasses.field(init=False)
    sd_names: list[str] = dataclasses.field(init=False)
    corr: np.ndarray = dataclasses.field(init=False)
    corr_names: list[str] = dataclasses.field(init=False)

    has_sigma: ClassVar[bool] = True
    """Whether the fits estimate a residual SD (a column of :meth:`to_frame`)."""

    def __post_init__(self):
        self.sd, self.sd_names, self.corr, self.corr_names = tables.sd_corr(
            self.model.specs, self.lams, self.sigma)

    @property
    def method(self) -> str:
        return "REML" if self.reml else "ML"

    @property
    def fixef_names(self) -> list[str]:
        return list(self.model.fixef_names)

    @property
    def converged(self) -> np.ndarray:
        return self.status == Status.CONVERGED

    @property
    def singular(self) -> np.ndarray:
        return tables.singular(self.theta, self.model.structure.scales())

    def __len__(self) -> int:
        return self.objective.shape[0]

    def to_frame(self) -> pd.DataFrame:
        """One row per fit: objective, fixed effects and SEs, sigma, SDs, correlations, status."""
        cols = {"objective": self.objective}
        for j, name in enumerate(self.fixef_names):
            cols[name] = self.fixef[:, j]
        for j, name in enumerate(self.fixef_names):
            cols[f"se({name})"] = self.fixef_se[:, j]
        if self.has_sigma:
            cols["sigma"] = self.sigma
        for j, name in enumerate(self.sd_names):
            cols[name] = self.sd[:, j]
        for j, name in enumerate(self.corr_names):
            cols[name] = self.corr[:, j]
        cols.update(converged=self.converged, singular=self.singular,
                    status=[tables.status_name(s) for s in self.status], iterations=self.iterations)
        return pd.DataFrame(cols)

    def summary(self) -> str:
        """Counts by status, and the mean, SD and quantiles of each estimate over the batch."""
        frame = self.to_frame()
        numeric = frame.drop(columns=["converged", "singular", "status", "iterations"])
        stats = numeric.describe(percentiles=[0.025, 0.5, 0.975]).T[["mean", "std", "2.5%", "50%", "97.5%"]]
        counts = frame["status"].value_counts().to_dict()
        return (f"{len(self)} fits by {self.method} of {self.model.formula}\n"
                f"status: {counts}; singular: {int(self.singular.sum())}\n"
                f"{stats.to_string(float_format=lambda v: f'{v:.5g}')}")

    def coef_table(self, ddf: str = "satterthwaite", *, batch_size: int | None = None) -> pd.DataFrame:
        """Every fit's fixed-effect t tests, indexed by (fit, coefficient), with the columns
        of :meth:`jaxhlm.LMMResult.coef_table`; the derivatives of all fits in vmapped
        chunks (:func:`jaxhlm.inference.fixed.coef_table_many`)."""
        from .inference.fixed import coef_table_many

        return coef_table_many(self, ddf, lambda n: chunk_size(n, batch_size))

    def confint(self, level: float = 0.95) -> pd.DataFrame:
        """Bootstrap intervals per parameter: percentile and shortest coverage.

        Percentile: the (1-level)/2 and (1+level)/2 quantiles of the converged
        replicates.  Shortest: the narrowest interval holding ``level`` of them
        (MixedModels.jl's ``shortestcovint``).
        """
        frame = self.to_frame()
        frame = frame[frame["converged"]]
        params = self.fixef_names + ["sigma"] * self.has_sigma + self.sd_names + self.corr_names
        rows = []
        for name in params:
            v = np.sort(frame[name].dropna().to_numpy())
            lo, hi = np.quantile(v, [(1 - level) / 2, (1 + level) / 2])
            k = max(int(np.ceil(level * v.size)), 1)
            widths = v[k - 1:] - v[:v.size - k + 1]
            j = int(np.argmin(widths))
            rows.append((name, lo, hi, v[j], v[j + k - 1]))
        return pd.DataFrame(rows, columns=["parameter", "percentile_lower", "percentile_upper",
                                           "shortest_lower", "shortest_upper"]).set_index("parameter")


def _devices():
    """``jax.devices()``; None while a process runs stored programs without ``jax``
    (:mod:`jaxhlm.stored_run`: one CPU device, the host's arrays)."""
    return None if stored_run.jax_free() else jax.devices()


def _device_count() -> int:
    devices = _devices()
    return 1 if devices is None else len(devices)


def _shard(many: Blocks, axes: Blocks, devices) -> Blocks:
    """Place the batch axis across all devices (a one-axis Mesh, NamedSharding); the
    design's shared arrays are replicated.  One device: a plain transfer (none without
    ``jax``: :func:`_devices`)."""
    if devices is None:
        return many
    if len(devices) == 1:
        return jax.device_put(many)
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(devices), ("batch",))
    spec = type(many)(*[NamedSharding(mesh, PartitionSpec("batch") if a == 0 else PartitionSpec())
                        for a in axes])
    return jax.device_put(many, spec)


def _fetch(out):
    """The chunk's results as NumPy arrays.  With several processes (``jax.distributed``)
    each holds only its own devices' shards: they are gathered, so every process gets all.
    Outputs of a program run without ``jax`` are NumPy arrays already."""
    if not lazy_jax.loaded():
        return out
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(out, tiled=True)
    return jax.device_get(out)


def _put(a, index, b):
    a = np.array(a)
    a[index] = b
    return a


def report_progress(done: int, B: int, began: float) -> None:
    """One line on stderr: fits done of B and fits per second since ``began``."""
    rate = done / max(time.perf_counter() - began, 1e-9)
    print(f"\rfitted {done:,}/{B:,} ({rate:,.1f} fits/s)", end="" if done < B else "\n",
          file=sys.stderr, flush=True)


IN_FLIGHT = 2
"""Chunks dispatched ahead of the one whose results are being fetched (:func:`run_chunks`)."""


def run_chunks(dispatch, fetch, B: int, size: int, progress: bool):
    """Every chunk of ``size`` fits of B (the last one padded with its last fit, so every
    chunk has one shape): ``dispatch(index)`` starts the program on the fits at ``index``
    (positions in 0..B-1) and ``fetch`` brings its results back as NumPy arrays; the
    results, concatenated.  JAX dispatches asynchronously, so up to :data:`IN_FLIGHT`
    chunks are queued while one is fetched: on a CPU with more than one core they run side
    by side (1,000 cbpp GLMM bootstrap refits in chunks of 32, medians of 8 alternating in
    one process: 1.05 s fetched one by one, 0.93 s with two in flight, 0.95 s with eight;
    2-core CPU, 2026-12-03)."""
    pending, parts, began = [], [], time.perf_counter()

    def collect():
        lo, out = pending.pop(0)
        parts.append(lazy_jax.tree_map(lambda a: np.asarray(a)[:B - lo], fetch(out)))
        if progress:
            report_progress(min(lo + size, B), B, began)

    for lo in range(0, B, size):
        pending.append((lo, dispatch(np.minimum(np.arange(lo, lo + size), B - 1))))
        if len(pending) > IN_FLIGHT:
            collect()
    while pending:
        collect()
    return lazy_jax.tree_map(lambda *a: np.concatenate(a), *parts)


def _run_chunks(take, B, st, starts, reml, options, max_iter, size, progress, hessian0=None):
    """vmapped fits of B models from the rows of ``starts`` (:func:`run_chunks`), each at
    most ``max_iter`` iterations, BFGS from ``hessian0`` (None: probed per fit);
    ``take(index)`` gives the blocks of the fits at ``index`` and their vmap axes."""
    devices = _devices()

    def dispatch(index):
        many, axes = take(index)
        return _fit_chunk(_shard(many, axes, devices), np.asarray(starts[index]),
                          np.int64(max_iter), hessian0, st, np.bool_(reml), options, tuple(axes))

    return run_chunks(dispatch, _fetch, B, size, progress)


def _fit_batch(take, B, st, starts, reml, options, batch_size, progress, hessian0=None):
    """B vmapped fits (``take`` and ``hessian0`` as in :func:`_run_chunks`): a first pass of at most
    ``STRAGGLER_AFTER`` iterations, then the fits still running continue from where
    they stopped, in chunks of the same size: both passes run one compiled program
    (the iteration limit is one of its arguments)."""
    if options.method == "auto":
        # Vmapped fits step together until the slowest is done; BFGS's one gradient per
        # step beats Newton's n + 1 there (2x in refits/s on sleepstudy).
        options = dataclasses.replace(options, method="bfgs")
    size = chunk_size(B, batch_size, _device_count())
    first = min(options.max_iter, STRAGGLER_AFTER)
    out = _run_chunks(take, B, st, starts, reml, options, first, size, progress, hessian0)
    late = np.flatnonzero(out.opt.status == Status.MAX_ITERATIONS)
    if late.size and options.max_iter > first:
        more = _run_chunks(lambda index: take(late[index]), late.size, st, out.opt.x[late], reml,
                           options, options.max_iter - first, size, False, hessian0)
        more = more._replace(opt=more.opt._replace(iterations=more.opt.iterations + first))
        out = lazy_jax.tree_map(lambda a, b: _put(a, late, b), out, more)
    return out


def _fields(out) -> dict:
    """The arrays a :class:`BatchResult` keeps, from vmapped fits."""
    return dict(objective=out.opt.fun, fixef=out.cond.beta,
                fixef_se=np.sqrt(np.einsum("bii->bi", out.cond.vcov)), theta=out.opt.x,
                sigma=out.cond.sigma, status=out.opt.status, iterations=out.opt.iterations,
                lams=tuple(out.lams))


def given_hessian(hessian0, k: int):
    """A batch's starting Hessian as a (k, k) float array, or None (each fit then probes
    its own) where none is given or it is not a finite (k, k) matrix."""
    if hessian0 is None:
        return None
    hessian0 = np.asarray(hessian0, dtype=float)
    return hessian0 if hessian0.shape == (k, k) and np.all(np.isfinite(hessian0)) else None


GIVEN_HESSIAN_FTOL = 1e-2
"""A fit from a given starting Hessian (``fit_many``'s ``hessian0``) stops at this fraction
of ``Options.ftol``: its predicted decrease g'H^{-1}g rests on a model begun from another
response's curvature, and on a flat valley it underestimates the distance left.  Of
lme4's 100 sleepstudy REML refits (``tests/reference/batch``), one stopped 5e-7 above its
optimum, theta 1.7e-3 away, at 1e-12; at 1e-14 every fit agrees with the probed ones to
2.4e-5 in theta, in 7.2 iterations on average against 7.1 plus the 4 probing steps."""


@small_pages()
def fit_many(model, Y, reml: bool = True, *, batch_size: int | None = None,
             options: Options = Options(), progress: bool = False, theta0=None,
             hessian0=None) -> BatchResult:
    """Fit B responses on the model's design: Y is (B, nobs) or a DataFrame of B columns.

    A response with missing values (NaN) is fitted on its observed rows (its own blocks,
    same shapes), without failing the batch; one with too few observed rows to fit gets
    a non-converged status.  ``theta0``: the start of every fit; by default each
    response starts at its own moment estimates, as ``LMM.fit`` does
    (:func:`jaxhlm.start.moment_starts`; lme4's start for a response with missing values).
    ``hessian0``: every fit's starting Hessian for BFGS (the deviance's at or near
    ``theta0``: a refit's, the original fit's), instead of probing one per fit: fewer
    steps, and a smaller program (:func:`jaxhlm.optimize.minimize`'s ``probe``).

    Where the model's fit runs on the host (:mod:`jaxhlm.group_fit`, no residual
    structure), the first fits run there too (with missing values as above), until the
    host has spent :data:`HOST_BUDGET` seconds on this program in this process
    (:func:`_fit_on_host`); the rest, and later batches, run the compiled program in
    chunks of ``batch_size``.  ``options`` naming a strategy (``Options(method="bfgs")``)
    runs the compiled program throughout.
    """
    if isinstance(Y, pd.DataFrame):
        Y = Y.to_numpy(dtype=float).T
    Y = np.atleast_2d(np.asarray(Y, dtype=float))
    if Y.shape[1] != model.nobs:
        raise ValueError(f"each response needs {model.nobs} values (one per observation of the "
                         f"model); got responses of length {Y.shape[1]}")
    if np.isinf(Y).any():
        raise ValueError("responses contain infinite values; use NaN for a missing value")
    B = Y.shape[0]
    if B == 0:
        raise ValueError("no responses to fit: Y has 0 rows")
    if theta0 is None:
        starts = moment_starts(model.frame, model.structure, Y)
    else:
        start = np.asarray(theta0, float)
        starts = np.broadcast_to(start, (B, start.size))
    design, padded = model._host_blocks, model.bucketed
    if model.structure.residual is not None and np.isnan(Y).any():   # class sets per response
        take = _whiten.with_missing(padded, design, Y)
    elif model.structure.residual is not None:   # the design's class sets (jaxhlm.residual.whiten)
        def take(index):
            rows = _whiten.with_responses(design, model.structure, Y[index])
            if rows.sets is not None:
                rows = _whiten.padded_responses(padded, rows)
            return rows, _whiten.response_axes(rows)
    elif np.isnan(Y).any():   # per-response blocks on each one's observed rows
        def take(index):
            many = with_responses(model.frame, model.structure, design, Y[index])
            return padded.responses(many), response_axes(many)
    else:   # the responses' products once (and one device: the padded design put there once)
        @functools.cache
        def prepared():
            products = response_products(model.frame, model.structure, Y)
            if not stored_run.jax_free() and len(jax.devices()) == 1:
                return products, dataclasses.replace(padded, blocks=jax.device_put(padded.blocks))
            return products, padded

        def take(index):
            products, placed = prepared()
            many = with_products(design, products, index)
            return placed.responses(many), response_axes(many)

    hessian0 = given_hessian(hessian0, padded.structure.ntheta)
    if hessian0 is not None:
        options = dataclasses.replace(options, ftol=options.ftol * GIVEN_HESSIAN_FTOL)
    host = _on_host(model, options)
    parts, done = [], 0
    if host is not None:
        parts, done = _fit_on_host(host, padded.structure, Y, starts, reml, options, hessian0, progress)
    if done < B:
        rest = np.arange(done, B)
        out = _fit_batch(lambda index: take(rest[index]), B - done, padded.structure, starts[rest], reml,
                         options, batch_size, progress, hessian0)
        parts.append(_fields(out))
        _HOST_SECONDS[padded.structure] = np.inf   # its program is compiled now: the host's part is over
    return BatchResult(model=model, reml=bool(reml), **_joined(parts),
                       sources=((np.arange(B), take, padded.structure),))


def _joined(parts: list) -> dict:
    """The fields (:func:`_fields`) of consecutive runs of a batch's fits, joined in order
    (``lams``: term by term)."""
    return {k: tuple(map(np.concatenate, zip(*(part[k] for part in parts)))) if k == "lams"
            else np.concatenate([part[k] for part in parts]) for k in parts[0]}


HOST_BUDGET = 1.0
"""Seconds of fits on the host per compiled program (:func:`_fit_on_host`) in one process,
about what it costs to compile a batch program on a 2-core CPU; 0: the compiled program
at once."""

HOST_CHUNK = 1 << 21
"""Elements of the responses' cross-products (fits x G x d^2) per chunk of fits on the host."""

_HOST_SECONDS: dict = {}
"""Seconds spent on the host so far per padded structure (the compiled program's key);
infinite once that program has run in this process."""


def _on_host(model, options: Options):
    """The model's :class:`jaxhlm.group_fit.GroupFit` where ``fit_many`` may fit on the host
    (``Options(method="auto")``, no residual structure), else None."""
    from . import host_fit

    if options.method != "auto" or not host_fit.ENABLED or model.structure.residual is not None:
        return None
    return model._group_fit


def _fit_on_host(host, key, Y, starts, reml, options, hessian0, progress):
    """(the fields of :class:`BatchResult` per chunk, the fits done): the first responses
    fitted on the host (:meth:`jaxhlm.group_fit.GroupFit.fit_all`: nothing compiled), a
    chunk at a time, until all are done or the host has spent :data:`HOST_BUDGET` seconds
    on this program's fits in this process; the rest are left to the compiled program.

    Ski rental: a first call on a design needs the compiled program (about a second to
    compile on a 2-core CPU; a stored one: JAX's import and the load, 0.3 s) before it
    fits anything, and then fits about twice as fast as NumPy; renting the host until its
    bill reaches the purchase price costs at most twice what the better choice, made
    knowing the future, would.  Measured warm in one process (2-core CPU, 2026-12-05,
    ``benchmarks/first_calls.py``): 2,000 responses of a 120-row random-intercept design,
    0.030 s on the host against 0.020 s compiled; a sleepstudy ``bootstrap(1000)``,
    0.122 s against 0.094 s.  With missing values the host is faster even warm (0.13 s
    against 0.32 s: the compiled batch then carries every response's own blocks)."""
    B = Y.shape[0]
    spent, done, parts = _HOST_SECONDS.get(key, 0.0), 0, []
    size = max(1, HOST_CHUNK // host.K[0, 0].size)
    began = time.perf_counter()
    while done < B and spent < HOST_BUDGET:
        hi = min(B, done + size)
        t = time.perf_counter()
        out = host.responses(Y[done:hi]).fit_all(bool(reml), options, starts[done:hi], hessian0)
        parts.append(_fields(out))
        spent += time.perf_counter() - t
        done = hi
        if progress:
            report_progress(done, B, began)
    _HOST_SECONDS[key] = spent
    return parts, done


def fit_datasets(formula: str, datasets, reml: bool = True, *, batch_size: int | None = None,
                 options: Options = Options(), progress: bool = False, buckets: int = 1) -> BatchResult:
    """Fit one formula to each of many data sets with the same columns (a simulation
    study's replicates) in one compiled, vmapped batch: lme4's ``lmer`` on each.

    ``datasets``: a sequence of DataFrames.  Each gets its own model frame and blocks, as
    ``LMM(formula, df)`` would; data sets of different sizes and numbers of groups share
    one batch by *padding*: every data set's blocks are padded to the largest shapes
    (each term's largest number of levels, with padded levels that add exactly 0 to the
    objective; :mod:`jaxhlm.stacking`), so one compilation serves them all and each fit
    equals that data set's own fit.  Padding costs the largest data set's work for every
    fit; ``buckets`` > 1 sorts the data sets by size and pads each of that many groups to
    its own largest (one compilation per bucket) when sizes vary widely.

    Returns a :class:`BatchResult` in the order of ``datasets``; its ``model`` is the
    :class:`jaxhlm.stacking.Stacked` data sets (frames, per data set structures).  Terms
    are in one common order (decreasing largest number of levels): where a data set's
    own lme4 order differs (crossed factors whose level counts swap rank), its theta,
    SDs and correlations are the same fit in the common order.  Inside the batch nothing
    raises: a fit that fails has a non-converged ``status``.  Before it, a data set that
    cannot be fitted alone (an lme4 check, a non-numeric response), or that gives other
    fixed-effect columns or random terms than data set 0, raises
    :class:`jaxhlm.errors.DataError` (or ``FormulaError``) naming its index.  The batch is
    sharded across devices and chunked as in :func:`fit_many`; results do not depend on
    ``batch_size`` beyond rounding (another chunk size is another compiled program).
    """
    stacked = stack(formula, list(datasets), buckets)
    axes = Blocks(*[0] * len(Blocks._fields))
    parts, sources = [], []
    for bucket in stacked.buckets:
        B = bucket.index.size
        starts = np.broadcast_to(bucket.structure.theta_start(), (B, bucket.structure.ntheta))

        def take(index, blocks=bucket.blocks):
            return jax.tree_util.tree_map(lambda a: a[index], blocks), axes

        parts.append(_fields(_fit_batch(take, B, bucket.structure, starts, reml, options,
                                        batch_size, progress)))
        sources.append((bucket.index, take, bucket.structure))
    order = np.argsort(np.concatenate([b.index for b in stacked.buckets]))
    fields = jax.tree.map(lambda *a: np.concatenate(a)[order], *parts)
    return BatchResult(model=stacked, reml=bool(reml), **fields, sources=tuple(sources))


def _simulate_one(key, beta, theta, sigma, X, codes, Zs, st, rows=None):
    """One response: all its standard normal draws in one (L, K + 1) array ``z``, L the
    rows or a term's levels x p, whichever is more: column 0 gives e (by row), column
    k + 1 term k's u (by level, then column).  JAX's partitionable threefry makes a draw
    depend on the key and its flat index i (K + 1) + k alone, so the model's own rows and
    levels draw the same values whatever the padding; and the program holds one
    generator (each costs about 0.2 s of XLA's compilation on a CPU)."""
    lams = st.lambdas(theta)
    n, K = X.shape[0], len(st.terms)
    z = jax.random.normal(key, (max([n] + [t.nlevels * t.p for t in st.terms]), K + 1), X.dtype)
    y = X @ beta + sigma * _whiten.residual_noise(theta, rows, st, z[:n, 0])
    for k, (t, lam, code, Z) in enumerate(zip(st.terms, lams, codes, Zs)):
        u = sigma * z[:t.nlevels * t.p, k + 1].reshape(t.nlevels, t.p)
        b = u @ lam.T
        y = y + jnp.sum(Z * b[code], axis=1)
    return y


SIMULATE_ELEMENTS = 1 << 24
"""Responses are drawn in chunks of at most about this many standard normal draws
(replicates x rows x (terms + 1), :func:`_simulate_one`), to bound memory; every chunk has
the same shape (the last one padded): one compilation."""


_TRACES = {"simulate": 0}


def simulate_trace_count() -> int:
    """How many times the simulator's program has been traced in this process."""
    return _TRACES["simulate"]


def _draw_program(key_data, index, beta, theta, sigma, X, codes, Zs, st, rows=None):
    _TRACES["simulate"] += 1
    key = jax.random.wrap_key_data(key_data)
    one = lambda r, b, t, s: _simulate_one(jax.random.fold_in(key, r), b, t, s, X, codes, Zs, st, rows)  # noqa: E731
    return jax.vmap(one)(index, beta, theta, sigma)


_DRAW = Precompiled(_draw_program, (8,), "simulate", cpu_options=OLDER_EMITTERS, level=level_one,
                    without_jax=True)
"""The simulator, with XLA's older CPU emitters: its compilation 0.46 s instead of 0.71 s,
a chunk of 128 sleepstudy responses 0.92 ms instead of 0.60 ms (a fit of them takes 20 ms)."""


@small_pages()
def simulate_responses(model, fixef, theta, sigma, key, index) -> np.ndarray:
    """Responses (R, nobs) on ``model``'s design, one per entry of ``index`` (R,): lme4's
    ``simulate(m, newparams = ...)``.

    ``fixef`` (p,) or (R, p), ``theta`` (ntheta,) or (R, ntheta) in lme4's order, and
    ``sigma`` () or (R,) are the parameters, shared or one set per replicate; replicate r
    draws from ``jax.random.fold_in(key, index[r])``, so the same key and index give the
    same response whatever the batch or chunking.  The design is padded to its bucket
    (rows with X = 0 and Z = 0, and the terms' levels, :mod:`jaxhlm.padding`, with the
    fit's headroom and reach, :mod:`jaxhlm.bucket_choice`) and the
    replicates are chunked as fits are (:func:`chunk_size`), so nearby designs and
    numbers of replicates share one program; JAX's counter-based draws give each of the
    model's own rows and levels the same value whatever the padding.
    """
    index = np.asarray(index, dtype=np.int64)
    R = index.shape[0]
    st, frame = model.structure, model.frame
    fixef = np.broadcast_to(np.asarray(fixef, float), (R, st.p))
    theta = np.broadcast_to(np.asarray(theta, float), (R, st.ntheta))
    sigma = np.broadcast_to(np.asarray(sigma, float), (R,))
    n = model.nobs
    common = model.bucketed.structure   # the fit's bucket, and rows with headroom (jaxhlm.bucket_choice)
    rows = bucket_choice.choose(bucket_choice.kind("lmm-rows", common), (n,), (False,))[0]
    extra = ()
    if st.residual is not None:   # the structure's arrays padded too, where it can
        groups = bucket_choice.kind("lmm-groups", common)

        def ladder(count):   # a count the structure pads (compound symmetry's groups)
            return bucket_choice.choose(groups, (count,), (False,))[0]

        noise = _whiten.noise_rows(model._host_blocks, st.residual, rows, ladder)
        if noise is None:        # a structure that cannot: the model's own rows
            rows, common, noise = n, st, _whiten.noise_rows(model._host_blocks, st.residual, n)
        extra = (noise,)
    design = (_grow_rows(frame.X, rows), tuple(_grow_rows(t.codes.astype(np.int32), rows) for t in frame.terms),
              tuple(_grow_rows(t.Z, rows) for t in frame.terms))
    if lazy_jax.loaded() and jnp.issubdtype(getattr(key, "dtype", np.uint32), jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    key = np.asarray(key)
    program = _DRAW.for_structure(st)
    draws = max([rows] + [t.nlevels * t.p for t in common.terms]) * (1 + len(common.terms))
    size = min(chunk_size(R), max(1, SIMULATE_ELEMENTS // draws))
    out = np.empty((R, n))
    for lo in range(0, R, size):
        at = np.arange(lo, lo + size).clip(max=R - 1)  # the last chunk padded with its last row
        y = program(key, index[at], fixef[at], theta[at], sigma[at], *design, common, *extra)
        out[lo:lo + size] = np.asarray(y)[:min(size, R - lo), :n]
    return out


def _grow_rows(a: np.ndarray, rows: int) -> np.ndarray:
    """``a`` with zero rows appended up to ``rows``."""
    out = np.zeros((rows,) + a.shape[1:], dtype=a.dtype)
    out[:a.shape[0]] = a
    return out


def simulate(model, fixef, theta, sigma, nsim: int, seed: int = 0) -> np.ndarray:
    """``nsim`` responses from a fitted model (lme4's ``simulate``): array (nsim, nobs);
    replicate i draws from ``fold_in(key(seed), i)``."""
    key = stored_run.key_data(seed)   # on the host: JAX's key(seed) would compile two small programs
    if key is None or (lazy_jax.loaded() and jax.config.jax_default_prng_impl != "threefry2x32"):
        key = jax.random.key(seed)
    return simulate_responses(model, fixef, theta, sigma, key, np.arange(nsim))


def bootstrap(model, fixef, theta, sigma, reml: bool, nsim: int, seed: int = 0, *,
              batch_size: int | None = None, options: Options = Options(), progress: bool = False,
              hessian0=None) -> BatchResult:
    """Parametric bootstrap of a fit with these estimates: simulate ``nsim`` responses,
    refit each (lme4's ``bootMer``), starting each refit at the fit's theta as lme4's
    ``refit`` does, and BFGS from ``hessian0`` (the fit's Hessian model,
    ``Minimum.curvature``) where given."""
    Y = simulate(model, fixef, theta, sigma, nsim, seed)
    return fit_many(model, Y, reml, batch_size=batch_size, options=options, progress=progress,
                    theta0=theta, hessian0=hessian0)
