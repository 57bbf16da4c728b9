# lme4 references for the batch-fitting tests: simulate() responses from an lme4 fit and
# refit() each of them, recording lme4's answer per replicate.
# Usage: Rscript tests/reference/make_batch_refs.R DATADIR OUTDIR
#   DATADIR: the data sets as CSV (shared/data, written by shared/tools/export_data.R)
#   OUTDIR:  where NAME_responses.csv.gz and NAME_fits.json go (tests/reference/batch)
# Made with R 4.2.2, lme4 1.1-31, optimizer bobyqa; JSON numbers have 15 significant digits
# (jsonlite's most, digits = NA).
# NAME_responses.csv.gz: one column per replicate (sim_1..sim_N), rows in the data file's
#   row order, written with sprintf("%.17g") so the doubles read back exactly.
#   simulate(fm, nsim = N, seed = 20261121): the draws depend on N, not only on the seed.
# NAME_fits.json: per replicate objective (REMLcrit for REML fits, deviance for ML), fixef,
#   theta (lme4's order), sigma, converged (FALSE when the fit raised a convergence
#   warning or message, or the optimizer reported a nonzero code; the "boundary (singular)
#   fit" message is not a convergence failure), singular (isSingular()), and the warning and
#   message texts; "method" says how those fits were made.
#
# lme4 1.1-31's refit() builds the new response module with mkRespMod(..., REML =
# isREML(object)), i.e. REML = TRUE = 1, where lmer() passes REML = p = ncol(X). A refit()
# of a REML fit with p > 1 fixed effects therefore optimizes and reports a REML criterion
# with n - 1 in place of n - p degrees of freedom: a different criterion, a different theta
# and sigma (the fixef of a balanced design are unaffected). The script detects this
# (refit's resp$REML differs from the original fit's) and then makes the recorded fits with
# lmer() on the new response started at the original fit's theta, which is refit()'s start
# (method "lmer_start_theta"); refit()'s own answers are kept under "refit_raw". Otherwise
# the recorded fits are refit()'s (method "refit"). refit_seconds always times refit().
suppressMessages({library(lme4); library(jsonlite)})
args <- commandArgs(TRUE)
if (length(args) != 2) stop("usage: Rscript make_batch_refs.R DATADIR OUTDIR")
datadir <- args[1]; outdir <- args[2]
dir.create(outdir, showWarnings = FALSE, recursive = TRUE)

SEED <- 20261121
models <- list(
  list(name = "sleepstudy_reml", dataset = "sleepstudy",
       formula = "Reaction ~ Days + (Days | Subject)", reml = TRUE, nsim = 100,
       factors = "Subject"),
  list(name = "penicillin_reml", dataset = "Penicillin",
       formula = "diameter ~ 1 + (1 | plate) + (1 | sample)", reml = TRUE, nsim = 100,
       factors = c("plate", "sample")),
  list(name = "pastes_reml", dataset = "Pastes",
       formula = "strength ~ 1 + (1 | batch/cask)", reml = TRUE, nsim = 100,
       factors = c("batch", "cask", "sample")),
  list(name = "sleepstudy_uncorr_ml", dataset = "sleepstudy",
       formula = "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", reml = FALSE,
       nsim = 50, factors = "Subject")
)

ctrl <- lmerControl(optimizer = "bobyqa")
singular_msg <- "boundary (singular) fit"

