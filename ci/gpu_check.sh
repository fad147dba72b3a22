#!/usr/bin/env bash
# One-shot GPU check (issue #12 item 5): run it once on a GPU machine, read the summary.
#
# Made for a machine with one H100/H200, only PyTorch and Triton preinstalled in the system python
# (numpy too: hvd_compress needs it), no network, no Horovod, no TF; cwd a copy of this repository.
# Nothing is installed; everything runs with `PYTHONPATH=.` and `python3` (PYTHON=... to change).
# It finishes within GPU_CHECK_BUDGET seconds (default 450, under 8 minutes): every step has its
# own `timeout`, capped by what is left of the budget.
#
#   bash ci/gpu_check.sh                       # on the GPU machine; results under $OUT (else a temp dir)
#   GPU_CHECK_DEVICE=cpu bash ci/gpu_check.sh  # dry mode, anywhere: the same driver code on CPU
#
# Steps (GPU_CHECK_STEPS, default env,tests,bench,ddp), each writing $OUT/<step>.log:
#   env    nvidia-smi, python / torch / triton / numpy / pytest versions, devices, NCCL -> env.json
#   tests  the `gpu`-marked tests (tests/test_triton_kernels.py and every tests/test_*.py that marks
#          one): under pytest if it imports (-p no:cacheprovider; --timeout only if pytest-timeout
#          imports; JUnit XML in gpu_tests.xml), else ci/gpu_check.py's pytest stand-in (gpu_tests.json).
#          Dry mode: the same selection (skipped without CUDA) plus the static host-sync scan run
#          through the stand-in, so both runners are exercised.
#   bench  python -m hvd_compress.bench codecs --device cuda --sizes 16m,64m --json codecs_cuda.json:
#          GB/s of fp32 input beside the device-to-device copy bandwidth and the plain torch-ops path
#          (HVD_COMPRESS_BACKEND=plain) on the same GPU; the codecs with Triton kernels by default
#          (GPU_CHECK_BENCH_CODECS: a ';'-separated list, or "all" for the bench's full default list).
#          Dry mode: --device cpu --sizes 64k, two codecs.
#   ddp    ci/gpu_check.py ddp: 2 ranks of the DDP comm hook (hvd_compress/torch/frontends/ddp.py) on CUDA
#          tensors, NCCL (Gloo if NCCL refuses two ranks on one GPU, plus a 1-rank NCCL run for the
#          sync check), codecs none and qsgd:bits=4, 300 steps: accuracy within 1 point of none,
#          replicas identical, and no host sync per compressed tensor inside the hook (torch's sync
#          detector). Dry mode: Gloo on CPU, 60 steps; host reads are listed, not checked.
#          GPU_CHECK_DDP_STEPS changes the step count.
#
# Exit status: 0 every step passed; 1 a step failed, timed out or was left out for lack of time
# (the summary says which); 2 usage error or torch does not import; 77 skipped: no CUDA (the
# default device is cuda and torch sees no GPU; nothing was run; GPU_CHECK_DEVICE=cpu for the
# dry mode). The summary table is printed last and kept in $OUT/summary.txt.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
STEPS="${GPU_CHECK_STEPS:-env,tests,bench,ddp}"
BUDGET="${GPU_CHECK_BUDGET:-450}"
OUT="${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}"
mkdir -p "$OUT"
export OUT PYTHONDONTWRITEBYTECODE=1 TF_CPP_MIN_LOG_LEVEL=3 PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
say() { echo "[gpu_check] $*"; }

case "$DEVICE" in
  cuda | cpu) ;;
  *) say "GPU_CHECK_DEVICE must be cuda or cpu, got '$DEVICE'"; exit 2 ;;
esac

# --- no CUDA: stop at once --------------------------------------------------------------
if [ "$DEVICE" = cuda ]; then
  if ! ls /dev/nvidia[0-9]* >/dev/null 2>&1 && ! command -v nvidia-smi >/dev/null 2>&1; then
    cuda=3  # no driver device and no nvidia-smi: do not even import torch
  else
    timeout 120 "$PY" -c "import sys
try:
    import torch
except Exception as exc:
    print(f'torch does not import: {exc}'); sys.exit(4)
sys.exit(0 if torch.cuda.is_available() else 3)"
    cuda=$?
  fi
  if [ "$cuda" = 4 ] || { [ "$cuda" != 0 ] && [ "$cuda" != 3 ]; }; then
    say "cannot run: '$PY' fails to import torch (exit $cuda); set PYTHON=... to the python that has it"
    exit 2
  fi
  if [ "$cuda" = 3 ]; then
    say "skipped: no CUDA (torch.cuda.is_available() is false or no NVIDIA device); nothing was run." | tee "$OUT/summary.txt"
    say "GPU_CHECK_DEVICE=cpu bash ci/gpu_check.sh runs the dry mode on CPU. Exit status 77 = skipped."
    exit 77
  fi
fi

say "device $DEVICE, steps $STEPS, budget ${BUDGET}s, results in $OUT"
START=$(date +%s)
NAMES=() STATUS=() SECS=() NOTES=()
record() { NAMES+=("$1"); STATUS+=("$2"); SECS+=("$3"); NOTES+=("$4"); }

