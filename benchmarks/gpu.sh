#!/usr/bin/env bash
# jaxhlm on a GPU machine, in one command of at most 8 minutes (every step under `timeout`).
#
#   bash benchmarks/gpu.sh OUTDIR                   # from the repository root; the real run
#   GPU_SH_SMOKE=1 bash benchmarks/gpu.sh OUTDIR    # tiny version (configs/bench/smoke.toml, no InstEval,
#                                                   # 100 simulated responses; about 2 min on a 2-core CPU)
#
# Environment knobs: PYTHON (interpreter; default python3, else python), GPU_SH_TOTAL_S (total
# budget, default 480; 300 with GPU_SH_SMOKE=1), GPU_SH_REF_S (the reference step, default 150;
# 120 smoke), GPU_SH_GRID=full (run configs/bench/gpu.toml unchanged instead of the reduced grid;
# it will not fit in 8 minutes), GPU_SH_EXTRA_PYTHONPATH (prepended to PYTHONPATH, e.g. a folder
# holding dependencies the machine's image lacks).
#
# jaxhlm is not installed: PYTHONPATH=$PWD makes this checkout importable (no pip, no network);
# the image's own jax (CUDA) is used.  JAXHLM_COMPILATION_CACHE=0: every first fit compiles.
#
# Steps (each goes on if an earlier one failed):
#   1. env (30 s)        OUTDIR/env.txt: nvidia-smi, Python, jax/jaxlib, jax.devices(), which of
#                        jaxhlm's dependencies are missing, and whether jaxhlm imports.
#   2. reference (150 s) benchmarks/gpu_check.py reference: every lme4 reference fit of
#                        tests/reference/*.json (InstEval last, while time is left) on the GPU and,
#                        at the same time in a second process, on the CPU (JAX_PLATFORMS=cpu), plus
#                        fit_many on 400 simulated sleepstudy responses on both.
#                        OUTDIR/reference.txt (readable table), OUTDIR/reference.json, raw results
#                        and logs in OUTDIR/reference-work/.  Pass: |GPU-CPU| <= 1e-8 (1 + |objective|)
#                        for every model and every batch fit, and each side within 1e-6 of lme4.
#                        Exit code 0 pass, 1 fail, 2 no GPU, 3 jaxhlm not importable.
#   2b. GLMMs (100 s) benchmarks/gpu_glmm.py: cbpp and VerbAgg Laplace fits (first and warm, checked
#                        against lme4 and the CPU) and cbpp's bootstrap of 10,000 (200 smoke);
#                        OUTDIR/glmm.txt and glmm.json.  Its exit code goes to steps.tsv only.
#   3. grid (the rest, up to 440 s from the start)
#                        `python -m jaxhlm bench CONFIG --out-dir OUTDIR/grid --no-plots` on a reduced
#                        copy of configs/bench/gpu.toml (the full grid needs far more than 8 minutes),
#                        split into parts run in priority order (intercept, slope, groups, crossed,
#                        then a GPU-only B = 10^6 part), each started only if enough time is left and
#                        killed at the deadline; backends gpu and cpu; no peers (lme4/statsmodels are
#                        not installed there; the smoke grid keeps them and shows they are skipped).
#                        OUTDIR/grid/bench-gpu-pN-PART-DATE.csv/.json per finished part,
#                        OUTDIR/grid/grid-all.csv (all parts; a killed part's finished cells are read
#                        back from its log), OUTDIR/grid/configs/*.toml (the configs, including the
#                        whole reduced grid as gpu-reduced.toml), OUTDIR/grid/logs/, plan.tsv, parts.tsv.
#   4. summary           OUTDIR/SUMMARY.md: what ran, the reference verdict, the grid's files and rows.
# Also OUTDIR/run.log (this script's output) and OUTDIR/steps.tsv (step, exit code, seconds, note).
# The script's exit code is the reference check's (0 only if every comparison passed on a GPU).

set -u

