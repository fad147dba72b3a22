#!/usr/bin/env bash
# One-command, idempotent environment for hvd_compress: a virtualenv at .venv with torch,
# TensorFlow (+ tf-keras), test tools, and Horovod 0.28.1 built from its sdist with the fixes
# today's stack needs. The Horovod wheel is cached outside the repo, keyed by versions, so a
# second run takes seconds.
#
# Why Horovod needs patches to build on torch 2.13 / TF 2.21 (C++17, xla_mpi_ops.cc, system cmake):
# see the docstring of hvd_compress/horovod_build.py, which carries them.
#
# On a GPU machine (`nvidia-smi -L` lists a GPU; HVD_COMPRESS_CPU_ONLY=1 opts out) the same script
# installs the CUDA build of torch and builds Horovod with NCCL: see ci/setup_gpu.sh. CPU machines
# are set up exactly as without it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TORCH_VERSION=2.13.0
TF_VERSION=2.21.0
HOROVOD_VERSION=0.28.1
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
VENV="$ROOT/.venv"
CACHE="${HVD_COMPRESS_CACHE:-$HOME/.cache/hvd_compress}"
STAMP="$VENV/.hvd_compress_setup"
log() { echo "[setup] $*" >&2; }
# The machine's pip config lists local mirror folders that may be absent; drop pip's warning lines
# about them (and nothing else), keeping pip's exit status.
quiet() { { "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; } >&2; }
# shellcheck source=ci/setup_gpu.sh
source "$ROOT/ci/setup_gpu.sh"
GPU=0
GPU_STAMP=""
if gpu_wanted; then GPU=1; GPU_STAMP=" gpu=nccl"; fi

# --- system packages: OpenMPI (optional) and cmake ----------------------------------------
if ! command -v mpicxx >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  log "installing OpenMPI from Debian (libopenmpi-dev openmpi-bin)"
  (apt-get install -y -q libopenmpi-dev openmpi-bin >/dev/null 2>&1 ||
   { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libopenmpi-dev openmpi-bin >/dev/null 2>&1; }) ||
    log "OpenMPI install failed; continuing with Gloo only"
fi
# openssh (optional): sshd per emulated host for the multi-host tests (hvd_compress/bench/cluster.py)
if [ ! -x /usr/sbin/sshd ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  log "installing openssh-server openssh-client (emulated cluster tests)"
  (apt-get install -y -q openssh-server openssh-client >/dev/null 2>&1 ||
   { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q openssh-server openssh-client >/dev/null 2>&1; }) ||
    log "openssh install failed; the emulated-cluster tests will be skipped"
fi
if ! command -v cmake >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get install -y -q cmake >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q cmake; }
fi
WITH_MPI=0
command -v mpicxx >/dev/null 2>&1 && WITH_MPI=1

# The codecs' C kernels (hvd_compress/_native): cached by source + compiler, built in about a second.
# A failed build is not fatal: the codecs fall back to plain torch ops and say so.
build_native() {
  "$VENV/bin/python" -m hvd_compress._native --build >&2 ||
    log "WARNING: native codec kernels did not build; codecs use the slower plain torch path"
}

# --- virtualenv + Python packages -------------------------------------------------------
WANT="torch=$TORCH_VERSION tf=$TF_VERSION horovod=$HOROVOD_VERSION mpi=$WITH_MPI reqs=$(cat "$ROOT/ci/requirements.txt" | md5sum | cut -c1-8)$GPU_STAMP"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && "$VENV/bin/python" -c "import hvd_compress, horovod.torch" 2>/dev/null; then
  log "environment up to date ($WANT)"
  build_native
  exit 0
fi

[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
PIP=(quiet "$VENV/bin/python" -m pip install -q --disable-pip-version-check)
"${PIP[@]}" --upgrade "pip<26" "setuptools<81" wheel
if [ "$GPU" = 1 ]; then
  gpu_install_packages || exit 1
else
  log "installing torch $TORCH_VERSION, tensorflow-cpu $TF_VERSION and requirements"
  "${PIP[@]}" "torch==$TORCH_VERSION" "tensorflow-cpu==$TF_VERSION" "tf-keras==$TF_VERSION" -r "$ROOT/ci/requirements.txt"
fi
# pip's cmake (4.x) breaks Horovod's bundled gloo; make sure the venv does not shadow the system one.
"$VENV/bin/python" -m pip uninstall -y -q cmake >/dev/null 2>&1 || true

# --- Horovod: cached wheel or build from sdist ------------------------------------------
# hvd_compress/horovod_build.py (`hvd-compress build-horovod`) holds the build: sdist, patches,
# system cmake, no build isolation; the wheel is cached in $CACHE/<key>, the key naming the
# versions (horovod-0.28.1-torch2.13.0-tf2.21.0-cp311-mpi1). Run from $ROOT, so it imports this
# checkout before the editable install below. HVD_BUILD_JOBS (default 2) sets the compile jobs.
# On a GPU machine: --gpu (NCCL), after nvcc and the NCCL paths are in place (ci/setup_gpu.sh).
BUILD_ARGS=(--wheel-dir "$CACHE")
if [ "$GPU" = 1 ]; then
  gpu_prepare_build || exit 1
  BUILD_ARGS+=(--gpu)
fi
"$VENV/bin/python" -m hvd_compress.horovod_build "${BUILD_ARGS[@]}" || exit 1
"${PIP[@]}" --no-deps -e "$ROOT"

CHECK=$(TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/horovodrun" --check-build 2>/dev/null)
echo "$CHECK" | grep -v "^$" >&2
for fw in PyTorch TensorFlow Gloo; do
  echo "$CHECK" | grep -q "\[X\] $fw" || { log "Horovod lacks $fw support"; exit 1; }
done
if [ "$GPU" = 1 ]; then gpu_require_nccl "$CHECK" || exit 1; fi
build_native
echo "$WANT" > "$STAMP"
log "ready: source $VENV/bin/activate"
