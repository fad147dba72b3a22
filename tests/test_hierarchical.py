"""The ``hierarchical=`` option: spec strings, fingerprints, clear refusals where it does not run.

The exchange itself runs across emulated hosts in tests/test_cluster_mp.py (2 hosts x 2 ranks).
"""

import pytest

import hvd_compress.torch as hc
from hvd_compress.bench.step_hosts import codec_is_hierarchical, flat_and_hierarchical


@pytest.mark.parametrize("text, mode", [("true", True), ("false", False), ("auto", "auto"), ("True", True)])
def test_spec_strings_set_the_mode(text, mode):
    assert hc.from_spec(f"qsgd:bits=4,hierarchical={text}").hierarchical == mode
    assert hc.from_spec(f"doublesqueeze:codec=onebit,hierarchical={text}").hierarchical == mode


def test_default_is_auto_and_leaves_fingerprints_unchanged():
    codec = hc.from_spec("onebit")
    assert codec.hierarchical == "auto" and "hierarchical" not in codec.fingerprint()
    # an explicit mode is part of the fingerprint, so ranks that disagree fail the config check
    assert "hierarchical=True" in hc.from_spec("onebit:hierarchical=true").fingerprint()
    assert (
        hc.QSGD(bits=4, hierarchical=True).fingerprint() == hc.from_spec("qsgd:bits=4,hierarchical=true").fingerprint()
    )


def test_bad_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="hierarchical must be 'auto', True or False"):
        hc.from_spec("onebit:hierarchical=sometimes")


def test_ddp_hook_takes_the_hierarchical_setting():
    """The hook runs the hierarchical exchange over torch.distributed subgroups (across hosts:
    tests/test_cluster_mp.py); building the state needs no process group."""
    from hvd_compress.torch.frontends.ddp import DDPHookState

    assert DDPHookState("onebit:hierarchical=true").codec.hierarchical is True
    assert DDPHookState("onebit").codec.hierarchical == "auto"


def test_tensorflow_takes_the_hierarchical_setting():
    """TF runs the hierarchical exchange over Horovod process sets (across hosts:
    tests/test_cluster_mp.py); the fingerprint is torch's."""
    pytest.importorskip("tensorflow")
    import hvd_compress.tensorflow as hct

    assert hct.from_spec("qsgd:bits=4,hierarchical=true").hierarchical is True
    assert (
        hct.from_spec("qsgd:bits=4,hierarchical=true").fingerprint()
        == hc.from_spec("qsgd:bits=4,hierarchical=true").fingerprint()
    )
    assert hct.from_spec("qsgd:bits=4").fingerprint() == hc.from_spec("qsgd:bits=4").fingerprint()


def test_bench_rows_run_each_codec_flat_and_hierarchical():
    assert flat_and_hierarchical("onebit") == ["onebit:hierarchical=false", "onebit:hierarchical=true"]
    assert flat_and_hierarchical("qsgd:bits=4") == ["qsgd:bits=4,hierarchical=false", "qsgd:bits=4,hierarchical=true"]
    assert flat_and_hierarchical("none") == ["none"]
    assert flat_and_hierarchical("topk:hierarchical=true") == ["topk:hierarchical=true"]
    assert codec_is_hierarchical("qsgd:bits=4,hierarchical=true") and not codec_is_hierarchical("onebit")
