"""Newton's method with a finite-difference Hessian at every iterate (``method="newton"``).

At each candidate x the n + 1 gradients at x and x + h_i e_i come from one ``vmap``;
with h_i = rel_step (1 + |x_i|) the Hessian's error is O(h) from truncation plus
O(eps |g| / h) from rounding, about 1e-6 relative: the steps stay superlinear, and the
answer itself rests on the exact gradient.  Eigenvalues are replaced by their absolute
values, and a negative curvature is followed out of a saddle
(:func:`jaxhlm.optimize.base.eigen_direction`).  The default for small models, whose
gradient is cheap (lme4's nearest is BOBYQA; MixedModels.jl offers Newton-type
methods through Optim.jl).
"""

from __future__ import annotations

import dataclasses

from ..lazy_jax import jax, jnp

from .base import eigen_direction


@dataclasses.dataclass(frozen=True)
class Newton:
    """Finite-difference Newton (see the module docstring)."""

    name = "newton"
    probes = False

    def evaluate(self, vg, x, steps):
        n = x.shape[0]
        h = steps(x)
        points = jnp.concatenate([x[None, :], x[None, :] + jnp.eye(n, dtype=x.dtype) * h[None, :]])
        (fs, warm), gs = jax.vmap(vg)(points)
        H = (gs[1:] - gs[0][None, :]) / h[:, None]
        return fs[0], gs[0], 0.5 * (H + H.T), jax.tree.map(lambda a: a[0], warm)

    def init(self, n, dtype):
        return jnp.eye(n, dtype=dtype)

    def start(self, state, H0):
        return state

    def update(self, state, x, g, s, y, H_c):
        return H_c

    def direction(self, state, g):
        return eigen_direction(g, state)

    def curvature(self, state):
        return state

    def cost(self, n: int) -> int:
        return n + 1
