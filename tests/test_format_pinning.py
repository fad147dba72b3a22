"""Spec: what the framework codecs say about their configuration is pinned, for every built-in
spec string and both frameworks (issue #19: one definition per codec).

The torch and TensorFlow codec classes take their knobs, validation, sizes and alignment from a
``CodecConfig`` (``hvd_compress/common.py``). Whatever builds that configuration (hand-written per
codec, or derived from the registered numpy ``CodecSpec``), these must not move:

* ``describe()`` and ``fingerprint()``: the ranks' agreement check, saved ``state_dict``\\ s and the
  benchmark labels compare them as strings;
* ``params()`` (knobs in order, with their types), ``alignment()``, ``payload_nbytes(n)``;
* the knobs' attributes and derived values (QSGD's ``levels``, TopK's ``k(n)``, TernGrad's
  ``clip=None``), knob type coercions (``bits=4.0`` is ``4``), pickling;
* the error raised for a bad knob: its type and message.

The values live in ``tests/data/format_pins.json``. Compare (prints what differs, exits 1 if
anything does, never writes)::

    PYTHONPATH=. python tests/test_format_pinning.py

Rewrite it (a new codec or spec string only, never to paper over a change)::

    PYTHONPATH=. python tests/test_format_pinning.py --update
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path
from typing import Any, Callable, Dict

import codec_cases
import numpy as np
import pytest

PINS = Path(__file__).parent / "data" / "format_pins.json"
SIZES = (0, 1, 7, 100, 1000, 4099)


def _specs(fw: str):
    missing = codec_cases.NOT_IN.get(fw, {})
    out = []
    for case in codec_cases.CASES:
        if case.spec.split(":")[0] not in missing and case.spec not in out:
            out.append(case.spec)
    return out


def _innermost(codec):
    while hasattr(codec, "inner"):
        codec = codec.inner
    return codec


def _facts(codec) -> Dict[str, Any]:
    facts: Dict[str, Any] = {
        "class": type(codec).__name__,
        "describe": codec.describe(),
        "fingerprint": codec.fingerprint(),
        "repr": repr(codec),
        "params": [[k, repr(v)] for k, v in codec.params().items()],
        "alignment": codec.alignment(),
        "payload_nbytes": [codec.payload_nbytes(n) for n in SIZES],
        "flags": [codec.summable, codec.stochastic, codec.sparse, codec.shared_scale],
        "pattern": [codec.pattern(w, n) for w in (2, 4) for n in (3, 4096)],
    }
    inner = _innermost(codec)
    if inner is not codec:
        facts["inner"] = [type(inner).__name__, inner.name, inner.describe()]
    for attr in ("bits", "bucket_size", "norm", "levels", "clip", "packing", "ratio", "scaled"):
        if hasattr(inner, attr):
            facts[f"attr.{attr}"] = repr(getattr(inner, attr))
    if hasattr(inner, "k"):
        facts["k"] = [inner.k(n) for n in SIZES]
    return facts


def _bad(build: Callable[[], Any]) -> str:
    try:
        codec = build()
    except Exception as exc:  # the type and message are what is pinned
        return f"{type(exc).__name__}: {exc}"
    return f"ok: {codec.fingerprint()}"


# Knob values, good and bad, given as keywords (and positionally where the constructor takes them).
KNOB_CASES = {
    "QSGD": [
        ((), {"bits": 3}),
        ((), {"bits": 4.0}),
        ((), {"bits": "4"}),
        ((8, 64, "l2"), {}),
        ((), {"bucket_size": 0}),
        ((), {"bucket_size": -5}),
        ((), {"bucket_size": 100.0}),
        ((), {"bucket_size": np.int64(256)}),
        ((), {"norm": "l3"}),
        ((), {"exchange": "ring"}),
        ((), {"nonfinite": "ignore"}),
        ((), {"min_numel": -1}),
        ((), {"bitz": 4}),
    ],
    "TernGrad": [
        ((), {"clip": 0}),
        ((), {"clip": -1.5}),
        ((), {"clip": 3}),
        ((), {"clip": None}),
        ((None, "2bit"), {}),
        ((), {"clip": np.float64(2.0)}),
        ((), {"packing": "3bit"}),
    ],
    "OneBit": [
        ((), {"bucket_size": 12}),
        ((), {"bucket_size": 0}),
        ((64,), {}),
        ((), {"bucket_size": 64.0}),
        ((), {"bucket_size": np.int32(128)}),
    ],
    "OneBitQuantizer": [((), {"bucket_size": 4}), ((256,), {"seed": 3})],
    "TopK": [
        ((), {"ratio": 0}),
        ((), {"ratio": 1.5}),
        ((), {"ratio": 1}),
        ((0.25,), {}),
        ((), {"ratio": np.float64(0.5)}),
    ],
    "TopKSparsifier": [((), {"ratio": -0.1}), ((0.5,), {"min_numel": 10})],
    "SignSGD": [((), {"scaled": False}), ((False,), {}), ((), {"scaled": np.bool_(False)})],
    "ScaledSign": [((), {}), ((), {"compress_1d": True})],
    "EFSign": [((), {"seed": 7})],
    "NoCompression": [((), {"exchange": "allgather"})],
    "FP16": [((), {"hierarchical": "false"})],
    "BF16": [((), {"min_numel": 0})],
}


def _module(fw: str):
    if fw == "torch":
        import hvd_compress.torch as mod
    else:
        import hvd_compress.tensorflow as mod
    return mod


def collect(fw: str) -> Dict[str, Any]:
    mod = _module(fw)
    out: Dict[str, Any] = {"specs": {}, "knobs": {}, "pickle": {}}
    for spec in _specs(fw):
        out["specs"][spec] = _facts(mod.from_spec(spec))
    for cls_name, cases in KNOB_CASES.items():
        cls = getattr(mod, cls_name)
        out["knobs"][cls_name] = [
            [repr(args), repr(sorted(kwargs.items())), _bad(lambda: cls(*args, **kwargs))] for args, kwargs in cases
        ]
    if fw == "torch":  # TF codecs are trackables: copied with their variables, not pickled
        for spec in _specs(fw):
            codec = mod.from_spec(spec)
            back = pickle.loads(pickle.dumps(codec))
            out["pickle"][spec] = [back.fingerprint(), _facts(back) == _facts(codec)]
    return out


def _load() -> Dict[str, Any]:
    return json.loads(PINS.read_text())


@pytest.mark.parametrize("fw", ["torch", "tf"])
def test_framework_formats_are_pinned(fw):
    if fw == "torch":
        pytest.importorskip("torch")
    else:
        pytest.importorskip("tensorflow")
    pinned = _load()[fw]
    now = collect(fw)
    assert set(now["specs"]) == set(pinned["specs"]), "a spec string was added or removed: --update"
    for spec, facts in pinned["specs"].items():
        assert now["specs"][spec] == facts, spec
    assert now["knobs"] == pinned["knobs"]
    assert now["pickle"] == pinned["pickle"]


def test_both_frameworks_describe_every_spec_alike():
    pins = _load()
    for spec, facts in pins["tf"]["specs"].items():
        torch_facts = dict(pins["torch"]["specs"][spec])
        for key in ("describe", "fingerprint", "params", "alignment", "payload_nbytes", "flags", "pattern"):
            assert facts[key] == torch_facts[key], (spec, key)


def main(argv) -> int:
    now = {fw: collect(fw) for fw in ("torch", "tf")}
    if "--update" in argv:
        PINS.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
        print(f"wrote {PINS}")
        return 0
    pinned = _load()
    bad = 0
    for fw in now:
        for section in now[fw]:
            for key in sorted(set(now[fw][section]) | set(pinned[fw].get(section, {}))):
                a, b = pinned[fw].get(section, {}).get(key), now[fw][section].get(key)
                if a != b:
                    bad += 1
                    print(f"{fw} {section} {key}:\n  pinned {a}\n  now    {b}")
    print("all pinned" if not bad else f"{bad} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
