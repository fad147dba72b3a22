#!/usr/bin/env bash
# The main job: a local multi-worker training (horovodrun over Gloo) once per codec, printing a
# table of bits per value, bytes per step, accuracy and time per step against fp32 and Horovod's
# fp16. NP=3 ci/demo.sh for three workers; extra arguments go to `python -m hvd_compress.demo`
# (e.g. --codecs fp32,qsgd:bits=4,onebit --frontend ours --epochs 20).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash ci/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2 OMP_NUM_THREADS=1
mkdir -p out
exec .venv/bin/python -m hvd_compress.demo --np "${NP:-2}" --json out/demo.json "$@"
