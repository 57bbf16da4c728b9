# blme references for the penalized ("posterior mode") fits, plus a numerical check of the
# penalty formula written up in NOTES.md (same folder).
# Usage: Rscript tests/reference/blme/make_blme_refs.R [DATADIR] [OUTDIR]
#   DATADIR: the data sets as CSV (default shared/data, written by shared/tools/export_data.R)
#   OUTDIR:  where NAME.json and verification.txt go (default tests/reference/blme)
# Made with R 4.2.2, lme4 1.1-31, blme 1.0-5; JSON numbers have 15 significant digits
# (jsonlite's most, digits = NA).
#
# Optimizer. blme's deviance function returns +Inf when a diagonal element of Lambda is 0
# (log 0 in the prior), and an Inf value breaks the quadratic models of bobyqa and of
# nloptwrap (NLopt's BOBYQA, lme4's default): for sleepstudy both stop early, far from the
# optimum and with "Model failed to converge" warnings (REML: penalized criterion 1747.92 with
# nloptwrap, 1751.89 with bobyqa, against 1747.8424 at the optimum). The reference fits are
# therefore made in two blmer() calls: first lmerControl(optimizer = "Nelder_Mead", optCtrl =
# list(FtolAbs = 1e-12, XtolRel = 1e-12, maxfun = 1e5)), which copes with Inf, then a polish
# from its theta (start = list(theta = ...)) with lmerControl(optimizer = "bobyqa", optCtrl =
# list(rhobeg = 1e-3, rhoend = 1e-12, maxfun = 1e5)), whose steps stay clear of theta = 0 (the
# polish lowers the criterion by 1e-10 to 1e-9 and moves theta by ~3e-6: theta is determined to
# about 1e-6). Each is checked against two independent optimizations of the formula of NOTES.md
# (optim L-BFGS-B, minqa::bobyqa with the diagonal thetas bounded away from 0). blme's own default-control fit (nloptwrap) is kept in
# each JSON under "blme_default_control_fit" for the record; do not test against it.
#
# Per fit, NAME.json holds:
#   formula, reml, prior (the prior as asked for, blme's defaults written out), prior_blme
#   (blme's own toString of the evaluated prior), optimizer, theta (lme4's order), theta_names,
#   fixef_names, fixef, fixef_se (sqrt(diag(vcov(m)))), sigma (sigma(m)), varcorr
#   (as.data.frame(VarCorr(m))), singular (isSingular(m)), nobs, ngroups,
#   objective: blme's penalized criterion = devcomp$cmp[["REML"]] (REML fits) or [["dev"]]
#     (ML fits) + devcomp$cmp[["penalty"]]: the value blme's optimizer minimized; equals
#     blme's own deviance function at theta (objective_blme_devfun).
#   objective_unpenalized_blme: what REMLcrit(m) (REML) / deviance(m) (ML) return for a blme
#     fit: lme4's criterion at blme's theta, i.e. WITHOUT the prior (blme stores the penalty
#     separately in cmp[["penalty"]], printed as "Prior dev").
#   penalty: devcomp$cmp[["penalty"]].
#   lme4_objective_at_theta: lme4's own profiled deviance / REML criterion at the same theta,
#     from mkLmerDevfun(lFormula(...)) (no blme involved).
#   penalty_formula: the penalty of NOTES.md evaluated at theta; formula_objective =
#     lme4_objective_at_theta + penalty_formula.
#   devcomp_cmp: all of m@devcomp$cmp (NA -> null).
#   sigma_formula: sqrt(pwrss / (n - p)) (REML) or sqrt(pwrss / n) (ML) with pwrss from lme4's
#     devfun at theta.
#   verification: the formula's optimum by optim(L-BFGS-B) and minqa::bobyqa (theta, value,
#     max |theta - reference theta|).
#   lme4_fit: the same model fitted by lmer() (bobyqa), no prior, for comparison.
#   blme_default_control_fit: blmer() with its default control, as is (see above).
suppressMessages({library(blme); library(jsonlite); library(minqa)})
args <- commandArgs(TRUE)
datadir <- if (length(args) >= 1) args[1] else "shared/data"
outdir <- if (length(args) >= 2) args[2] else "tests/reference/blme"
dir.create(outdir, showWarnings = FALSE, recursive = TRUE)

