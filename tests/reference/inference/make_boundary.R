# Kenward-Roger and Satterthwaite tables at a boundary (singular) fit, for tests/test_inference.py:
# data/Boundary.csv.gz is sleepstudy's Days and Subject with y2 = a Subject effect + noise whose
# means over g (row number mod 7) are equal, so the SD of (1 | g) is 0 at the optimum.
# Usage: Rscript make_boundary.R (from this directory; writes boundary.json).
suppressMessages({library(lmerTest); library(pbkrtest); library(jsonlite)})
d <- read.csv(gzfile("data/Boundary.csv.gz")); d$g <- factor(d$g); d$Subject <- factor(d$Subject)
form <- "y2 ~ Days + (1 | Subject) + (1 | g)"
m <- lmer(as.formula(form), data = d, control = lmerControl(optimizer = "bobyqa"))
tab <- function(x) { x <- as.data.frame(x); x$name <- rownames(x); rownames(x) <- NULL; x }
out <- list(formula = form, theta = unname(getME(m, "theta")), singular = isSingular(m),
            kenward_roger = tab(summary(m, ddf = "Kenward-Roger")$coefficients),
            satterthwaite = tab(summary(m, ddf = "Satterthwaite")$coefficients),
            versions = list(lme4 = as.character(packageVersion("lme4")), lmerTest = as.character(packageVersion("lmerTest")),
                            pbkrtest = as.character(packageVersion("pbkrtest"))))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), "boundary.json")
