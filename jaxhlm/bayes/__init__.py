"""Bayesian tools on the same kernel: priors and blme's penalties (:mod:`.priors`), NUTS
posteriors with b integrated out (:mod:`.posterior`) and the chains as one compiled
program (:mod:`.chains`)."""
