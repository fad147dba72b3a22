#!/usr/bin/env bash
# One-command, idempotent environment for hvd_compress: a virtualenv at .venv with torch,
# TensorFlow (+ tf-keras), test tools, and Horovod 0.28.1 built from its sdist with the fixes
# today's stack needs. The Horovod wheel is cached outside the repo, keyed by versions, so a
# second run takes seconds.
#
# Why the patches (measured on Python 3.11 / torch 2.13 / TF 2.21):
#   * Horovod pins C++14 in CMakeLists.txt and horovod/torch/CMakeLists.txt; torch >= 2.1
#     headers need C++17.
#   * horovod/tensorflow/xla_mpi_ops.cc does not compile against TF 2.21; it only serves GPU XLA.
#   * pip's cmake 4.x refuses Horovod's bundled gloo, so we build with the system cmake
#     (>= 3.13) and without build isolation.
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
WANT="torch=$TORCH_VERSION tf=$TF_VERSION horovod=$HOROVOD_VERSION mpi=$WITH_MPI reqs=$(cat "$ROOT/ci/requirements.txt" | md5sum | cut -c1-8)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && "$VENV/bin/python" -c "import hvd_compress, horovod.torch" 2>/dev/null; then
  log "environment up to date ($WANT)"
  build_native
  exit 0
fi

[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
PIP=(quiet "$VENV/bin/python" -m pip install -q --disable-pip-version-check)
"${PIP[@]}" --upgrade "pip<26" "setuptools<81" wheel
log "installing torch $TORCH_VERSION, tensorflow-cpu $TF_VERSION and requirements"
"${PIP[@]}" "torch==$TORCH_VERSION" "tensorflow-cpu==$TF_VERSION" "tf-keras==$TF_VERSION" -r "$ROOT/ci/requirements.txt"
# pip's cmake (4.x) breaks Horovod's bundled gloo; make sure the venv does not shadow the system one.
"$VENV/bin/python" -m pip uninstall -y -q cmake >/dev/null 2>&1 || true

# --- Horovod: cached wheel or build from sdist ------------------------------------------
PYTAG=$("$VENV/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
KEY="horovod-$HOROVOD_VERSION-torch$TORCH_VERSION-tf$TF_VERSION-$PYTAG-mpi$WITH_MPI"
WHEEL_DIR="$CACHE/$KEY"
if ! ls "$WHEEL_DIR"/horovod-*.whl >/dev/null 2>&1; then
  log "building Horovod $HOROVOD_VERSION (torch + tensorflow, gloo, mpi=$WITH_MPI); takes 10-20 minutes"
  BUILD=$(mktemp -d)
  trap 'rm -rf "$BUILD"' EXIT
  quiet "$VENV/bin/python" -m pip download -q --no-deps --no-binary :all: "horovod==$HOROVOD_VERSION" -d "$BUILD"
  tar xzf "$BUILD"/horovod-$HOROVOD_VERSION.tar.gz -C "$BUILD"
  SRC="$BUILD/horovod-$HOROVOD_VERSION"
  sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' "$SRC/CMakeLists.txt" "$SRC/horovod/torch/CMakeLists.txt"
  sed -i '/xla_mpi_ops.cc/d' "$SRC/horovod/tensorflow/CMakeLists.txt"
  grep -q "CMAKE_CXX_STANDARD 17" "$SRC/horovod/torch/CMakeLists.txt"
  ! grep -q xla_mpi_ops "$SRC/horovod/tensorflow/CMakeLists.txt"
  MPI_FLAG=HOROVOD_WITHOUT_MPI
  [ "$WITH_MPI" = 1 ] && MPI_FLAG=HOROVOD_WITH_MPI
  mkdir -p "$WHEEL_DIR"
  (cd "$SRC" && env PATH="/usr/bin:$PATH" MAKEFLAGS="-j${HVD_BUILD_JOBS:-2}" \
      HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
      HOROVOD_WITH_GLOO=1 "$MPI_FLAG=1" \
      "$VENV/bin/python" -m pip wheel -v --no-deps --no-build-isolation . -w "$BUILD/out" > "$BUILD/build.log" 2>&1) ||
    { tail -60 "$BUILD/build.log" >&2; log "Horovod build failed (log above)"; exit 1; }
  cp "$BUILD"/out/horovod-*.whl "$WHEEL_DIR/"
fi
"${PIP[@]}" --force-reinstall --no-deps "$WHEEL_DIR"/horovod-*.whl
"${PIP[@]}" cloudpickle psutil pyyaml packaging
"${PIP[@]}" --no-deps -e "$ROOT"

CHECK=$(TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/horovodrun" --check-build 2>/dev/null)
echo "$CHECK" | grep -v "^$" >&2
for fw in PyTorch TensorFlow Gloo; do
  echo "$CHECK" | grep -q "\[X\] $fw" || { log "Horovod lacks $fw support"; exit 1; }
done
build_native
echo "$WANT" > "$STAMP"
log "ready: source $VENV/bin/activate"
