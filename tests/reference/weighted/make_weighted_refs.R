# lme4 fits with prior weights, for tests/test_posterior.py (weights: row i has
# residual variance sigma^2 / w_i).  Run: Rscript make_weighted_refs.R  (lme4 1.1-31)
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
sleepstudy$w <- 1 + (sleepstudy$Days %% 3)          # 1, 2, 3, 1, 2, 3, ...
fits <- list(
  sleepstudy_weighted_reml = lmer(Reaction ~ Days + (Days | Subject), sleepstudy, weights = w, REML = TRUE),
  sleepstudy_weighted_ml = lmer(Reaction ~ Days + (Days | Subject), sleepstudy, weights = w, REML = FALSE))
for (name in names(fits)) {
  m <- fits[[name]]
  out <- list(formula = "Reaction ~ Days + (Days | Subject)", weights = "1 + (Days %% 3)",
              reml = isREML(m), objective = if (isREML(m)) REMLcrit(m) else deviance(m),
              theta = unname(getME(m, "theta")), fixef = unname(fixef(m)),
              fixef_se = unname(sqrt(diag(as.matrix(vcov(m))))), sigma = sigma(m),
              lme4 = as.character(packageVersion("lme4")))
  writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), paste0(name, ".json"))
}
