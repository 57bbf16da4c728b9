"""BFGS from a finite-difference starting Hessian (``method="bfgs"``).

The loop first probes the Hessian at x0 one column per step (eigenvalues made
positive, :func:`jaxhlm.optimize.base.positive`), then each accepted step updates it
by BFGS (Nocedal and Wright 2006, eq. 6.19), skipped when the curvature condition
y's > 0 fails: one gradient per iteration.  For large models, whose gradient costs
several factorizations, and for vmapped batches, where fits step together.
"""

from __future__ import annotations

import dataclasses

from ..lazy_jax import jnp

from .base import positive, spd_direction


def bfgs_update(H, s, y):
    """BFGS update of the Hessian model B (Nocedal and Wright 2006, eq. 6.19)."""
    sy = jnp.dot(s, y)
    Bs = H @ s
    sBs = jnp.dot(s, Bs)
    ok = (sy > 1e-10 * jnp.linalg.norm(s) * jnp.linalg.norm(y)) & (sBs > 0)
    updated = H - jnp.outer(Bs, Bs) / jnp.where(ok, sBs, 1.0) + jnp.outer(y, y) / jnp.where(ok, sy, 1.0)
    return jnp.where(ok, updated, H)


@dataclasses.dataclass(frozen=True)
class BFGS:
    """BFGS with a probed starting Hessian (see the module docstring)."""

    name = "bfgs"
    probes = True

    def evaluate(self, vg, x, steps):
        (f, warm), g = vg(x)
        return f, g, None, warm

    def init(self, n, dtype):
        return jnp.eye(n, dtype=dtype)

    def start(self, state, H0):
        return positive(H0)

    def update(self, state, x, g, s, y, H_c):
        return bfgs_update(state, s, y)

    def direction(self, state, g):
        return spd_direction(g, state)

    def curvature(self, state):
        return state

    def cost(self, n: int) -> int:
        return 1
