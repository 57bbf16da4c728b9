# Data for the GLMM references (issue 14): lme4's cbpp, grouseticks, VerbAgg and mlmRev's
# Contraception as CSV.  Usage: Rscript export_data.R OUTDIR
suppressMessages({library(lme4); library(mlmRev)})
out <- commandArgs(TRUE)[1]
dir.create(out, showWarnings = FALSE, recursive = TRUE)
w <- function(d, name) write.csv(d, file.path(out, paste0(name, ".csv")), row.names = FALSE)
w(cbpp, "cbpp")
g <- grouseticks; g$cHEIGHT <- as.numeric(scale(g$HEIGHT)); w(g, "grouseticks")
v <- VerbAgg; v$r2 <- as.integer(v$r2 == "Y"); w(v[, c("Anger", "Gender", "item", "btype", "situ", "mode", "id", "r2")], "VerbAgg")
c <- Contraception; c$use <- as.integer(c$use == "Y"); w(c, "Contraception")
