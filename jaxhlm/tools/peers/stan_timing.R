# Wall-clock timing and sampling efficiency of Stan (rstan) on the sleepstudy model, a peer for
# jaxhlm's posterior sampler.
#
# Usage: Rscript stan_timing.R STANFILE DATA_CSV CHAINS WARMUP DRAWS SEED
#   STANFILE  the sleepstudy program, e.g. tests/reference/stan/sleepstudy.stan
#             (Reaction ~ Days + (Days | Subject), non-centred; data N, J, y, days, subj)
#   DATA_CSV  sleepstudy as CSV with columns Reaction, Days, Subject (e.g. shared/data/sleepstudy.csv)
#   CHAINS WARMUP DRAWS SEED   rstan::sampling(chains, warmup, iter = WARMUP + DRAWS, seed);
#             NUTS with rstan's defaults (adapt_delta 0.8, max_treedepth 10).
# Timing: compile_seconds = stan_model() (C++ compilation; no cached .rds is used or written);
#   sample_seconds = wall time of the sampling() call (all chains, warmup + sampling, run ONE
#   AFTER THE OTHER: cores = 1); warmup_seconds / sampling_seconds = rstan's get_elapsed_time()
#   summed over chains (the sampler's own clock, warmup and kept-draw phases separately).
# Efficiency: ess_bulk (rstan::ess_bulk) per parameter over beta[1] ((Intercept)), beta[2] (Days),
#   sigma, tau[1], tau[2] (Subject SDs), cor (their correlation); min_ess_bulk is the minimum;
#   ess_per_second = min_ess_bulk / sample_seconds; ess_per_sampling_second = min_ess_bulk /
#   sampling_seconds.
# Prints ONE JSON object on stdout; Stan's own output goes to stderr.
suppressMessages({library(rstan); library(jsonlite)})
args <- commandArgs(TRUE)
if (length(args) != 6) stop("usage: Rscript stan_timing.R STANFILE DATA_CSV CHAINS WARMUP DRAWS SEED")
stanfile <- args[1]; datafile <- args[2]
chains <- as.integer(args[3]); warmup <- as.integer(args[4]); draws <- as.integer(args[5])
seed <- as.integer(args[6])

d <- read.csv(datafile, colClasses = c(Subject = "factor"))
standata <- list(N = nrow(d), J = nlevels(d$Subject), y = d$Reaction, days = d$Days,
                 subj = as.integer(d$Subject))
now <- function() as.numeric(Sys.time())
to_stderr <- function(lines) if (length(lines)) cat(lines, file = stderr(), sep = "\n")

t0 <- now()
to_stderr(capture.output(sm <- stan_model(stanfile, model_name = "sleepstudy", auto_write = FALSE)))
compile_seconds <- now() - t0

pars <- c("beta[1]", "beta[2]", "sigma", "tau[1]", "tau[2]", "cor")
t0 <- now()
to_stderr(capture.output(fit <- sampling(sm, data = standata, chains = chains, warmup = warmup,
                                         iter = warmup + draws, seed = seed, cores = 1,
                                         refresh = 0, pars = c("beta", "sigma", "tau", "cor"))))
sample_seconds <- now() - t0

el <- get_elapsed_time(fit)
arr <- as.array(fit)
ess <- vapply(pars, function(p) rstan::ess_bulk(arr[, , p]), 0)
divergences <- sum(get_divergent_iterations(fit))
min_ess <- min(ess)
out <- list(
  peer = "rstan", model = "sleepstudy: Reaction ~ Days + (Days | Subject)", stan_file = stanfile,
  chains = chains, warmup = warmup, draws = draws, seed = seed, cores = 1L,
  chain_execution = "sequential (cores = 1)",
  compile_seconds = compile_seconds,
  sample_seconds = sample_seconds,
  warmup_seconds = sum(el[, "warmup"]), sampling_seconds = sum(el[, "sample"]),
  min_ess_bulk = min_ess, ess_bulk = as.list(ess),
  ess_per_second = min_ess / sample_seconds,
  ess_per_sampling_second = min_ess / sum(el[, "sample"]),
  divergences = divergences,
  rstan_version = as.character(packageVersion("rstan")),
  stanheaders_version = as.character(packageVersion("StanHeaders")),
  R_version = R.version.string)
cat(toJSON(out, auto_unbox = TRUE, digits = NA), "\n")