fits <- list(
  list(name = "dyestuff2_wishart_reml", dataset = "Dyestuff2", factors = "Batch",
       formula = "Yield ~ 1 + (1 | Batch)", reml = TRUE, prior = "wishart",
       prior_text = "wishart(df = level.dim + 2.5, scale = Inf, common.scale = TRUE, posterior.scale = \"cov\")"),
  list(name = "dyestuff2_wishart_ml", dataset = "Dyestuff2", factors = "Batch",
       formula = "Yield ~ 1 + (1 | Batch)", reml = FALSE, prior = "wishart",
       prior_text = "wishart(df = level.dim + 2.5, scale = Inf, common.scale = TRUE, posterior.scale = \"cov\")"),
  list(name = "dyestuff2_gamma_reml", dataset = "Dyestuff2", factors = "Batch",
       formula = "Yield ~ 1 + (1 | Batch)", reml = TRUE, prior = "gamma",
       prior_text = "gamma(shape = 2.5, rate = 0, common.scale = TRUE, posterior.scale = \"sd\")"),
  list(name = "sleepstudy_wishart_reml", dataset = "sleepstudy", factors = "Subject",
       formula = "Reaction ~ Days + (Days | Subject)", reml = TRUE, prior = "wishart",
       prior_text = "wishart(df = level.dim + 2.5, scale = Inf, common.scale = TRUE, posterior.scale = \"cov\")"),
  list(name = "sleepstudy_wishart_ml", dataset = "sleepstudy", factors = "Subject",
       formula = "Reaction ~ Days + (Days | Subject)", reml = FALSE, prior = "wishart",
       prior_text = "wishart(df = level.dim + 2.5, scale = Inf, common.scale = TRUE, posterior.scale = \"cov\")")
)

ref_ctrl <- lmerControl(optimizer = "Nelder_Mead",
                        optCtrl = list(FtolAbs = 1e-12, XtolRel = 1e-12, maxfun = 1e5))
polish_ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhobeg = 1e-3, rhoend = 1e-12, maxfun = 1e5))
ref_ctrl_text <- paste('lmerControl(optimizer = "Nelder_Mead", optCtrl = list(FtolAbs = 1e-12, XtolRel = 1e-12, maxfun = 1e5)),',
                       'then from its theta lmerControl(optimizer = "bobyqa", optCtrl = list(rhobeg = 1e-3, rhoend = 1e-12, maxfun = 1e5))')

