"""L-BFGS by optax (``method="lbfgs"``, or ``LBFGS(memory=m)``).

``optax.scale_by_lbfgs`` keeps the last ``memory`` parameter and gradient differences
and applies the two-loop recursion (Nocedal and Wright 2006, algorithms 7.4-7.5) for
the direction -P g, starting from a scaled identity; the loop of
:mod:`jaxhlm.optimize.loop` adds its backtracking line search, folding and snapping.
No Hessian is probed or stored, so a step costs one gradient and O(memory n) work:
the strategy for a theta of hundreds of elements, where BFGS's n x n model and its
eigendecomposition per step would dominate.  Mixed models rarely have such a theta;
for the usual few elements BFGS from a probed Hessian converges in fewer gradients
(``benchmarks/README.md``, "Optimiser strategies").
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class LBFGS:
    """optax's L-BFGS direction inside jaxhlm's loop (see the module docstring)."""

    memory: int = 10
    name = "lbfgs"
    probes = False

    def _transform(self):
        import optax

        return optax.scale_by_lbfgs(memory_size=self.memory)

    def evaluate(self, vg, x, steps):
        f, g = vg(x)
        return f, g, None

    def init(self, n, dtype):
        zero = jnp.zeros(n, dtype)
        return self._transform().init(zero), zero

    def start(self, state, H0):
        return state

    def update(self, state, x, g, s, y, H_c):
        direction, opt = self._transform().update(g, state[0], x)
        return opt, -direction

    def direction(self, state, g):
        d = state[1]
        return d, -jnp.dot(g, d)

    def cost(self, n: int) -> int:
        return 1
