"""The blocks' split: a pattern computed once (NumPy) and values computed from
(weights, y) by one function, in NumPy (the precomputed path) or inside jit and vmap
(PIRLS weights, a response per fit)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxhlm
from jaxhlm import blocks as _blocks
from jaxhlm.families.gaussian import objective

CASES = [("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
         ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
         ("Pastes", "strength ~ 1 + (1 | batch/cask)"),
         ("sleepstudy", "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)")]


def _in_jit(pattern, st):
    return jax.jit(lambda w, y: _blocks.values(pattern, st, w, y, 1.0, jnp))


@pytest.mark.parametrize("dataset,formula", CASES)
def test_values_inside_jit_equal_the_precomputed_blocks(dataset, formula):
    df = jaxhlm.datasets.load(dataset)
    weights = np.random.default_rng(0).uniform(0.5, 2.0, len(df))
    for model in (jaxhlm.LMM(formula, df), jaxhlm.LMM(formula, df.assign(w=weights), weights="w")):
        frame, st = model.frame, model.structure
        w = np.ones(frame.nobs) if frame.weights is None else frame.weights
        got = _in_jit(_blocks.pattern(frame), st)(jnp.asarray(w), jnp.asarray(frame.y))
        for name, a, b in zip(_blocks.Blocks._fields, got, model.blocks):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-9, err_msg=name)


def test_weights_changed_inside_jit_give_that_weighted_model():
    df = jaxhlm.datasets.load("sleepstudy")
    plain = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", df)
    pattern, st = _blocks.pattern(plain.frame), plain.structure
    ws = np.random.default_rng(1).uniform(0.2, 3.0, (3, len(df)))
    ws[2, ::7] = 0.0                  # weight 0 leaves a row out
    theta = jnp.asarray([0.9, 0.1, 0.2])

    @jax.jit
    @functools.partial(jax.vmap, in_axes=(0, None))
    def criterion(w, y):
        return objective(theta, _blocks.values(pattern, st, w, y, 1.0, jnp), st, True)

    got = criterion(jnp.asarray(ws), jnp.asarray(plain.frame.y))
    for w, value in zip(ws, got):
        keep = w > 0
        weighted = jaxhlm.LMM("Reaction ~ Days + (Days | Subject)", df[keep].assign(w=w[keep]), weights="w")
        assert float(value) == pytest.approx(weighted.objective(np.asarray(theta)), rel=1e-11)


DENSE_CASES = CASES[:2] + [("cake", "angle ~ temp + (1 | recipe:replicate) + (temp | recipe)")]


@pytest.mark.parametrize("dataset,formula", DENSE_CASES)
def test_schur_complement_densely_equals_by_pairs(dataset, formula):
    """Term 1's Schur complement formed by the pairs or densely from the COO entries (no
    pairs: blocks.by_pairs' choice for crossed designs) gives the same objective,
    gradient and conditional estimates, weighted or not, padded or not."""
    from jaxhlm import padding
    from jaxhlm.families.gaussian import conditional

    df = jaxhlm.datasets.load(dataset)
    weights = np.random.default_rng(2).uniform(0.5, 2.0, len(df))
    model = jaxhlm.LMM(formula, df.assign(w=weights), weights="w")
    st = model.structure
    by_pairs = _blocks.build(model.frame, pairs=True)[1]
    dense = _blocks.build(model.frame, pairs=False)[1]
    assert by_pairs.pair_out.shape[0] > 0 and dense.pair_out.shape[0] == 0
    theta = jnp.asarray(np.random.default_rng(3).uniform(0.2, 1.2, st.ntheta))
    padded = padding.bucket(st, dense)
    got = {}
    for name, (s, b) in {"pairs": (st, by_pairs), "dense": (st, dense),
                         "dense padded": (padded.structure, padded.blocks)}.items():
        value, grad = jax.jit(jax.value_and_grad(lambda t, b=b, s=s: objective(t, b, s, True)))(theta)
        cond = jax.jit(lambda t, b=b, s=s: conditional(t, b, s, True))(theta)
        got[name] = value, grad, padding.unpad(_Cond(cond), st).cond
    # The same sums in another order: rounding (1e-16 relative) amplified by the
    # conditioning of the solves (cake's temp column: up to 1e-10 relative seen).
    ref = got["pairs"]
    for name in ("dense", "dense padded"):
        value, grad, cond = got[name]
        assert float(value) == pytest.approx(float(ref[0]), rel=1e-12)
        np.testing.assert_allclose(grad, ref[1], rtol=1e-8, atol=1e-8 * float(jnp.max(jnp.abs(ref[1]))))
        for field in ("beta", "sigma", "vcov"):
            np.testing.assert_allclose(getattr(cond, field), getattr(ref[2], field), rtol=1e-8, err_msg=field)
        for k, (b, v) in enumerate(zip(cond.b, cond.b_var)):
            np.testing.assert_allclose(b, ref[2].b[k], rtol=1e-8, atol=1e-9, err_msg=f"b of term {k}")
            np.testing.assert_allclose(v, ref[2].b_var[k], rtol=1e-8, atol=1e-12, err_msg=f"b_var of term {k}")


class _Cond:
    """A stand-in with the ``cond`` field that :func:`jaxhlm.padding.unpad` reads."""

    def __init__(self, cond):
        self.cond = cond

    def _replace(self, cond):
        return _Cond(cond)


def test_crossed_designs_drop_the_pairs():
    """A design whose term-1 levels each meet most of the rest is formed densely, a sparse
    nested one by the pairs (blocks.by_pairs)."""
    import pandas as pd

    rng = np.random.default_rng(4)
    subj = np.repeat(np.arange(60), 30)
    item = np.concatenate([rng.choice(40, 30, replace=False) for _ in range(60)])
    crossed = pd.DataFrame({"y": rng.normal(size=subj.size), "x": rng.normal(size=subj.size),
                            "subj": subj.astype(str), "item": item.astype(str)})
    assert jaxhlm.LMM("y ~ x + (x | subj) + (1 | item)", crossed).blocks.pair_out.shape[0] == 0
    nested = jaxhlm.LMM("strength ~ 1 + (1 | batch/cask)", jaxhlm.datasets.load("Pastes"))
    assert nested.blocks.pair_out.shape[0] > 0


def test_the_pairs_order_is_the_stable_argsort_of_their_segment():
    """blocks._stable_order (a sort of keys that carry their positions) is
    np.argsort(high * base + low, kind="stable"), with the keys in that order: with many equal keys, with bases below
    and above 2**16, without entries, and where the keys leave no room for positions."""
    from jaxhlm.blocks import _stable_order

    rng = np.random.default_rng(2)
    for base, n in ((900, 20_000), (70_000, 20_000), (30, 50_000), (5, 0), (2 ** 50, 2_000)):
        high, low = rng.integers(0, min(base, 1000), n), rng.integers(0, base, n)
        order, keys = _stable_order(high, low, base)
        np.testing.assert_array_equal(order, np.argsort(high * base + low, kind="stable"))
        np.testing.assert_array_equal(keys, (high * base + low)[order])
