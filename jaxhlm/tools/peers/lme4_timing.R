# Wall-clock timings of lme4 (R) fits, for side-by-side comparison with jaxhlm.
#
# Usage: Rscript lme4_timing.R DATADIR CASE [REPS] [OPTIMIZER]
#   CASE  sleepstudy_reml   lmer(Reaction ~ Days + (Days | Subject), REML) on sleepstudy: REPS timed
#                           calls (default 50) of the whole lmer() after 3 warm-ups, data already loaded.
#         insteval_ml       lmer(y ~ 1 + service + (1|s) + (1|d) + (1|dept:service), REML = FALSE) on
#                           InstEval (73,421 obs): REPS timed calls (default 1), no warm-up.
#         sleepstudy_refit  fit the sleepstudy model once, simulate(fm, nsim = REPS (default 200), seed = 1),
#                           time refit(fm, sim[[i]]) for every i (the core of bootMer): refits per second.
#         penicillin_refit  the same for diameter ~ 1 + (1|plate) + (1|sample) on Penicillin (crossed), REML.
#         pastes_refit      the same for strength ~ 1 + (1|batch/cask) on Pastes (nested), REML.
#         one_design_many   120 obs (12 donors x 10, condition a 2-level factor, 5 rows of each per donor),
#                           REPS responses (default 200) simulated from y ~ condition + (1|donor) with
#                           beta = (0, 0.5), donor sd 1, residual sd 1, seed 1; times a refit() loop on the
#                           first fit and, separately, a plain lmer() loop (REML): fits per second of each.
#         cell              any model on any data: DATADIR holds cell.json (formula, reml, response, responses:
#                           the names of K response columns, factors: the columns to read as factors) and
#                           cell.csv (jaxhlm's bench writes both, see jaxhlm/bench.py); fits the first response
#                           once (untimed warm-up), then times refit() on REPS (default 10, at most K) responses
#                           and, separately, a plain lmer() loop on the same responses: fits per second of each.
#   OPTIMIZER  "bobyqa" (default; lmerControl(optimizer = "bobyqa"), as shared/reference/lme4 was made) or
#              "default" (lme4's own lmerControl(), which is "nloptwrap" in lme4 1.1-31).
# Each call is timed with Sys.time() differences (microsecond resolution on Linux).
# Prints ONE JSON object on stdout; lme4's messages (e.g. singular fits) are suppressed and counted.
suppressMessages({library(lme4); library(jsonlite)})
args <- commandArgs(TRUE)
if (length(args) < 2) stop("usage: Rscript lme4_timing.R DATADIR CASE [REPS] [OPTIMIZER]")
datadir <- args[1]; case <- args[2]
default_reps <- c(sleepstudy_reml = 50L, insteval_ml = 1L, sleepstudy_refit = 200L, one_design_many = 200L,
                  cell = 10L, penicillin_refit = 200L, pastes_refit = 200L)
if (!case %in% names(default_reps)) stop("unknown CASE: ", case)
reps <- if (length(args) >= 3 && args[3] != "") as.integer(args[3]) else default_reps[[case]]
optimizer <- if (length(args) >= 4) args[4] else "bobyqa"
ctrl <- if (optimizer == "default") lmerControl() else lmerControl(optimizer = optimizer)

now <- function() as.numeric(Sys.time())
n_singular <- 0L
quiet <- function(expr) withCallingHandlers(expr, message = function(m) {
  if (grepl("singular", conditionMessage(m))) n_singular <<- n_singular + 1L
  invokeRestart("muffleMessage")
})
time_each <- function(n, f) {  # per-call times; the whole loop's wall time as attribute "loop"
  t_loop <- now()
  times <- vapply(seq_len(n), function(i) { t0 <- now(); f(i); now() - t0 }, 0)
  structure(times, loop = now() - t_loop)
}
summ <- function(times, prefix = "") {
  loop <- attr(times, "loop"); times <- as.numeric(times)
  out <- list(median_seconds = median(times), min_seconds = min(times), loop_seconds = loop,
              fits_per_second = length(times) / loop, times_seconds = I(times))
  setNames(out, paste0(prefix, names(out)))
}

