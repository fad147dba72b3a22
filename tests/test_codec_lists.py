"""The demo's and the benchmarks' codec lists come from the registry (issue #19): each runs every
built-in codec, with chosen settings or its defaults, or says why it leaves one out."""

from __future__ import annotations

import pytest

from hvd_compress import demo
from hvd_compress.bench import accuracy, step
from hvd_compress.core.registry import builtin_names, every_builtin_codec


def names(specs):
    return {s.split(":")[0] for s in specs}


@pytest.mark.parametrize(
    "codecs, skipped",
    [
        (demo.DEFAULT_CODECS[2:], demo.SKIPPED),  # after fp32 and hvd-fp16
        (accuracy.DEFAULT_CODECS[2:], demo.SKIPPED),
        (step.default_codecs()[len(step.BASELINES) :], step.SKIPPED),
    ],
    ids=["demo", "bench-accuracy", "bench-step"],
)
def test_every_builtin_codec_runs_or_is_skipped_with_a_reason(codecs, skipped):
    assert names(codecs) | set(skipped) >= builtin_names()
    assert not names(codecs) & set(skipped)
    assert all(isinstance(why, str) and why for why in skipped.values())


def test_a_codec_not_listed_joins_with_its_defaults():
    listed = sorted(builtin_names() - {"topk"})
    assert every_builtin_codec(["qsgd:bits=8"], {n: "test" for n in listed if n != "qsgd"}) == ["qsgd:bits=8", "topk"]


def test_unknown_names_are_an_error():
    with pytest.raises(ValueError, match="not built-in codecs: \\['nosuch'\\]"):
        every_builtin_codec(["nosuch:bits=1"], {})
