"""Tooling around the library, not part of a fit: benchmark grids (:mod:`.bench`),
simulation studies (:mod:`.study`), their TOML configs (:mod:`.configs`), simulated
designs (:mod:`.designs`), plots (:mod:`.plots`) and the peers' timing scripts
(:mod:`.peers`: lme4, statsmodels, Stan)."""
