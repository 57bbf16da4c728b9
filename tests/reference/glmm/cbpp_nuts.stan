// cbpp's binomial GLMM with jaxhlm's default GLMM priors (jaxhlm/bayes/glmm_posterior.py):
// beta_1 (intercept) ~ N(0, 10), beta_j ~ N(0, 10 / sd(x_j)), sd ~ HalfNormal(2),
// u ~ N(0, 1), b = sd * u (non-centred), incidence ~ Binomial(size, logit^-1(X beta + b[herd])).
data {
  int<lower=1> N; int<lower=1> K; int<lower=1> J;
  matrix[N, K] X; int<lower=1, upper=J> herd[N];
  int<lower=0> k[N]; int<lower=0> n[N];
  vector<lower=0>[K] beta_scale;
}
parameters { vector[K] beta; real<lower=0> sd_herd; vector[J] u; }
model {
  beta ~ normal(0, beta_scale);
  sd_herd ~ normal(0, 2);
  u ~ std_normal();
  k ~ binomial_logit(n, X * beta + sd_herd * u[herd]);
}
