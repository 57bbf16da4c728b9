"""Probe: does equinox serve jaxhlm's compiled fit?  A model design as an ``eqx.Module``
(static structure, dynamic blocks) under ``eqx.filter_jit``, against the ``jax.jit``
with a static ``Structure`` that jaxhlm uses: warm call time of sleepstudy's fit, the
median of many calls, with ``block_until_ready``.

    python benchmarks/probes/equinox_dispatch.py [--reps 300]
"""

import argparse
import statistics
import time

import jaxhlm  # noqa: I001  (first: it quiets XLA's log before jax loads)

import equinox as eqx
import jax
from jaxhlm.blocks import Blocks
from jaxhlm.fitting import Options, _fit_program
from jaxhlm.structure import Structure


class Design(eqx.Module):
    """A model's design: the static structure and the blocks' arrays in one pytree."""

    structure: Structure = eqx.field(static=True)
    blocks: Blocks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=300)
    args = ap.parse_args()
    df = jaxhlm.datasets.load("sleepstudy")
    model = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", df)
    theta0 = jax.numpy.asarray(model.theta_start)
    blocks = jax.device_put(model.blocks)
    opts = Options()
    plain = jax.jit(_fit_program, static_argnums=(1, 2, 3))
    filtered = eqx.filter_jit(lambda design, reml, options, t: _fit_program(
        design.blocks, design.structure, reml, options, t))
    design = Design(model.structure, blocks)
    calls = {"jax.jit, static Structure": lambda: plain(blocks, model.structure, True, opts, theta0),
             "eqx.filter_jit, eqx.Module design": lambda: filtered(design, True, opts, theta0)}
    for name, call in calls.items():
        began = time.perf_counter()
        jax.block_until_ready(call())
        first = time.perf_counter() - began
        times = []
        for _ in range(args.reps):
            began = time.perf_counter()
            jax.block_until_ready(call())
            times.append(time.perf_counter() - began)
        print(f"{name:36s} first call {first:7.3f} s   warm median {1e6 * statistics.median(times):8.1f} us "
              f"(min {1e6 * min(times):.1f} us, {args.reps} calls)  device {jax.devices()[0]}")


if __name__ == "__main__":
    main()
