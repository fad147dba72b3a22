#!/usr/bin/env bash
# The test suite: sets up the environment (idempotent), then runs every test, multi-process
# Horovod/torch.distributed jobs included. Extra arguments go to pytest (e.g. -k qsgd; -m "not mp"
# for the in-process suite only, see tests/conftest.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash ci/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2 OMP_NUM_THREADS=1 PYTHONDONTWRITEBYTECODE=1
# lint first (ruff.toml): a lint error fails CI in seconds, before the long suite
.venv/bin/ruff check hvd_compress tests examples
.venv/bin/ruff format --check hvd_compress tests examples  # the tree is ruff-formatted ([format] in ruff.toml)
# type check the typed core (files and options: [tool.mypy] in pyproject.toml); must print "Success"
.venv/bin/mypy
# --timeout: a hung multi-process job fails its test instead of stalling CI
exec .venv/bin/python -m pytest tests -q -p no:cacheprovider --timeout=1500 -ra "$@"
