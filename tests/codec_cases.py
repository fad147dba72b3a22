"""Per-codec test facts, in one table: which spec strings the conformance suites run, the bits per
value each promises on a large tensor, and how many accuracy points it may lose against fp32.

A new built-in codec adds one row here (``tests/test_codecs.py`` fails while a registered codec has
none). The accuracy bar is the project's (issue #2): within 1 point of fp32, the biased or
high-variance codecs (TernGrad, SignSGD's majority vote) within 3 -- the same figure
``python -m hvd_compress.bench accuracy`` reports against (:data:`hvd_compress.bench.accuracy.BAR_POINTS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

from hvd_compress.bench.accuracy import BAR_POINTS


@dataclass(frozen=True)
class Case:
    spec: str
    nominal_bits: Optional[float] = None  # per value on a large tensor, scales included; None: not fixed


# Every codec, and the variants whose wire format differs.
CASES: List[Case] = [
    Case("none", 32),
    Case("fp16", 16),
    Case("bf16", 16),
    Case("powersgd:rank=2"),
    Case("gradiveq"),
    Case("lattice:bits=8"),
    Case("qsgd:bits=2,bucket_size=128", 2.25),
    Case("qsgd:bits=4", 4.0625),
    Case("qsgd:bits=8", 8.0625),
    Case("qsgd:bits=4,norm=l2"),
    Case("terngrad", 1.6),
    Case("terngrad:packing=2bit", 2.0),
    Case("terngrad:clip=none"),
    Case("onebit", 1.0625),
    Case("efsign", 1.0),
    Case("signsgd", 1.0),
    Case("signsgd:scaled=false"),
    Case("topk:ratio=0.01", 0.64),
    Case("doublesqueeze:codec=onebit"),
    Case("doublesqueeze:codec=qsgd,bits=4"),
    Case("doublesqueeze:codec=topk,ratio=0.05"),
]

SPECS: List[str] = [c.spec for c in CASES]
NOMINAL: Dict[str, float] = {c.spec: c.nominal_bits for c in CASES if c.nominal_bits is not None}


def accuracy_points(spec: str) -> float:
    """Accuracy points ``spec`` may lose against fp32 (by codec name; baselines get the default)."""
    return BAR_POINTS.get(spec.split(":")[0], 1.0)


# Built-in codecs a framework does not implement, with the reason; every other registered codec
# must build in both (tests/test_codecs.py::test_every_registered_codec_builds_where_declared).
NOT_IN = {
    "tf": {
        "lattice": "SwarmSGD's gossip codec: decodes against the receiver's own model, "
        "which only the torch swarm trainer has"
    }
}
