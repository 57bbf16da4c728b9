# Predictions from lme4 1.1-31 for tests/test_prediction.py: conditional (all random terms, new
# levels at 0), population level (re.form = NA), one random term (re.form = ~(1 | g)), fitted and
# residuals.  Usage: Rscript make_predictions.R (from this directory; writes predictions.json).
suppressMessages({library(lme4); library(jsonlite)})
ctrl <- lmerControl(optimizer = "bobyqa")
read <- function(file, facs) {
  d <- read.csv(gzfile(file.path("data", file)), stringsAsFactors = TRUE)
  for (col in intersect(names(d), facs)) d[[col]] <- factor(d[[col]])
  d
}
Penicillin <- lme4::Penicillin
cases <- list(
  list(name = "oats", data = read("Oats.csv.gz", c("Block", "Variety")),
       formula = "yield ~ nitro + Variety + (1 | Block/Variety)", partial = "~(1 | Block)",
       newdata = data.frame(Block = c("I", "III", "VI", "VII"), Variety = c("Victory", "Marvellous", "Golden Rain", "Victory"),
                            nitro = c(0, 0.2, 0.6, 0.4))),
  list(name = "machines", data = read("Machines.csv.gz", c("Worker", "Machine")),
       formula = "score ~ Machine + (1 | Worker/Machine)", partial = "~(1 | Worker)",
       newdata = data.frame(Worker = c("1", "4", "6", "9"), Machine = c("A", "C", "B", "B"))),
  list(name = "exam", data = read("Exam.csv.gz", c("school", "schgend")),
       formula = "normexam ~ standLRT + schgend + (standLRT | school)", partial = NULL,
       newdata = data.frame(school = c("1", "17", "48", "999"), standLRT = c(-1.2, 0, 0.7, 0.3),
                            schgend = c("mixed", "boys", "girls", "girls"))),
  list(name = "penicillin", data = Penicillin,
       formula = "diameter ~ 1 + (1 | plate) + (1 | sample)", partial = "~(1 | plate)",
       newdata = data.frame(plate = c("a", "m", "x", "zz"), sample = c("A", "F", "C", "B"))))
out <- list()
for (cs in cases) {
  m <- lmer(as.formula(cs$formula), data = cs$data, REML = TRUE, control = ctrl)
  nd <- cs$newdata
  r <- list(formula = cs$formula, newdata = nd,
    conditional = unname(predict(m, newdata = nd, allow.new.levels = TRUE)),
    marginal = unname(predict(m, newdata = nd, re.form = NA)),
    fitted_head = unname(head(fitted(m), 10)), residuals_head = unname(head(residuals(m), 10)))
  if (!is.null(cs$partial)) {
    r$partial_form <- cs$partial
    r$partial <- unname(predict(m, newdata = nd, re.form = as.formula(cs$partial), allow.new.levels = TRUE))
  }
  out[[cs$name]] <- r
}
out$versions <- list(lme4 = as.character(packageVersion("lme4")))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "predictions.json")
