"""L-BFGS by optax (``method="lbfgs"``, or ``LBFGS(memory=m)``).

``optax.scale_by_lbfgs`` keeps the last ``memory`` parameter and gradient differences
and applies the two-loop recursion (Nocedal and Wright 2006, algorithms 7.4-7.5) for
the direction -P g, starting from a scaled identity; the loop of
:mod:`jaxhlm.optimize.loop` adds its backtracking line search, folding and snapping.
No Hessian is probed or stored, so a step costs one gradient and O(memory n) work:
the strategy for a large theta, where probing BFGS's starting Hessian (n + 1
gradients) and Newton's Hessian per step cost most (``benchmarks/README.md``,
"Optimiser strategies": at 36 elements, 2.4x faster than BFGS).  A pair without
positive curvature restarts the memory (optax would keep it with a negative weight).
"""

from __future__ import annotations

import dataclasses

from ..lazy_jax import jax, jnp


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
        (f, warm), g = vg(x)
        return f, g, None, warm

    def init(self, n, dtype):
        zero = jnp.zeros(n, dtype)
        return self._transform().init(zero), zero

    def start(self, state, H0):
        return state

    def update(self, state, x, g, s, y, H_c):
        """optax's direction from the memory; where the pair (s, y) has no positive
        curvature (s'y <= 0: optax would keep it, with a negative weight) or the
        direction does not descend, the memory restarts at x (a scaled gradient step)."""
        tx = self._transform()
        direction, opt = tx.update(g, state[0], x)
        fresh_direction, fresh = tx.update(g, tx.init(x), x)
        bad = (jnp.dot(s, y) <= 1e-10 * jnp.linalg.norm(s) * jnp.linalg.norm(y)) | (jnp.dot(g, direction) <= 0)
        keep = lambda a, b: jnp.where(bad, b, a)  # noqa: E731
        return jax.tree.map(keep, opt, fresh), -keep(direction, fresh_direction)

    def direction(self, state, g):
        d = state[1]
        return d, -jnp.dot(g, d)

    def curvature(self, state):
        return None

    def cost(self, n: int) -> int:
        return 1
