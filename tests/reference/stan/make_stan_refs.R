# Stan (rstan) posterior references for the full-posterior tests: sleepstudy.json and
# penicillin.json, from sleepstudy.stan and penicillin.stan (same folder).
# Usage: Rscript tests/reference/stan/make_stan_refs.R [DATADIR] [OUTDIR] [MODEL ...]
#   DATADIR: the data sets as CSV (default shared/data)
#   OUTDIR:  where the JSON go (default tests/reference/stan); the .stan files are read from
#            the folder of this script's default OUTDIR, i.e. tests/reference/stan
#   MODEL:   sleepstudy and/or penicillin (default both)
# Made with R 4.2.2, rstan 2.21.7 (StanHeaders 2.21.0-7), Debian packages.
# Sampling: 4 chains, run one after the other (cores = 1), warmup 2000 + 5000 kept draws per
# chain (20,000 draws), seed 20261121, NUTS with adapt_delta 0.8; while a run has any divergent
# transition the model is rerun (same seed) with the next adapt_delta of 0.95, 0.99; the first
# run without divergences, else the 0.99 run, is kept (the JSON gives adapt_delta and the
# divergence count of every run made).
# Per-parameter summaries use rstan's own functions on the iterations x chains matrix of draws
# (Vehtari et al. 2021, as in rstan::monitor): ess_bulk, ess_tail, Rhat (rank-normalized split
# R-hat, max of bulk and tail), rstan:::mcse_mean, rstan:::mcse_sd; mean, sd and quantiles
# (type 7) over the pooled draws.
suppressMessages({library(rstan); library(jsonlite)})
args <- commandArgs(TRUE)
datadir <- if (length(args) >= 1) args[1] else "shared/data"
outdir <- if (length(args) >= 2) args[2] else "tests/reference/stan"
models <- if (length(args) >= 3) args[3:length(args)] else c("sleepstudy", "penicillin")
stan_dir <- "tests/reference/stan"

CHAINS <- 4L; WARMUP <- 2000L; DRAWS <- 5000L; SEED <- 20261121L

specs <- list(
  sleepstudy = list(
    stan = "sleepstudy.stan", dataset = "sleepstudy", formula = "Reaction ~ Days + (Days | Subject)",
    priors = c(fixef = "each fixed effect ((Intercept), Days) ~ normal(0, 1000)",
               sigma = "sigma ~ half-normal(0, 100)",
               sd = "each random-effect SD (Subject (Intercept), Subject Days) ~ half-normal(0, 100)",
               cor = "2x2 random-effect correlation matrix ~ LKJ(2) (cholesky_factor_corr, lkj_corr_cholesky(2))",
               ranef = "b_j = diag(sd) * L_corr * z_j, z_j ~ std_normal (non-centred)"),
    data = function(d) list(N = nrow(d), J = nlevels(d$Subject), y = d$Reaction, days = d$Days,
                            subj = as.integer(d$Subject)),
    factors = "Subject",
    rows = list(
      list(par = "beta[1]", kind = "fixef", group = NULL, var1 = NULL, var2 = NULL, name = "(Intercept)"),
      list(par = "beta[2]", kind = "fixef", group = NULL, var1 = NULL, var2 = NULL, name = "Days"),
      list(par = "sigma", kind = "sigma", group = NULL, var1 = NULL, var2 = NULL, name = NULL),
      list(par = "tau[1]", kind = "sd", group = "Subject", var1 = "(Intercept)", var2 = NULL, name = NULL),
      list(par = "tau[2]", kind = "sd", group = "Subject", var1 = "Days", var2 = NULL, name = NULL),
      list(par = "cor", kind = "cor", group = "Subject", var1 = "(Intercept)", var2 = "Days", name = NULL))),
  penicillin = list(
    stan = "penicillin.stan", dataset = "Penicillin", formula = "diameter ~ 1 + (1 | plate) + (1 | sample)",
    priors = c(fixef = "(Intercept) ~ normal(0, 100)",
               sigma = "sigma ~ half-normal(0, 10)",
               sd = "SD of plate intercepts ~ half-normal(0, 10); SD of sample intercepts ~ half-normal(0, 10)",
               ranef = "b_plate = sd_plate * z_plate, b_sample = sd_sample * z_sample, z ~ std_normal (non-centred)"),
    data = function(d) list(N = nrow(d), J_plate = nlevels(d$plate), J_sample = nlevels(d$sample),
                            y = d$diameter, plate = as.integer(d$plate), sample = as.integer(d$sample)),
    factors = c("plate", "sample"),
    rows = list(
      list(par = "mu", kind = "fixef", group = NULL, var1 = NULL, var2 = NULL, name = "(Intercept)"),
      list(par = "sigma", kind = "sigma", group = NULL, var1 = NULL, var2 = NULL, name = NULL),
      list(par = "tau_plate", kind = "sd", group = "plate", var1 = "(Intercept)", var2 = NULL, name = NULL),
      list(par = "tau_sample", kind = "sd", group = "sample", var1 = "(Intercept)", var2 = NULL, name = NULL)))
)

