// diameter ~ 1 + (1 | plate) + (1 | sample), crossed random intercepts, explicit random
// effects, non-centred parametrization.
// Priors: mu ~ normal(0, 100); sigma ~ half-normal(0, 10); tau_plate, tau_sample ~ half-normal(0, 10).
// (Stan 2.21 / rstan 2.21 syntax.)
data {
  int<lower=1> N;
  int<lower=1> J_plate;
  int<lower=1> J_sample;
  vector[N] y;                               // diameter
  int<lower=1, upper=J_plate> plate[N];
  int<lower=1, upper=J_sample> sample[N];
}
parameters {
  real mu;                                   // (Intercept)
  real<lower=0> sigma;                       // residual SD
  real<lower=0> tau_plate;                   // SD of plate intercepts
  real<lower=0> tau_sample;                  // SD of sample intercepts
  vector[J_plate] z_plate;
  vector[J_sample] z_sample;
}
transformed parameters {
  vector[J_plate] b_plate = tau_plate * z_plate;
  vector[J_sample] b_sample = tau_sample * z_sample;
}
model {
  mu ~ normal(0, 100);
  sigma ~ normal(0, 10);
  tau_plate ~ normal(0, 10);
  tau_sample ~ normal(0, 10);
  z_plate ~ std_normal();
  z_sample ~ std_normal();
  y ~ normal(mu + b_plate[plate] + b_sample[sample], sigma);
}