res <- list()
if (case == "sleepstudy_reml" || case == "sleepstudy_refit") {
  ss <- read.csv(file.path(datadir, "sleepstudy.csv"), colClasses = c(Subject = "factor"))
  form <- Reaction ~ Days + (Days | Subject)
  fit <- function(i) lmer(form, ss, REML = TRUE, control = ctrl)
  if (case == "sleepstudy_reml") {
    for (i in 1:3) fm <- fit(i)
    times <- time_each(reps, function(i) fm <<- fit(i))
    res <- c(summ(times), objective = REMLcrit(fm))
  } else {
    fm <- fit(0)
    sim <- simulate(fm, nsim = reps, seed = 1)
    times <- time_each(reps, function(i) quiet(refit(fm, sim[[i]])))
    res <- summ(times)
  }
} else if (case == "penicillin_refit" || case == "pastes_refit") {
  if (case == "penicillin_refit") {
    d <- read.csv(file.path(datadir, "Penicillin.csv"), colClasses = c(plate = "factor", sample = "factor"))
    fm <- lmer(diameter ~ 1 + (1 | plate) + (1 | sample), d, REML = TRUE, control = ctrl)
  } else {
    d <- read.csv(file.path(datadir, "Pastes.csv"), colClasses = c(batch = "factor", cask = "factor"))
    fm <- lmer(strength ~ 1 + (1 | batch/cask), d, REML = TRUE, control = ctrl)
  }
  sim <- simulate(fm, nsim = reps, seed = 1)
  times <- time_each(reps, function(i) quiet(refit(fm, sim[[i]])))
  res <- summ(times)
} else if (case == "insteval_ml") {
  ie <- read.csv(file.path(datadir, "InstEval.csv"),
                 colClasses = c(s = "factor", d = "factor", dept = "factor", service = "factor"))
  stopifnot(identical(levels(ie$service), c("0", "1")))
  fm <- NULL
  times <- time_each(reps, function(i) fm <<- lmer(y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service),
                                                  ie, REML = FALSE, control = ctrl))
  res <- c(summ(times), objective = deviance(fm), nobs = nobs(fm))
} else if (case == "one_design_many") {
  d <- data.frame(donor = factor(rep(1:12, each = 10)),
                  condition = factor(rep(rep(c("a", "b"), each = 5), 12)))
  ys <- suppressMessages(simulate(~ condition + (1 | donor), newdata = d, nsim = reps, seed = 1,
                                  newparams = list(beta = c(0, 0.5), theta = 1, sigma = 1)))
  d$y <- ys[[1]]
  fm <- quiet(lmer(y ~ condition + (1 | donor), d, control = ctrl))
  t_refit <- time_each(reps, function(i) quiet(refit(fm, ys[[i]])))
  t_lmer <- time_each(reps, function(i) { d$y <- ys[[i]]; quiet(lmer(y ~ condition + (1 | donor), d, control = ctrl)) })
  res <- c(summ(t_refit), summ(t_lmer, "lmer_"))
} else if (case == "cell") {
  spec <- fromJSON(file.path(datadir, "cell.json"))
  d <- read.csv(file.path(datadir, "cell.csv"))
  for (f in spec$factors) d[[f]] <- factor(d[[f]])
  form <- as.formula(spec$formula)
  ys <- d[spec$responses]
  reps <- min(reps, length(ys))
  d[[spec$response]] <- ys[[1]]
  fm <- quiet(lmer(form, d, REML = spec$reml, control = ctrl))
  t_refit <- time_each(reps, function(i) quiet(refit(fm, ys[[i]])))
  t_lmer <- time_each(reps, function(i) { d[[spec$response]] <- ys[[i]]; quiet(lmer(form, d, REML = spec$reml, control = ctrl)) })
  res <- c(summ(t_refit), summ(t_lmer, "lmer_"), nobs = nrow(d), formula = spec$formula, reml = spec$reml,
           objective_first = if (spec$reml) REMLcrit(fm) else deviance(fm))
} else stop("unknown CASE: ", case)

out <- c(list(case = case, peer = "lme4", lme4_version = as.character(packageVersion("lme4")),
              R_version = R.version.string, reps = reps, optimizer = optimizer,
              control = if (optimizer == "default") paste0("lmerControl() (lme4 default; optimizer ",
                paste(ctrl$optimizer, collapse = "+"), ")") else sprintf('lmerControl(optimizer = "%s")', optimizer),
              n_singular_messages = n_singular), res)
cat(toJSON(out, auto_unbox = TRUE, digits = NA), "\n")
