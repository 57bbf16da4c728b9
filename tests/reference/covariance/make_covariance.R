# References for covariance structures (issue 15): nlme 3.1-162 (gls and lme with residual
# correlation and variance functions, pdCompSymm) and glmmTMB 1.1.5 (cs, ar1, diag terms).
# Usage (from the repository root):
#   Rscript tests/reference/covariance/make_covariance.R tests/reference/covariance
# Writes OUT/data/{Orthodont,Ovary,Machines,sleepstudy}.csv.gz and one JSON per model, with the
# fields of ../shared/tools/covariance.R: minus2loglik, fixef, fixef_se, sigma, corStruct
# (AR(1) phi or compound-symmetry rho, nlme's natural scale), varStruct, random-effect SDs and
# correlations.
suppressMessages({library(nlme); library(lme4); library(glmmTMB); library(jsonlite)})
out <- commandArgs(TRUE)[1]
dir.create(file.path(out, "data"), showWarnings = FALSE, recursive = TRUE)
csv <- function(d, name) {
  con <- gzfile(file.path(out, "data", paste0(name, ".csv.gz")), "w")
  write.csv(d, con, row.names = FALSE); close(con)
}
orth <- as.data.frame(Orthodont); orth$visit <- orth$age / 2; orth$Subject <- as.character(orth$Subject); orth$Sex <- as.character(orth$Sex)
ovary <- as.data.frame(Ovary); ovary$Mare <- as.character(ovary$Mare)
mach <- as.data.frame(Machines); mach$Worker <- as.character(mach$Worker); mach$Machine <- as.character(mach$Machine)
sleep <- as.data.frame(sleepstudy); sleep$Subject <- as.character(sleep$Subject); sleep$Days1 <- sleep$Days + 1
csv(orth, "Orthodont"); csv(ovary, "Ovary"); csv(mach, "Machines"); csv(sleep, "sleepstudy")
# factors as the tests build them (sorted levels; agef in time order)
orth$Subject <- factor(orth$Subject); orth$Sex <- factor(orth$Sex); orth$agef <- factor(orth$age)
ovary$Mare <- factor(ovary$Mare, levels = unique(ovary$Mare))
mach$Worker <- factor(mach$Worker); mach$Machine <- factor(mach$Machine)
sleep$Subject <- factor(sleep$Subject)

