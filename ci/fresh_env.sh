#!/usr/bin/env bash
# A user's install, end to end, in throwaway virtualenvs (issue 16's "fresh virtualenv" check):
#
#   1. torch: a new venv holding only torch -> `pip install .[torch]` -> `hvd-compress build-horovod`
#      -> `hvd-compress doctor` -> an unchanged Horovod PyTorch script (examples/horovod_pytorch_digits.py)
#      under `horovodrun -np 2 --gloo python -m hvd_compress.run` with HVD_COMPRESS=qsgd:bits=4, and
#      once with HVD_COMPRESS=none for the fp32 bytes; prints bits per value and bytes per step.
#   2. TF: the same in a second new venv holding only tensorflow-cpu + tf-keras (`pip install .[tf]`),
#      with the unchanged TF2 tape script (examples/horovod_tf_digits.py) and Keras script
#      (examples/horovod_keras_digits.py).
#
# Usage: ci/fresh_env.sh [WORK_DIR]     (default: a new temporary folder, removed at the end)
#        PYTHON=python3.12 ci/fresh_env.sh
# The venvs live in WORK_DIR and are removed at exit (success or not); a given WORK_DIR is reused
# (what an earlier run left there is replaced), so the script can be run again and again. It prints
# the time of every phase and exits non-zero at the first failure. Not part of ci/test.sh: the
# installs alone take minutes.
#
# Versions: torch, TF and tf-keras as ci/setup.sh pins them (read from it). The examples' own
# requirement, scikit-learn (their data set, 8x8 digits), is installed after hvd_compress, like a
# script's own dependency. Horovod comes from `hvd-compress build-horovod`, cached by versions in
# $HVD_COMPRESS_CACHE or ~/.cache/hvd_compress: a torch-only and a TF-only environment have their own
# keys (horovod-0.28.1-torch2.13.0-tfnone-..., horovod-0.28.1-torchnone-tf2.21.0-...), so the first
# run builds Horovod twice (7.5 minutes each, measured on 2 shared cores) and later runs take the
# cached wheels (build-horovod: 6-26 s). A whole run with the cache: about 15 minutes, mostly pip.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
pin() { sed -n "s/^$1=\([^ ]*\).*/\1/p" "$ROOT/ci/setup.sh" | head -1; }
TORCH_VERSION=$(pin TORCH_VERSION)
TF_VERSION=$(pin TF_VERSION)
[ -n "$TORCH_VERSION" ] && [ -n "$TF_VERSION" ] || { echo "[fresh_env] cannot read the pins from ci/setup.sh" >&2; exit 1; }
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
SPEC=${HVD_COMPRESS_SPEC:-qsgd:bits=4}
NP=2
EPOCHS=3
BATCH=32

