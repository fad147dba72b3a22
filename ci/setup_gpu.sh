# GPU machines, for ci/setup.sh (sourced by it; defines functions, runs nothing by itself).
#
# Where `nvidia-smi -L` lists a GPU and HVD_COMPRESS_CPU_ONLY is unset (or 0), ci/setup.sh:
#   * installs the CUDA build of the same torch version (`torch===V`: exact, so a `+cpu` wheel from a
#     local wheel folder never satisfies it; PyPI's Linux wheel is the CUDA build). Its wheel depends
#     on NCCL (nvidia-nccl-cu13 for torch 2.13) and pins its own Triton, so the Triton pin of
#     ci/requirements.txt is left to torch there;
#   * installs nvcc if there is none (Horovod compiles a few CUDA kernels): the CUDA 13 pip toolkit
#     of the version torch requires, `cuda-toolkit[nvcc,cccl]==V`, laid out in site-packages/nvidia/cu13;
#   * finds NCCL and nvcc (`python -m hvd_compress.horovod_build --gpu --print-env`, see
#     hvd_compress/horovod_build.py) and exports HOROVOD_NCCL_INCLUDE / HOROVOD_NCCL_LIB /
#     HOROVOD_NCCL_LINK=SHARED and HOROVOD_CUDA_HOME / CUDA_HOME; yours win if already set;
#   * builds Horovod with --gpu (HOROVOD_GPU_OPERATIONS=NCCL; cache key ending in -nccl) and fails
#     unless `horovodrun --check-build` shows [X] NCCL.
# The stamp gets " gpu=nccl", so a CPU stamp never passes for a GPU environment. CPU machines run
# none of this: their packages, stamp and output are those of before.

# 0/1: set up for the GPU? (HVD_COMPRESS_CPU_ONLY=1 forces the CPU setup on a GPU machine)
gpu_wanted() {
  case "${HVD_COMPRESS_CPU_ONLY:-0}" in "" | 0 | no | false) ;; *) return 1 ;; esac
  command -v nvidia-smi >/dev/null 2>&1 || return 1
  nvidia-smi -L 2>/dev/null | grep -q '^GPU [0-9]'
}

# torch (CUDA build), TF (CPU: Horovod's TF ops need no GPU TF) and the requirements, Triton excepted
gpu_install_packages() {
  local reqs
  reqs="$(mktemp)"
  grep -v -i '^triton\b' "$ROOT/ci/requirements.txt" > "$reqs"
  log "GPU: $(nvidia-smi -L 2>/dev/null | head -n 1); installing the CUDA build of torch $TORCH_VERSION, tensorflow-cpu $TF_VERSION and requirements (Triton as torch pins it)"
  # (called as `f || exit 1`, where set -e is off inside: every step checks its own status)
  "${PIP[@]}" "torch===$TORCH_VERSION" "tensorflow-cpu==$TF_VERSION" "tf-keras==$TF_VERSION" -r "$reqs" || return 1
  rm -f "$reqs"
  "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.version.cuda and torch.cuda.is_available() else 1)" || {
    log "torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)' 2>&1) does not see the GPU;"
    log "check the driver (nvidia-smi) against torch's CUDA, or run with HVD_COMPRESS_CPU_ONLY=1 for a CPU setup"
    return 1
  }
}

# nvcc: the system's if any, else pip's CUDA toolkit matching torch's (CUDA 13: one tree in nvidia/cu13)
gpu_install_nvcc() {
  # HOROVOD_CUDA_HOME, $CUDA_HOME, $CUDA_PATH, /usr/local/cuda, nvcc on PATH, pip's nvidia/cu1x:
  # the same search as the build's (hvd_compress.horovod_build.find_cuda_home)
  if "$VENV/bin/python" -c "import os, sys
from hvd_compress.horovod_build import find_cuda_home, site_dirs
sys.exit(0 if find_cuda_home(os.environ, site_dirs()) else 1)"; then
    return 0
  fi
  local spec
  spec="$("$VENV/bin/python" - <<'PY'
import re
from importlib import metadata
for req in metadata.requires("torch") or []:
    m = re.match(r"cuda-toolkit\[[^\]]*\]==([0-9][0-9.]*)", req.replace(" ", ""))
    if m:
        print(f"cuda-toolkit[nvcc,cccl]=={m.group(1)}")
        break
PY
)"
  if [ -z "$spec" ]; then
    log "no nvcc, and torch $TORCH_VERSION does not name a CUDA 13 pip toolkit to match: install the CUDA"
    log "toolkit of torch's CUDA (e.g. apt-get install cuda-toolkit-12-x) or set HOROVOD_CUDA_HOME"
    return 1
  fi
  log "no nvcc here: installing $spec (torch's CUDA toolkit version)"
  "${PIP[@]}" "$spec" || return 1
}

# export the NCCL / CUDA paths Horovod's build needs (found by hvd_compress.horovod_build)
gpu_toolchain_env() {
  local exports
  exports="$("$VENV/bin/python" -m hvd_compress.horovod_build --gpu --wheel-dir "$CACHE" --print-env)" || return 1
  [ -n "$exports" ] && echo "$exports" | sed 's/^/[setup]   /' >&2
  eval "$exports"
  if [ -z "${HOROVOD_NCCL_HOME:-}${HOROVOD_NCCL_INCLUDE:-}" ] || [ -z "${HOROVOD_CUDA_HOME:-}" ]; then
    log "GPU build needs NCCL (HOROVOD_NCCL_HOME or HOROVOD_NCCL_INCLUDE/LIB) and nvcc (HOROVOD_CUDA_HOME); see above"
    return 1
  fi
}

# all of the above, between the package install and the Horovod build of ci/setup.sh
gpu_prepare_build() {
  gpu_install_nvcc && gpu_toolchain_env
}

# Horovod must have NCCL on a GPU machine
gpu_require_nccl() {
  echo "$1" | grep -q "\[X\] NCCL" && return 0
  log "Horovod was built without NCCL on a GPU machine (horovodrun --check-build shows [ ] NCCL)."
  log "Look for 'NCCL' in the build log; set HOROVOD_NCCL_HOME (or HOROVOD_NCCL_INCLUDE/LIB) and"
  log "HOROVOD_CUDA_HOME, then: .venv/bin/hvd-compress build-horovod --gpu --rebuild;"
  log "or HVD_COMPRESS_CPU_ONLY=1 bash ci/setup.sh for a CPU-only environment."
  return 1
}