if [ $# -lt 1 ]; then
  echo "usage: [GPU_SH_SMOKE=1] bash benchmarks/gpu.sh OUTDIR" >&2
  exit 64
fi
mkdir -p "$1" || exit 64
OUT=$(cd "$1" && pwd)
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 64

SMOKE=${GPU_SH_SMOKE:-0}
[ "$SMOKE" = "0" ] && SMOKE=""
if [ -n "$SMOKE" ]; then
  TOTAL=${GPU_SH_TOTAL_S:-300}; REF_S=${GPU_SH_REF_S:-120}; MODE="smoke"
else
  TOTAL=${GPU_SH_TOTAL_S:-480}; REF_S=${GPU_SH_REF_S:-150}; MODE="full run"
fi
MARGIN=40          # the grid ends this long before TOTAL; merge and summary fit in it
ENV_S=30

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if command -v python3 >/dev/null 2>&1; then PY=python3; else PY=python; fi
fi
export PYTHONPATH="$REPO${GPU_SH_EXTRA_PYTHONPATH:+:$GPU_SH_EXTRA_PYTHONPATH}${PYTHONPATH:+:$PYTHONPATH}"
export JAXHLM_COMPILATION_CACHE=0
export JAXHLM_HOST_FIT=0   # the compiled programs on the device, not NumPy's fits on the host (jaxhlm/host_fit.py)
export PYTHONUNBUFFERED=1

if command -v timeout >/dev/null 2>&1; then
  tmo() { local s=$1; shift; timeout -k 5 "$s" "$@"; }
else
  tmo() { shift; "$@"; }   # no coreutils timeout: run without (the Python steps keep their own budgets)
fi

exec > >(tee -a "$OUT/run.log") 2>&1
START=$SECONDS
elapsed() { echo $((SECONDS - START)); }
log() { echo "[gpu.sh $(date -u +%H:%M:%S) +$(elapsed)s] $*"; }
: > "$OUT/steps.tsv"
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >> "$OUT/steps.tsv"; }

log "$MODE: OUTDIR=$OUT, repo $REPO, python $PY, total budget ${TOTAL}s"

# A minimal summary first, in case later steps (or Python itself) fail outright.
cat > "$OUT/SUMMARY.md" <<EOF
# jaxhlm GPU check: $MODE (incomplete)

gpu.sh started $(date -u +%FT%TZ) but did not get as far as writing the full summary.
See run.log, steps.tsv, env.txt, reference.txt and grid/ in this folder.
EOF

# ------------------------------------------------------------------ 1. environment
t=$SECONDS
{
  echo "# environment, $(date -u +%FT%TZ), host $(hostname 2>/dev/null), mode: $MODE"
  uname -a
  echo
  echo "## nvidia-smi"
  if command -v nvidia-smi >/dev/null 2>&1; then
    tmo 10 nvidia-smi || echo "nvidia-smi: exit $?"
  else
    echo "nvidia-smi: not found (no NVIDIA driver tools on this machine)"
  fi
  echo
  echo "## variables"
  for v in JAX_PLATFORMS CUDA_VISIBLE_DEVICES XLA_FLAGS XLA_PYTHON_CLIENT_PREALLOCATE XLA_PYTHON_CLIENT_MEM_FRACTION PYTHONPATH JAXHLM_COMPILATION_CACHE; do
    echo "$v=${!v-<unset>}"
  done
  echo
  echo "## python, jax, dependencies"
  echo "interpreter: $(command -v "$PY") ($("$PY" -V 2>&1))"
  tmo $((ENV_S - 12)) "$PY" benchmarks/gpu_check.py env || echo "gpu_check.py env: exit $?"
} > "$OUT/env.txt" 2>&1
rc=$?
record env $rc $((SECONDS - t)) "env.txt"
grep -E "default_backend|jax.devices|MISSING|FAILED|nvidia-smi: not" "$OUT/env.txt" | sed 's/^/  /'
log "env done ($((SECONDS - t))s)"

# ------------------------------------------------------------------ 2. reference check
t=$SECONDS
log "reference check (budget ${REF_S}s)"
tmo "$REF_S" "$PY" benchmarks/gpu_check.py reference "$OUT" --budget $((REF_S - 10)) ${SMOKE:+--smoke}
REF_RC=$?
case $REF_RC in
  0) note="pass" ;; 1) note="FAIL (a comparison failed or could not be made)" ;;
  2) note="no GPU (CPU side vs lme4 passed; GPU side not run)" ;; 3) note="jaxhlm not importable" ;;
  124|137) note="killed by timeout" ;; *) note="error" ;;
esac
[ -f "$OUT/reference.json" ] || note="$note; no reference.json written"
record reference $REF_RC $((SECONDS - t)) "$note"
log "reference done: exit $REF_RC ($note), $((SECONDS - t))s"

