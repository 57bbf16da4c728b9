# Stan's posterior of cbpp's binomial GLMM (cbpp_nuts.stan; rstan 2.21, Debian's r-cran-rstan):
# 4 chains x 5000 draws after 1000 warm-up; means, SDs and MCSEs (rstan's se_mean) of
# beta and sd(herd), for tests/test_glmm.py.  Usage: Rscript make_nuts.R OUT.json
suppressMessages({library(rstan); library(lme4); library(jsonlite)})
X <- model.matrix(~ period, cbpp)
scale <- c(10, 10 / apply(X[, -1, drop = FALSE], 2, function(x) sqrt(mean((x - mean(x))^2))))
data <- list(N = nrow(cbpp), K = ncol(X), J = nlevels(cbpp$herd), X = X, herd = as.integer(cbpp$herd),
             k = cbpp$incidence, n = cbpp$size, beta_scale = scale)
fit <- stan(file.path(dirname(sub("--file=", "", grep("--file=", commandArgs(FALSE), value = TRUE))), "cbpp_nuts.stan"),
            data = data, chains = 4, iter = 6000, warmup = 1000, seed = 1, refresh = 0)
s <- summary(fit, pars = c("beta", "sd_herd"))$summary
out <- list(rstan_version = as.character(packageVersion("rstan")), names = I(c(colnames(X), "sd(herd:(Intercept))")),
            beta_scale = I(unname(scale)),
            mean = I(unname(s[, "mean"])), sd = I(unname(s[, "sd"])), mcse = I(unname(s[, "se_mean"])),
            n_eff = I(unname(s[, "n_eff"])), rhat = I(unname(s[, "Rhat"])),
            divergences = sum(get_sampler_params(fit, inc_warmup = FALSE)[[1]][, "divergent__"]))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), commandArgs(TRUE)[1])
print(s)
