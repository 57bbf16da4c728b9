"""Inference on a fitted model's fixed effects: denominator degrees of freedom and tests
(lmerTest's and pbkrtest's).  One module per method: :mod:`.satterthwaite`."""

from .satterthwaite import coef_table, deviance, satterthwaite_df, varpar, vcov_beta

__all__ = ["coef_table", "deviance", "satterthwaite_df", "varpar", "vcov_beta"]