# Run expr, muffling and collecting its warnings and messages.
capture <- function(expr) {
  warns <- character(); msgs <- character()
  value <- withCallingHandlers(expr,
    warning = function(w) { warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning") },
    message = function(m) { msgs <<- c(msgs, trimws(conditionMessage(m))); invokeRestart("muffleMessage") })
  list(value = value, warnings = warns, messages = msgs)
}

objective_of <- function(fm, reml) if (reml) as.numeric(REMLcrit(fm)) else as.numeric(deviance(fm))

for (m in models) {
  d <- read.csv(file.path(datadir, paste0(m$dataset, ".csv")), stringsAsFactors = FALSE)
  for (col in m$factors) d[[col]] <- factor(d[[col]])
  fm <- lmer(as.formula(m$formula), data = d, REML = m$reml, control = ctrl)
  sim <- simulate(fm, nsim = m$nsim, seed = SEED)
  stopifnot(ncol(sim) == m$nsim, nrow(sim) == nrow(d))

  N <- m$nsim
  # The refit() loop (timed), then, where refit() is affected by the REML bug, the lmer() loop.
  fits_refit <- vector("list", N)
  t0 <- Sys.time()
  for (i in seq_len(N)) fits_refit[[i]] <- capture(refit(fm, sim[[i]]))
  el <- as.numeric(Sys.time() - t0, units = "secs")
  refit_bug <- any(vapply(fits_refit, function(r) !identical(r$value@resp$REML, fm@resp$REML), TRUE))
  method <- "refit"; fits <- fits_refit; el_lmer <- NULL
  if (refit_bug) {
    yname <- all.vars(as.formula(m$formula))[1]
    fits <- vector("list", N)
    t0 <- Sys.time()
    for (i in seq_len(N)) {
      d2 <- d; d2[[yname]] <- sim[[i]]
      fits[[i]] <- capture(lmer(as.formula(m$formula), data = d2, REML = m$reml, control = ctrl,
                                start = list(theta = getME(fm, "theta"))))
    }
    el_lmer <- as.numeric(Sys.time() - t0, units = "secs")
    method <- "lmer_start_theta"
    stopifnot(all(vapply(fits, function(r) identical(r$value@resp$REML, fm@resp$REML), TRUE)))
  }
  summarize <- function(fits) {
    objective <- numeric(N); sigma <- numeric(N)
    fixef_m <- matrix(NA_real_, N, length(fixef(fm)))
    theta_m <- matrix(NA_real_, N, length(getME(fm, "theta")))
    converged <- logical(N); singular <- logical(N)
    warn_l <- vector("list", N); msg_l <- vector("list", N)
    for (i in seq_len(N)) {
      r <- fits[[i]]; f <- r$value
      objective[i] <- objective_of(f, m$reml)
      fixef_m[i, ] <- unname(fixef(f))
      theta_m[i, ] <- unname(getME(f, "theta"))
      sigma[i] <- sigma(f)
      singular[i] <- isSingular(f)
      conv_msgs <- c(r$warnings, r$messages, f@optinfo$conv$lme4$messages)
      conv_msgs <- conv_msgs[!startsWith(conv_msgs, singular_msg)]
      converged[i] <- length(conv_msgs) == 0 && identical(as.integer(f@optinfo$conv$opt), 0L)
      warn_l[[i]] <- I(r$warnings); msg_l[[i]] <- I(r$messages)
    }
    list(objective = I(objective), fixef = fixef_m, theta = theta_m, sigma = I(sigma),
         converged = I(converged), singular = I(singular), warnings = warn_l, messages = msg_l)
  }
  rec <- summarize(fits)

  resp <- as.data.frame(lapply(sim, function(y) sprintf("%.17g", y)), stringsAsFactors = FALSE)
  names(resp) <- paste0("sim_", seq_len(N))
  con <- gzfile(file.path(outdir, paste0(m$name, "_responses.csv.gz")), "w")
  write.csv(resp, con, row.names = FALSE, quote = FALSE)
  close(con)

  out <- list(
    name = m$name, dataset = m$dataset, formula = m$formula, reml = m$reml,
    lme4_version = as.character(packageVersion("lme4")),
    r_version = paste(R.version$major, R.version$minor, sep = "."),
    optimizer = "bobyqa", nobs = nrow(d), nsim = N, seed = SEED,
    original = list(objective = objective_of(fm, m$reml), fixef = I(unname(fixef(fm))),
                    theta = I(unname(getME(fm, "theta"))), sigma = sigma(fm)),
    fixef_names = I(names(fixef(fm))), theta_names = I(names(getME(fm, "theta"))),
    method = method
  )
  out <- c(out, rec, list(refit_seconds = el, refits_per_second = N / el))
  if (refit_bug) {
    out$lmer_seconds <- el_lmer
    raw <- summarize(fits_refit)
    out$refit_raw <- raw[c("objective", "fixef", "theta", "sigma", "converged", "singular")]
  }
  writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, matrix = "rowmajor"),
             file.path(outdir, paste0(m$name, "_fits.json")))
  cat(sprintf("%s: %d refits in %.2f s (%.1f/s), method %s, %d not converged, %d singular\n",
              m$name, N, el, N / el, method, sum(!rec$converged), sum(rec$singular)))
}
