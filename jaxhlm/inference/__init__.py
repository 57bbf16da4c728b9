"""Inference on a fitted model's fixed effects: denominator degrees of freedom and tests
(lmerTest's and pbkrtest's), and likelihood-ratio tests between fits (lme4's).  One
module per method: :mod:`.satterthwaite`, :mod:`.kenward_roger`; the tables of one fit
in :mod:`.fixed`; tests between fits in :mod:`.lrt`."""

from .fixed import anova as anova_table
from .fixed import coef_table
from .lrt import anova
from .satterthwaite import deviance, satterthwaite_df, varpar, vcov_beta

__all__ = ["anova", "anova_table", "coef_table", "deviance", "satterthwaite_df", "varpar", "vcov_beta"]
