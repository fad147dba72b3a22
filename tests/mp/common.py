"""Shared bits for the multi-process worker scripts under tests/mp."""

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(extra=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    for name, kw in (extra or {}).items():
        ap.add_argument(name, **kw)
    return ap.parse_args()


def write_result(out_dir, rank, result):
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(out_dir) / f".rank{rank}.json.tmp"
    tmp.write_text(json.dumps(result, indent=1, default=str))
    tmp.rename(Path(out_dir) / f"rank{rank}.json")


def close_process_group():
    """Tear down torch.distributed together: a barrier, then ``destroy_process_group``. Without
    the barrier, torch 2.13's Gloo group aborts a rank at exit about every other run ("terminate
    called without an active exception") when its peer tears down first; measured with plain DDP,
    no hvd_compress involved."""
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()