capture <- function(expr) {
  warns <- character(); msgs <- character()
  value <- withCallingHandlers(expr,
    warning = function(w) { warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning") },
    message = function(m) { msgs <<- c(msgs, trimws(conditionMessage(m))); invokeRestart("muffleMessage") })
  list(value = value, warnings = warns, messages = msgs)
}

# The penalty of NOTES.md, for these priors (scale = Inf / rate = 0, common.scale = TRUE):
# per random-effect term k with q_k columns and relative covariance factor Lambda_k (lower
# triangular, q_k x q_k, one block of lme4's Lambda):
#   wishart(df = nu):         -(nu - q_k - 1) * log det(Lambda_k Lambda_k') = -2 (nu - q_k - 1) sum_i log Lambda_k[i,i]
#   gamma(shape = a, rate=0): -2 (a - 1) log Lambda_k            (q_k = 1 only; Lambda_k = theta_k)
# (+Inf if any Lambda_k[i,i] <= 0 for wishart). Defaults: nu = q_k + 2.5, a = 2.5 -> both -3 sum_i log Lambda_k[i,i].
penalty_fn <- function(theta, cnms, prior) {
  pen <- 0; off <- 0
  for (k in seq_along(cnms)) {
    q <- length(cnms[[k]]); nth <- q * (q + 1) / 2
    L <- matrix(0, q, q); L[lower.tri(L, diag = TRUE)] <- theta[off + seq_len(nth)]
    off <- off + nth
    dg <- diag(L)
    if (prior == "wishart") {
      nu <- q + 2.5
      pen <- pen + if (any(dg <= 0)) Inf else -2 * (nu - q - 1) * sum(log(dg))
    } else if (prior == "gamma") {
      stopifnot(q == 1)
      pen <- pen - 2 * (2.5 - 1) * log(dg)
    } else stop("unknown prior")
  }
  pen
}

nullify <- function(x) { x <- as.list(x); lapply(x, function(v) if (is.na(v)) NULL else v) }
vc_rows <- function(m) {
  vc <- as.data.frame(VarCorr(m))
  lapply(seq_len(nrow(vc)), function(i) list(
    grp = vc$grp[i], var1 = if (is.na(vc$var1[i])) NULL else vc$var1[i],
    var2 = if (is.na(vc$var2[i])) NULL else vc$var2[i], vcov = vc$vcov[i], sdcor = vc$sdcor[i]))
}

verif_lines <- character()
vlog <- function(...) { s <- sprintf(...); verif_lines <<- c(verif_lines, s); cat(s, "\n") }

for (f in fits) {
  cc <- setNames(rep("factor", length(f$factors)), f$factors)
  d <- read.csv(file.path(datadir, paste0(f$dataset, ".csv")), colClasses = cc)
  form <- as.formula(f$formula)
  cov_prior <- f$prior
  blme_call <- function(control, start = NULL) {
    if (cov_prior == "wishart") blmer(form, d, REML = f$reml, control = control, start = start)
    else blmer(form, d, REML = f$reml, control = control, start = start, cov.prior = gamma)
  }
  fit_nm <- capture(blme_call(ref_ctrl))
  fit <- capture(blme_call(polish_ctrl, start = list(theta = getME(fit_nm$value, "theta"))))
  m <- fit$value
  cmp <- m@devcomp$cmp
  crit <- if (f$reml) "REML" else "dev"
  objective <- cmp[[crit]] + cmp[["penalty"]]
  theta <- getME(m, "theta")
  # blme's own deviance function (devFunOnly = TRUE) at theta
  bdf <- if (cov_prior == "wishart") blmer(form, d, REML = f$reml, devFunOnly = TRUE)
         else blmer(form, d, REML = f$reml, devFunOnly = TRUE, cov.prior = gamma)
  obj_bdf <- bdf(as.numeric(theta))
  # lme4's unpenalized deviance function
  lf <- lFormula(form, d, REML = f$reml)
  ldf <- do.call(mkLmerDevfun, lf)
  lme4_obj <- ldf(as.numeric(theta))
  rho <- environment(ldf)
  pwrss <- rho$resp$wrss() + rho$pp$sqrL(1)
  n <- nrow(d); p <- ncol(lf$X)
  sigma_formula <- sqrt(pwrss / (n - if (f$reml) p else 0))
  beta_formula <- rho$pp$beta(1)
  cnms <- lf$reTrms$cnms
  pen_formula <- penalty_fn(as.numeric(theta), cnms, cov_prior)
  fobj <- function(th) ldf(th) + penalty_fn(th, cnms, cov_prior)
  # independent optimizations of the formula, from lme4's default start
  th0 <- lf$reTrms$theta
  lower <- lf$reTrms$lower
  lower_pos <- ifelse(lower == 0, 1e-8, lower)
  o1 <- optim(th0, fobj, method = "L-BFGS-B", lower = lower_pos,
              control = list(factr = 1, pgtol = 0, maxit = 10000))
  o2 <- bobyqa(th0, fobj, lower = ifelse(lower == 0, 1e-3, lower),
               control = list(rhobeg = 0.1, rhoend = 1e-10, maxfun = 10000))
  # lme4 without prior, and blme with its default control
  lm4 <- capture(lmer(form, d, REML = f$reml, control = lmerControl(optimizer = "bobyqa")))$value
  dflt <- capture(blme_call(lmerControl()))
  md <- dflt$value; cmpd <- md@devcomp$cmp

  vlog("== %s (%s, REML=%s)", f$name, f$formula, f$reml)
  vlog("  theta (blme, Nelder_Mead)      = %s, objective %.10f", paste(sprintf("%.10f", getME(fit_nm$value, "theta")), collapse = ", "),
       sum(fit_nm$value@devcomp$cmp[c(crit, "penalty")]))
  vlog("  theta (blme, + bobyqa polish)  = %s", paste(sprintf("%.10f", theta), collapse = ", "))
  vlog("  blme penalized objective       = %.10f  (cmp %s %.10f + penalty %.10f)", objective, crit, cmp[[crit]], cmp[["penalty"]])
  vlog("  blme devfun(theta)             = %.10f", obj_bdf)
  vlog("  lme4 devfun(theta)             = %.10f  (= cmp %s: diff %.2e)", lme4_obj, crit, lme4_obj - cmp[[crit]])
  vlog("  penalty formula(theta)         = %.10f  (diff to cmp penalty %.2e)", pen_formula, pen_formula - cmp[["penalty"]])
  vlog("  lme4 + formula                 = %.10f  (diff to blme objective %.2e)", lme4_obj + pen_formula, lme4_obj + pen_formula - objective)
  vlog("  sigma(m) = %.10f, sqrt(pwrss/(n - %s)) = %.10f (diff %.2e)", sigma(m), if (f$reml) "p" else "0", sigma_formula, sigma(m) - sigma_formula)
  vlog("  fixef(m) - beta(theta) from lme4 devfun: max abs %.2e", max(abs(fixef(m) - beta_formula)))
  vlog("  optim L-BFGS-B on formula: theta = %s, value %.10f, max|dtheta| %.2e", paste(sprintf("%.8f", o1$par), collapse = ", "), o1$value, max(abs(o1$par - theta)))
  vlog("  minqa::bobyqa on formula:  theta = %s, value %.10f, max|dtheta| %.2e", paste(sprintf("%.8f", o2$par), collapse = ", "), o2$fval, max(abs(o2$par - theta)))
  vlog("  blme default control (nloptwrap): theta = %s, objective %.10f%s", paste(sprintf("%.8f", getME(md, "theta")), collapse = ", "),
       cmpd[[crit]] + cmpd[["penalty"]], if (length(dflt$warnings)) paste0("  [", paste(dflt$warnings, collapse = "; "), "]") else "")
  vlog("  lme4 (no prior): theta = %s, objective %.10f, sigma %.10f", paste(sprintf("%.8f", getME(lm4, "theta")), collapse = ", "),
       if (f$reml) REMLcrit(lm4) else deviance(lm4), sigma(lm4))

  out <- list(
    name = f$name, dataset = f$dataset, formula = f$formula, reml = f$reml,
    prior = f$prior_text, prior_argument = if (cov_prior == "wishart") "cov.prior = wishart (blmer's default)" else "cov.prior = gamma",
    prior_blme = I(vapply(m@priors$covPriors, function(pr) toString(pr), "")),
    optimizer = ref_ctrl_text,
    blme_version = as.character(packageVersion("blme")), lme4_version = as.character(packageVersion("lme4")),
    R_version = R.version.string,
    nobs = nobs(m), ngroups = as.list(ngrps(m)), n = n, p = p,
    theta = I(as.numeric(theta)), theta_names = I(names(theta)),
    fixef_names = I(names(fixef(m))), fixef = I(unname(fixef(m))),
    fixef_se = I(unname(sqrt(diag(as.matrix(vcov(m)))))),
    sigma = sigma(m), varcorr = vc_rows(m), singular = isSingular(m),
    objective = objective,
    objective_kind = if (f$reml) "REML criterion + prior penalty (cmp[['REML']] + cmp[['penalty']])" else "deviance + prior penalty (cmp[['dev']] + cmp[['penalty']])",
    objective_blme_devfun = obj_bdf,
    objective_unpenalized_blme = if (f$reml) as.numeric(REMLcrit(m)) else as.numeric(deviance(m)),
    penalty = cmp[["penalty"]],
    lme4_objective_at_theta = lme4_obj,
    penalty_formula = pen_formula, formula_objective = lme4_obj + pen_formula,
    pwrss_at_theta = pwrss, sigma_formula = sigma_formula,
    logLik = as.numeric(logLik(m)),
    devcomp_cmp = nullify(cmp),
    fit_warnings = I(fit$warnings), fit_messages = I(fit$messages),
    nelder_mead_stage = list(theta = I(as.numeric(getME(fit_nm$value, "theta"))),
                             objective = sum(fit_nm$value@devcomp$cmp[c(crit, "penalty")]),
                             warnings = I(fit_nm$warnings)),
    verification = list(
      optim_lbfgsb = list(theta = I(o1$par), value = o1$value, convergence = o1$convergence,
                          max_abs_theta_diff = max(abs(o1$par - theta))),
      bobyqa = list(theta = I(o2$par), value = o2$fval, ierr = o2$ierr,
                    max_abs_theta_diff = max(abs(o2$par - theta)),
                    note = "minqa::bobyqa on lme4 devfun + penalty formula, diagonal thetas bounded below by 1e-3")),
    lme4_fit = list(theta = I(as.numeric(getME(lm4, "theta"))),
                    objective = if (f$reml) as.numeric(REMLcrit(lm4)) else as.numeric(deviance(lm4)),
                    fixef = I(unname(fixef(lm4))), sigma = sigma(lm4), singular = isSingular(lm4),
                    control = 'lmerControl(optimizer = "bobyqa")'),
    blme_default_control_fit = list(theta = I(as.numeric(getME(md, "theta"))),
                                    objective = cmpd[[crit]] + cmpd[["penalty"]],
                                    fixef = I(unname(fixef(md))), sigma = sigma(md),
                                    warnings = I(dflt$warnings), messages = I(dflt$messages),
                                    control = "lmerControl() (nloptwrap)")
  )
  writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"),
             file.path(outdir, paste0(f$name, ".json")))
}
writeLines(verif_lines, file.path(outdir, "verification.txt"))