# run_step NAME CAP_SECONDS COMMAND...: runs COMMAND under `timeout` (CAP or what is left of the
# budget), output to the terminal and $OUT/NAME.log; records PASS / FAIL / TIMEOUT
run_step() {
  local name=$1 cap=$2 left limit t0 rc status note
  shift 2
  left=$((BUDGET - ($(date +%s) - START)))
  limit=$((cap < left ? cap : left))
  if [ "$limit" -lt 20 ]; then
    record "$name" "NOT RUN" 0 "no time left in the ${BUDGET}s budget"
    return
  fi
  echo
  say "=== $name (timeout ${limit}s): $*"
  t0=$(date +%s)
  timeout --kill-after=15 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  rc=${PIPESTATUS[0]}
  case "$rc" in
    0) status=PASS note="" ;;
    124 | 137) status=TIMEOUT note="killed after ${limit}s" ;;
    *) status=FAIL note="exit $rc" ;;
  esac
  record "$name" "$status" $(($(date +%s) - t0)) "$note"
}

want() { case ",$STEPS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# --- (d) environment ------------------------------------------------------------------------
step_env() {
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,driver_version --format=csv
  else
    echo "nvidia-smi: not available"
  fi
  "$PY" ci/gpu_check.py env --out "$OUT"
}

# --- (a) gpu-marked tests ---------------------------------------------------------------------
step_tests() {
  local files
  files=$(grep -l "mark.gpu" tests/test_*.py | tr '\n' ' ')
  echo "test files with gpu tests: $files"
  if "$PY" -c "import pytest" 2>/dev/null; then
    local extra=()
    "$PY" -c "import pytest_timeout" 2>/dev/null && extra+=(--timeout=240)
    # shellcheck disable=SC2086
    "$PY" -m pytest -p no:cacheprovider -m gpu -q -rs --continue-on-collection-errors \
      --junitxml="$OUT/gpu_tests.xml" "${extra[@]}" $files || return $?
  else
    echo "pytest is not installed: running the gpu tests without it (ci/gpu_check.py tests)"
    "$PY" ci/gpu_check.py tests --marker gpu --json "$OUT/gpu_tests.json" || return $?
  fi
  if [ "$DEVICE" = cpu ]; then  # dry mode: exercise the pytest-less runner too
    "$PY" ci/gpu_check.py tests --marker "" -k test_no_host_round_trip --files tests/test_triton_kernels.py \
      --force-stand-in --json "$OUT/stand_in_tests.json"
  fi
}

# --- (b) codec throughput ---------------------------------------------------------------------
step_bench() {
  local codecs="${GPU_CHECK_BENCH_CODECS:-qsgd;qsgd:bits=8;qsgd:bits=2,bucket_size=128;terngrad;onebit;efsign;signsgd;topk}"
  local args=()
  [ "$codecs" != all ] && args+=(--codecs "$codecs")
  if [ "$DEVICE" = cuda ]; then
    "$PY" -m hvd_compress.bench codecs --device cuda --sizes 16m,64m "${args[@]}" --json "$OUT/codecs_cuda.json"
  else
    "$PY" -m hvd_compress.bench codecs --device cpu --sizes 64k --codecs "qsgd:bits=4;onebit" --repeats 2 \
      --threads 1 --json "$OUT/codecs_cpu.json"
  fi
}

# --- (c) DDP hook, 2 processes ------------------------------------------------------------------
step_ddp() {
  if [ "$DEVICE" = cuda ]; then
    "$PY" ci/gpu_check.py ddp --device cuda --out "$OUT/ddp" --steps "${GPU_CHECK_DDP_STEPS:-300}" \
      --timeout 150 --probe-timeout 45
  else
    "$PY" ci/gpu_check.py ddp --device cpu --out "$OUT/ddp" --steps "${GPU_CHECK_DDP_STEPS:-60}" --timeout 150
  fi
}

# `timeout` runs programs, not functions: the steps run as `bash -c step_NAME` with these exported
export -f step_env step_tests step_bench step_ddp
export PY DEVICE
want env && run_step env 60 bash -c step_env
want tests && run_step tests 200 bash -c step_tests
want bench && run_step bench 180 bash -c step_bench
want ddp && run_step ddp 240 bash -c step_ddp

# --- summary ------------------------------------------------------------------------------------
{
  echo
  echo "gpu_check summary ($DEVICE; $(($(date +%s) - START))s of the ${BUDGET}s budget; results in $OUT)"
  printf '%-8s %-8s %6s  %s\n' step status secs note
  failed=0
  for i in "${!NAMES[@]}"; do
    printf '%-8s %-8s %6s  %s\n' "${NAMES[$i]}" "${STATUS[$i]}" "${SECS[$i]}" "${NOTES[$i]}"
    [ "${STATUS[$i]}" = PASS ] || failed=1
  done
  if [ -f "$OUT/tests.log" ]; then
    grep -E "^=* ?[0-9]+ (passed|failed|skipped|deselected|error)" "$OUT/tests.log" | sed 's/^/tests:   /'
  fi
  if [ -f "$OUT/ddp.log" ]; then
    grep -E "^RESULT " "$OUT/ddp.log" | sed 's/^RESULT /ddp:     /'
  fi
  if [ -f "$OUT/bench.log" ]; then
    grep -E "^(qsgd|onebit|efsign|terngrad) +size" "$OUT/bench.log" | sed 's/^/bench:   /'
  fi
  [ "${#NAMES[@]}" -gt 0 ] || { echo "no step selected (GPU_CHECK_STEPS=$STEPS)"; failed=1; }
  echo "exit status: $failed (0: every step passed)"
} | tee "$OUT/summary.txt"
grep -q "^exit status: 0 " "$OUT/summary.txt"
exit $?