# ------------------------------------------------------------------ 2b. GLMMs
t=$SECONDS
GLMM_S=${GPU_SH_GLMM_S:-100}
log "GLMM cells (budget ${GLMM_S}s)"
if [ -n "$SMOKE" ]; then NSIM=200; else NSIM=10000; fi
tmo "$GLMM_S" "$PY" benchmarks/gpu_glmm.py "$OUT" --nsim "$NSIM" > "$OUT/glmm.txt" 2>&1
GLMM_RC=$?
cat "$OUT/glmm.txt" | tail -n 5 | sed 's/^/  /'
record glmm $GLMM_RC $((SECONDS - t)) "glmm.txt, glmm.json"
log "GLMM done: exit $GLMM_RC ($((SECONDS - t))s)"

# ------------------------------------------------------------------ 3. the grid
t=$SECONDS
GRID_END=$((TOTAL - MARGIN))
if [ -n "$SMOKE" ]; then
  SRC=configs/bench/smoke.toml; GMODE=split
elif [ "${GPU_SH_GRID:-reduced}" = "full" ]; then
  SRC=configs/bench/gpu.toml; GMODE=whole
else
  SRC=configs/bench/gpu.toml; GMODE=reduced
fi
mkdir -p "$OUT/grid/logs"
: > "$OUT/grid/parts.tsv"
: > "$OUT/grid/plan.tsv"
tmo 20 "$PY" benchmarks/gpu_check.py grid-plan "$OUT" --source "$SRC" --mode "$GMODE" \
  || { log "grid-plan failed (exit $?): running $SRC whole"; printf 'whole\t%s\t20\n' "$REPO/$SRC" > "$OUT/grid/plan.tsv"; }
nparts=0; nok=0
while IFS=$'\t' read -r name cfg min_s <&3; do
  [ -n "$name" ] || continue
  nparts=$((nparts + 1))
  left=$((GRID_END - (SECONDS - START)))
  if [ "$left" -lt "$min_s" ]; then
    log "grid part $name: skipped (${left}s left < ${min_s}s)"
    printf '%s\tskipped\t-\t0\t%ss left < %ss\n' "$name" "$left" "$min_s" >> "$OUT/grid/parts.tsv"
    continue
  fi
  log "grid part $name: python -m jaxhlm bench $cfg (timeout ${left}s)"
  p0=$SECONDS
  tmo "$left" "$PY" -m jaxhlm bench "$cfg" --out-dir "$OUT/grid" --no-plots \
    > "$OUT/grid/logs/$name.log" 2>&1 < /dev/null
  prc=$?
  case $prc in 0) outcome=done; nok=$((nok + 1)) ;; 124|137) outcome=killed ;; *) outcome=failed ;; esac
  printf '%s\t%s\t%s\t%s\t\n' "$name" "$outcome" "$prc" $((SECONDS - p0)) >> "$OUT/grid/parts.tsv"
  log "grid part $name: $outcome (exit $prc, $((SECONDS - p0))s); last lines of its log:"
  tail -n 4 "$OUT/grid/logs/$name.log" | sed 's/^/    /'
done 3< "$OUT/grid/plan.tsv"
tmo 15 "$PY" benchmarks/gpu_check.py grid-merge "$OUT" || log "grid-merge failed (exit $?)"
grc=0; [ "$nok" -eq "$nparts" ] && [ "$nparts" -gt 0 ] || grc=1
record grid $grc $((SECONDS - t)) "$SRC ($GMODE): $nok of $nparts part(s) finished; see grid/parts.tsv"
log "grid done: $nok of $nparts part(s) finished ($((SECONDS - t))s)"

# ------------------------------------------------------------------ 4. summary
record total "-" "$(elapsed)" "before the summary"
tmo 15 "$PY" benchmarks/gpu_check.py summary "$OUT" --mode "$MODE" \
  || { log "summary failed (exit $?)"; {
         echo; echo "## steps (gpu_check.py summary failed)"; echo; cat "$OUT/steps.tsv"
         echo; echo "## reference"; echo; cat "$OUT/reference.txt" 2>/dev/null || echo "no reference.txt"
         echo; echo "## grid"; echo; ls -l "$OUT/grid" 2>/dev/null; } >> "$OUT/SUMMARY.md"; }
log "finished in $(elapsed)s; reference exit $REF_RC; see $OUT/SUMMARY.md"
exit "$REF_RC"