summarize <- function(sims) {  # sims: iterations x chains
  x <- as.vector(sims)
  q <- quantile(x, c(0.025, 0.25, 0.5, 0.75, 0.975), names = FALSE)
  list(mean = mean(x), sd = sd(x), q025 = q[1], q25 = q[2], q50 = q[3], q75 = q[4], q975 = q[5],
       mcse_mean = rstan:::mcse_mean(sims), mcse_sd = rstan:::mcse_sd(sims),
       ess_bulk = rstan::ess_bulk(sims), ess_tail = rstan::ess_tail(sims), rhat = rstan::Rhat(sims))
}
ndiv <- function(fit) sum(get_divergent_iterations(fit))

for (name in models) {
  s <- specs[[name]]
  cc <- setNames(rep("factor", length(s$factors)), s$factors)
  d <- read.csv(file.path(datadir, paste0(s$dataset, ".csv")), colClasses = cc)
  t0 <- Sys.time()
  sm <- stan_model(file.path(stan_dir, s$stan), model_name = name)
  compile_s <- as.numeric(difftime(Sys.time(), t0, units = "secs"))
  pars <- vapply(s$rows, function(r) sub("\\[.*", "", r$par), "")
  run <- function(adapt_delta) {
    t0 <- Sys.time()
    fit <- sampling(sm, data = s$data(d), chains = CHAINS, iter = WARMUP + DRAWS, warmup = WARMUP,
                    seed = SEED, cores = 1, refresh = 0, pars = unique(pars),
                    control = list(adapt_delta = adapt_delta))
    list(fit = fit, wall = as.numeric(difftime(Sys.time(), t0, units = "secs")), adapt_delta = adapt_delta)
  }
  ladder <- c(0.8, 0.95, 0.99); tried <- list()
  for (ad in ladder) {
    r <- run(ad)
    tried[[length(tried) + 1]] <- list(adapt_delta = ad, divergences = ndiv(r$fit), wall_seconds = r$wall)
    if (ndiv(r$fit) == 0) break
  }
  first_div <- tried[[1]]$divergences
  fit <- r$fit
  arr <- as.array(fit)  # iterations x chains x parameters
  rows <- lapply(s$rows, function(row) {
    out <- list(kind = row$kind, group = row$group, var1 = row$var1, var2 = row$var2, name = row$name,
                stan_par = row$par)
    c(out, summarize(arr[, , row$par]))
  })
  sp <- get_sampler_params(fit, inc_warmup = FALSE)
  treedepth_hits <- sum(vapply(sp, function(x) sum(x[, "treedepth__"] >= 10), 0))
  out <- list(
    model = name, dataset = s$dataset, formula = s$formula, stan_file = s$stan,
    stan_program = paste(readLines(file.path(stan_dir, s$stan)), collapse = "\n"),
    priors = as.list(s$priors),
    chains = CHAINS, warmup = WARMUP, draws = DRAWS, total_draws = CHAINS * DRAWS, seed = SEED,
    cores = 1L, adapt_delta = r$adapt_delta,
    divergences = ndiv(fit), runs = tried,
    max_treedepth_hits = treedepth_hits,
    stepsize = I(vapply(sp, function(x) x[1, "stepsize__"], 0)),
    elapsed_seconds = list(warmup = I(unname(get_elapsed_time(fit)[, "warmup"])),
                           sample = I(unname(get_elapsed_time(fit)[, "sample"]))),
    compile_seconds = compile_s, sampling_wall_seconds = r$wall,
    rstan_version = as.character(packageVersion("rstan")),
    stanheaders_version = as.character(packageVersion("StanHeaders")),
    R_version = R.version.string,
    summary_method = "pooled draws: mean, sd, quantile(type 7); rstan::ess_bulk, rstan::ess_tail, rstan::Rhat, rstan:::mcse_mean, rstan:::mcse_sd on the iterations x chains matrix",
    rows = rows)
  writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"),
             file.path(outdir, paste0(name, ".json")))
  cat(sprintf("%s: compile %.1fs, sampling %.1fs, adapt_delta %.2f, divergences %d (first run %d), treedepth hits %d\n",
              name, compile_s, r$wall, r$adapt_delta, ndiv(fit), first_div, treedepth_hits))
  for (row in rows) cat(sprintf("  %-6s %-8s %-12s %-5s mean %12.5f sd %10.5f q50 %12.5f ess_bulk %8.0f ess_tail %8.0f rhat %.4f mcse_mean %.5f\n",
                                row$kind, if (is.null(row$group)) "" else row$group,
                                if (is.null(row$name)) if (is.null(row$var1)) "" else row$var1 else row$name,
                                if (is.null(row$var2)) "" else row$var2, row$mean, row$sd, row$q50,
                                row$ess_bulk, row$ess_tail, row$rhat, row$mcse_mean))
}
