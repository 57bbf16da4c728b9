"""Inference on a fitted model's fixed effects: denominator degrees of freedom and tests
(lmerTest's and pbkrtest's), and likelihood-ratio tests between fits (lme4's).  One
module per method: :mod:`.satterthwaite`, :mod:`.lrt`."""

from .lrt import anova
from .satterthwaite import coef_table, deviance, satterthwaite_df, varpar, vcov_beta

__all__ = ["anova", "coef_table", "deviance", "satterthwaite_df", "varpar", "vcov_beta"]
