// Reaction ~ Days + (Days | Subject), explicit random effects, non-centred parametrization.
// Priors: beta_k ~ normal(0, 1000); sigma ~ half-normal(0, 100); tau_k (random-effect SDs)
// ~ half-normal(0, 100); 2x2 correlation matrix ~ LKJ(2) via its Cholesky factor.
// b_j = diag(tau) * L_corr * z_j, z_j ~ std_normal.   (Stan 2.21 / rstan 2.21 syntax.)
data {
  int<lower=1> N;                   // observations
  int<lower=1> J;                   // subjects
  vector[N] y;                      // Reaction
  vector[N] days;                   // Days
  int<lower=1, upper=J> subj[N];    // subject index
}
parameters {
  vector[2] beta;                   // (Intercept), Days
  real<lower=0> sigma;              // residual SD
  vector<lower=0>[2] tau;           // SDs of (Intercept), Days random effects
  cholesky_factor_corr[2] L;        // Cholesky factor of the random-effect correlation matrix
  matrix[2, J] z;                   // standardized random effects
}
transformed parameters {
  matrix[J, 2] b = (diag_pre_multiply(tau, L) * z)';   // row j: (intercept, slope) effects of subject j
}
model {
  beta ~ normal(0, 1000);
  sigma ~ normal(0, 100);
  tau ~ normal(0, 100);
  L ~ lkj_corr_cholesky(2);
  to_vector(z) ~ std_normal();
  y ~ normal(beta[1] + b[subj, 1] + (beta[2] + b[subj, 2]) .* days, sigma);
}
generated quantities {
  real cor;                         // correlation of (Intercept) and Days effects
  {
    matrix[2, 2] R = multiply_lower_tri_self_transpose(L);
    cor = R[1, 2];
  }
}
