"""Per-codec test facts, in one table: which spec strings each per-codec suite runs (test_codecs,
the reference conformance, the TF/torch wire and the payload pinning suites all take their lists from
here), the bits per value each promises on a large tensor, and how many accuracy points it may lose
against fp32.

A new built-in codec adds one row here (``tests/test_codecs.py`` fails while a registered codec has
none). The accuracy bar is the project's (issue #2): within 1 point of fp32, the biased or
high-variance codecs (TernGrad, SignSGD's majority vote) within 3 -- the same figure
``python -m hvd_compress.bench accuracy`` reports against (:data:`hvd_compress.bench.accuracy.BAR_POINTS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional, Set

from hvd_compress.bench.accuracy import BAR_POINTS


# The suites a row runs in (``Case.suites``):
#   "codecs"       tests/test_codecs.py's per-codec table (SPECS, NOMINAL; tests/test_fusion.py too);
#   "conformance"  tests/test_reference_conformance.py: byte for byte against the numpy reference
#                  (the payload formats only: not the multi-round codecs, nor lattice);
#   "wire"         tests/test_tf_torch_wire.py: TensorFlow and torch exchange payloads;
#   "pinned"       tests/test_payload_pinning.py: digests in tests/data/payload_digests.json.
ALL = frozenset({"codecs", "conformance", "wire", "pinned"})
CODECS = frozenset({"codecs"})
EXCHANGE = frozenset({"codecs", "wire", "pinned"})  # wrappers: wire and pinning, no single reference


@dataclass(frozen=True)
class Case:
    spec: str
    nominal_bits: Optional[float] = None  # per value on a large tensor, scales included; None: not fixed
    suites: FrozenSet[str] = ALL
    # The payload holds a sum over the values (a norm, a mean magnitude), so its bytes depend on
    # the float summation order: the conformance and wire suites compare it on exact inputs only.
    sum_based: bool = False


# Every codec, and the variants whose wire format differs. A new built-in payload codec adds one row
# (default: every suite); then ``python tests/test_payload_pinning.py --update`` pins its digests.
CASES: List[Case] = [
    Case("none", 32),
    Case("fp16", 16),
    Case("bf16", 16),
    Case("powersgd:rank=2", suites=CODECS),
    Case("gradiveq", suites=CODECS),
    Case("lattice:bits=8", suites=CODECS),
    Case("qsgd:bits=2,bucket_size=128", 2.25),
    Case("qsgd:bits=4", 4.0625),
    Case("qsgd:bits=8", 8.0625),
    Case("qsgd:bits=4,norm=l2", sum_based=True),
    Case("qsgd:bits=4,bucket_size=100", suites=ALL - CODECS),
    Case("terngrad", 1.6),
    Case("terngrad:packing=2bit", 2.0),
    Case("terngrad:clip=none"),
    Case("onebit", 1.0625, sum_based=True),
    Case("onebit:bucket_size=64", suites=ALL - CODECS, sum_based=True),
    Case("efsign", 1.0, sum_based=True),
    Case("signsgd", 1.0, sum_based=True),
    Case("signsgd:scaled=false"),
    Case("topk:ratio=0.01", 0.64),
    Case("topk:ratio=0.3", suites=frozenset({"conformance", "wire"})),
    Case("doublesqueeze:codec=onebit", suites=EXCHANGE, sum_based=True),
    Case("doublesqueeze:codec=qsgd,bits=4", suites=EXCHANGE),
    Case("doublesqueeze:codec=topk,ratio=0.05", suites=CODECS),
    Case("doublesqueeze:codec=efsign", suites=EXCHANGE - CODECS, sum_based=True),
]


def specs(suite: str) -> List[str]:
    """The spec strings ``suite`` runs, in table order."""
    return [c.spec for c in CASES if suite in c.suites]


def sum_based(suite: str) -> Set[str]:
    """The specs of ``suite`` whose payload depends on the float summation order."""
    return {c.spec for c in CASES if suite in c.suites and c.sum_based}


SPECS: List[str] = specs("codecs")
NOMINAL: Dict[str, float] = {
    c.spec: c.nominal_bits for c in CASES if "codecs" in c.suites and c.nominal_bits is not None
}


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
