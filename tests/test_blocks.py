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