save <- function(name, dataset, call, fields) {
  o <- c(list(name = name, dataset = dataset, call = call,
              versions = list(nlme = as.character(packageVersion("nlme")),
                              glmmTMB = as.character(packageVersion("glmmTMB")),
                              R = paste(R.version$major, R.version$minor, sep = "."))), fields)
  writeLines(toJSON(o, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null", na = "null"),
             file.path(out, paste0(name, ".json")))
  cat(name, fields$minus2loglik, "\n")
}
nl <- function(m) {
  cs <- m$modelStruct
  fe <- if (inherits(m, "lme")) fixef(m) else coef(m)
  vc <- if (inherits(m, "lme")) VarCorr(m) else NULL
  list(method = m$method, minus2loglik = -2 * as.numeric(logLik(m)),
       fixef_names = I(names(fe)), fixef = I(unname(fe)), fixef_se = I(unname(sqrt(diag(vcov(m))))),
       sigma = m$sigma,
       corStruct = if (!is.null(cs$corStruct)) I(unname(coef(cs$corStruct, unconstrained = FALSE))) else NULL,
       varStruct = if (!is.null(cs$varStruct)) I(unname(coef(cs$varStruct, unconstrained = FALSE))) else NULL,
       varStruct_names = if (!is.null(cs$varStruct)) I(names(coef(cs$varStruct, unconstrained = FALSE))) else NULL,
       random_sd = if (!is.null(vc)) I(as.numeric(vc[-nrow(vc), "StdDev"])) else NULL,
       random_cov = if (inherits(m, "lme")) I(unname(matrix(as.numeric(getVarCov(m)), nrow(getVarCov(m))))) else NULL)
}
tmb <- function(m) list(method = if (m$modelInfo$REML) "REML" else "ML",
  minus2loglik = -2 * as.numeric(logLik(m)),
  fixef_names = I(names(fixef(m)$cond)), fixef = I(unname(fixef(m)$cond)),
  fixef_se = I(unname(sqrt(diag(vcov(m)$cond)))), sigma = sigma(m),
  vc_sd = lapply(VarCorr(m)$cond, function(v) I(unname(attr(v, "stddev")))),
  vc_cor = lapply(VarCorr(m)$cond, function(v) I(unname(attr(v, "correlation")))))
ctl <- lmeControl(maxIter = 500, msMaxIter = 500, niterEM = 100, msTol = 1e-12, tolerance = 1e-10)
gctl <- glsControl(maxIter = 500, msMaxIter = 500, msTol = 1e-12, tolerance = 1e-10)

for (reml in c(TRUE, FALSE)) {
  meth <- if (reml) "REML" else "ML"; tag <- tolower(meth)
  # random-effect structures (glmmTMB)
  m <- glmmTMB(score ~ Machine + cs(0 + Machine | Worker), mach, REML = reml)
  save(paste0("machines_tmb_cs_", tag), "Machines", "glmmTMB(score ~ Machine + cs(0 + Machine | Worker))", tmb(m))
  m <- glmmTMB(distance ~ age + ar1(0 + agef | Subject), orth, REML = reml)
  save(paste0("orthodont_tmb_ar1_", tag), "Orthodont", "glmmTMB(distance ~ age + ar1(0 + agef | Subject)), agef = factor(age)", tmb(m))
  m <- glmmTMB(Reaction ~ Days + diag(Days | Subject), sleep, REML = reml)
  save(paste0("sleepstudy_tmb_diag_", tag), "sleepstudy", "glmmTMB(Reaction ~ Days + diag(Days | Subject))", tmb(m))
  # homogeneous compound symmetry (nlme's pdCompSymm)
  m <- lme(score ~ Machine, mach, random = list(Worker = pdCompSymm(~ 0 + Machine)), method = meth, control = ctl)
  save(paste0("machines_lme_pdcs_", tag), "Machines", "lme(score ~ Machine, random = list(Worker = pdCompSymm(~ 0 + Machine)))", nl(m))
  # residual structures (nlme)
  m <- lme(follicles ~ sin(2 * pi * Time) + cos(2 * pi * Time), ovary, random = ~ 1 | Mare,
           correlation = corAR1(), method = meth, control = ctl)
  save(paste0("ovary_lme_ar1_", tag), "Ovary", "lme(follicles ~ sin(2*pi*Time) + cos(2*pi*Time), random = ~ 1 | Mare, correlation = corAR1())", nl(m))
  m <- lme(Reaction ~ Days, sleep, random = ~ 1 | Subject, correlation = corAR1(form = ~ Days | Subject),
           method = meth, control = ctl)
  save(paste0("sleepstudy_lme_ar1_", tag), "sleepstudy", "lme(Reaction ~ Days, random = ~ 1 | Subject, correlation = corAR1(form = ~ Days | Subject))", nl(m))
  m <- lme(Reaction ~ Days, sleep, random = ~ Days | Subject, correlation = corAR1(form = ~ Days | Subject),
           weights = varPower(form = ~ Days1), method = meth, control = ctl)
  save(paste0("sleepstudy_lme_ar1_power_", tag), "sleepstudy", "lme(Reaction ~ Days, random = ~ Days | Subject, correlation = corAR1(form = ~ Days | Subject), weights = varPower(form = ~ Days1))", nl(m))
  m <- lme(distance ~ age + Sex, orth, random = ~ 1 | Subject, weights = varIdent(form = ~ 1 | Sex), method = meth, control = ctl)
  save(paste0("orthodont_lme_varident_", tag), "Orthodont", "lme(distance ~ age + Sex, random = ~ 1 | Subject, weights = varIdent(form = ~ 1 | Sex))", nl(m))
  m <- gls(distance ~ age + Sex, orth, correlation = corCompSymm(form = ~ 1 | Subject), method = meth, control = gctl)
  save(paste0("orthodont_gls_cs_", tag), "Orthodont", "gls(distance ~ age + Sex, correlation = corCompSymm(form = ~ 1 | Subject))", nl(m))
  m <- gls(Reaction ~ Days, sleep, correlation = corAR1(form = ~ Days | Subject), method = meth, control = gctl)
  save(paste0("sleepstudy_gls_ar1_", tag), "sleepstudy", "gls(Reaction ~ Days, correlation = corAR1(form = ~ Days | Subject))", nl(m))
  # visit = age / 2 (4, ..., 7): with form = ~ age every lag is even, the likelihood is even in
  # phi, and nlme stays at its start phi = 0 (a stationary point; jaxhlm finds the optimum)
  m <- gls(distance ~ age, orth[-c(2, 7, 15), ], correlation = corAR1(form = ~ visit | Subject),
           weights = varIdent(form = ~ 1 | Sex), method = meth, control = gctl)
  save(paste0("orthodont_gls_ar1_gaps_", tag), "Orthodont without rows 2, 7, 15",
       "gls(distance ~ age, correlation = corAR1(form = ~ visit | Subject), weights = varIdent(form = ~ 1 | Sex))", nl(m))
}