if [ $# -ge 1 ]; then
  WORK="$1"; OWN_WORK=0
  mkdir -p "$WORK"
  WORK="$(cd "$WORK" && pwd)"
else
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/hvdc-fresh.XXXXXX")"; OWN_WORK=1
fi
SRC="$WORK/src"

PHASES=()
CURRENT=""
log() { echo "[fresh_env] $*" >&2; }
now() { date +%s.%N; }
cleanup() {
  local rc=$?
  [ -n "$CURRENT" ] && PHASES+=("$(printf '%-52s  FAILED' "$CURRENT")")
  log "phase times (s):"
  for line in "${PHASES[@]}"; do echo "[fresh_env]   $line" >&2; done
  rm -rf "$WORK/torch-venv" "$WORK/tf-venv" "$SRC"
  [ "$OWN_WORK" = 1 ] && rm -rf "$WORK"
  if [ "$rc" = 0 ]; then log "OK (venvs removed)"; else log "FAILED (exit $rc) in: ${CURRENT:-?}; venvs removed"; fi
  exit "$rc"
}
trap cleanup EXIT
# phase NAME CMD...: run CMD, record its wall time
phase() {
  local name="$1"; shift
  CURRENT="$name"
  log "== $name"
  local t0; t0=$(now)
  "$@"
  PHASES+=("$(awk -v n="$name" -v t0="$t0" -v t1="$(now)" 'BEGIN { printf "%-52s %7.1f", n, t1 - t0 }')")
  CURRENT=""
}
# The machine's pip config may list local mirror folders that are absent: drop pip's warnings about
# them (and nothing else), keeping pip's exit status.
quiet() { { "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; } >&2; }

# Nothing from the caller's environment may leak in: this checkout on PYTHONPATH would hide the
# installed package; a user site-packages would add packages the venv does not hold.
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV
export PYTHONNOUSERSITE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export TF_CPP_MIN_LOG_LEVEL=2 OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1

# --- system tools Horovod's build needs (only when a wheel must be built) ------------------
if ! command -v cmake >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  log "installing cmake and a C++ compiler (Debian) for Horovod's build"
  apt-get install -y -q cmake g++ >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q cmake g++ >/dev/null; }
fi

# --- the source a user would have: this checkout's files, without its venv or build leftovers ---
copy_source() {
  rm -rf "$SRC" && mkdir -p "$SRC"
  if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # tracked and untracked-but-not-ignored files: what a clone plus local edits holds
    (cd "$ROOT" && git ls-files -z -co --exclude-standard | tar --null -T - --ignore-failed-read -cf -) | tar -xf - -C "$SRC"
  else
    tar -C "$ROOT" --exclude=.venv --exclude=build --exclude='*.egg-info' --exclude=__pycache__ -cf - . | tar -xf - -C "$SRC"
  fi
}
phase "copy source" copy_source

new_venv() {  # new_venv DIR: a new virtualenv, nothing but pip (and setuptools where Python ships it)
  rm -rf "$1"
  "$PY" -m venv "$1"
}

# steps the examples take (the digits training split: 1797 images, 25% held out = 1347, sharded
# over NP ranks): the torch script's DistributedSampler pads the shard and keeps the last partial
# batch; the TF scripts take whole batches of the shorter shard.
TRAIN=1347
TORCH_STEPS=$(( EPOCHS * ( ( (TRAIN + NP - 1) / NP + BATCH - 1) / BATCH ) ))
TF_STEPS=$(( EPOCHS * ( TRAIN / NP / BATCH ) ))

# train VENV FRAMEWORK SCRIPT STEPS CODEC: the unchanged script through the launcher; keeps the log
train() {
  local venv="$1" fw="$2" script="$3" steps="$4" codec="$5"
  local out; out="$WORK/$(basename "$script" .py)-${codec//[:=,]/_}.log"
  # from $WORK, not the checkout: `import hvd_compress` must find the installed copy
  (cd "$WORK" && PATH="$venv/bin:$PATH" HVD_COMPRESS="$codec" timeout 900 \
     horovodrun -np "$NP" --gloo python -m hvd_compress.run "$SRC/$script" \
     --epochs "$EPOCHS" --batch-size "$BATCH") >"$out" 2>&1 || { tail -40 "$out" >&2; return 1; }
  "$PY" - "$out" "$fw" "$steps" "$codec" <<'EOF'
import json, re, sys
path, fw, steps, codec = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
text = open(path, errors="replace").read()
lines = re.findall(rf"\[hvd_compress\.run\] rank (\d+) {fw} wire_stats (\{{.*\}})", text)
if sorted(int(r) for r, _ in lines) != [0, 1]:
    sys.exit(f"expected a wire_stats line from ranks 0 and 1 in {path}:\n{text[-3000:]}")
stats = json.loads(dict(lines)["0"])
acc = re.findall(r"Accuracy: ([\d.]+)%", text) or [100 * float(a) for a in re.findall(r"accuracy=([\d.]+)", text)]
values = sum(r["values"] for r in stats.values())
payload = sum(r["payload_bytes"] for r in stats.values())
sent = sum(r["sent_bytes"] for r in stats.values())
print(f"[fresh_env] {fw} {path.rsplit('/', 1)[-1]}: HVD_COMPRESS={codec}, {steps} steps, rank 0")
for label, r in sorted(stats.items()):
    print(f"[fresh_env]   {label[:60]:<60} {r['values'] / steps:>10,.0f} values/step "
          f"{r['bits_per_value']:6.2f} bits/value {r['payload_bytes'] / steps:>10,.0f} payload bytes/step")
print(f"[fresh_env]   all: {payload / steps:,.0f} payload bytes/step, {sent / steps:,.0f} bytes/step sent "
      f"(fp32 would be {4 * values / steps:,.0f} payload bytes/step: {payload / (4 * values):.3f}x); "
      f"test accuracy {float(acc[-1]):.2f}%" if acc else "no accuracy line")
if not acc:
    sys.exit(1)
EOF
}

# ================================= torch =================================================
TV="$WORK/torch-venv"
phase "torch: new venv" new_venv "$TV"
phase "torch: pip install torch==$TORCH_VERSION" quiet "$TV/bin/python" -m pip install -q "torch==$TORCH_VERSION"
phase "torch: pip install .[torch]" quiet "$TV/bin/python" -m pip install -q "$SRC[torch]"
phase "torch: hvd-compress build-horovod" "$TV/bin/hvd-compress" build-horovod
phase "torch: hvd-compress doctor" "$TV/bin/hvd-compress" doctor
phase "torch: pip check" quiet "$TV/bin/python" -m pip check
phase "torch: pip install scikit-learn (the example's data)" quiet "$TV/bin/python" -m pip install -q scikit-learn
(cd "$WORK" && "$TV/bin/python" -c "import hvd_compress, sys; print('[fresh_env] hvd_compress', hvd_compress.__version__, 'from', hvd_compress.__file__); assert sys.prefix == '$TV'")
phase "torch: train $SPEC (horovodrun -np $NP)" train "$TV" torch examples/horovod_pytorch_digits.py "$TORCH_STEPS" "$SPEC"
phase "torch: train none (fp32 baseline)" train "$TV" torch examples/horovod_pytorch_digits.py "$TORCH_STEPS" none
rm -rf "$TV"

# ================================= TensorFlow ============================================
FV="$WORK/tf-venv"
phase "tf: new venv" new_venv "$FV"
phase "tf: pip install tensorflow-cpu tf-keras==$TF_VERSION" quiet "$FV/bin/python" -m pip install -q \
  "tensorflow-cpu==$TF_VERSION" "tf-keras==$TF_VERSION"
phase "tf: pip install .[tf]" quiet "$FV/bin/python" -m pip install -q "$SRC[tf]"
phase "tf: hvd-compress build-horovod" "$FV/bin/hvd-compress" build-horovod
phase "tf: hvd-compress doctor" "$FV/bin/hvd-compress" doctor
phase "tf: pip check" quiet "$FV/bin/python" -m pip check
phase "tf: pip install scikit-learn (the example's data)" quiet "$FV/bin/python" -m pip install -q scikit-learn
(cd "$WORK" && "$FV/bin/python" -c "import importlib.util as u; assert u.find_spec('torch') is None, 'torch in the TF venv'")
phase "tf: train tape $SPEC (horovodrun -np $NP)" train "$FV" tensorflow examples/horovod_tf_digits.py "$TF_STEPS" "$SPEC"
phase "tf: train tape none (fp32 baseline)" train "$FV" tensorflow examples/horovod_tf_digits.py "$TF_STEPS" none
phase "tf: train keras $SPEC (horovodrun -np $NP)" train "$FV" tensorflow examples/horovod_keras_digits.py "$TF_STEPS" "$SPEC"
rm -rf "$FV"
log "both environments: installed, Horovod built or taken from the cache, and trained compressed"
