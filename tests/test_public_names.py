"""The public names, pinned: what ``__all__`` of the top package, the numpy references and each
framework (and its ``codecs`` package) export, and where each codec class is defined.

The codec packages find their classes by importing their modules (issue #19, one definition per
codec); this is the check that discovery exports exactly what the hand-written lists did. The order
of ``__all__`` is not part of the API (``from m import *`` and ``dir()`` ignore it): sets are compared.
A new public name is added here on purpose.
"""

from __future__ import annotations

import importlib

import pytest

ALL = {
    "hvd_compress": [
        "CodecSpec",
        "reference",
        "register_codec",
        "registry",
    ],
    "hvd_compress.codecs": [
        "BF16",
        "DoubleSqueeze",
        "FP16",
        "GradiVeQ",
        "Lattice",
        "NoCompression",
        "OneBit",
        "PowerSGD",
        "QSGD",
        "ScaledSign",
        "SignSGD",
        "TernGrad",
        "TopK",
    ],
    "hvd_compress.torch": [
        "BF16",
        "BroadcastState",
        "Codec",
        "DDPHookState",
        "DistributedOptimizer",
        "DoubleSqueeze",
        "EFSign",
        "ErrorFeedback",
        "FP16",
        "GradiVeQ",
        "Lattice",
        "NoCompression",
        "OneBit",
        "OneBitQuantizer",
        "PowerSGD",
        "QSGD",
        "ScaledSign",
        "SignSGD",
        "SwarmSGD",
        "TernGrad",
        "TopK",
        "TopKSparsifier",
        "TorchDistCollectives",
        "Wrapper",
        "broadcast_parameters",
        "collective_stats",
        "compression_error",
        "ddp_comm_hook",
        "from_spec",
        "random_matching",
        "reset_collective_stats",
        "reset_wire_stats",
        "track_compression_error",
        "wire_stats",
    ],
    "hvd_compress.torch.codecs": [
        "BF16",
        "Codec",
        "DoubleSqueeze",
        "EFSign",
        "ErrorFeedback",
        "FP16",
        "GradiVeQ",
        "Lattice",
        "NoCompression",
        "OneBit",
        "OneBitQuantizer",
        "PowerSGD",
        "QSGD",
        "ReferenceCodec",
        "ScaledSign",
        "SignSGD",
        "TernGrad",
        "TopK",
        "TopKSparsifier",
        "Wrapper",
    ],
    "hvd_compress.tensorflow": [
        "BF16",
        "Codec",
        "DoubleSqueeze",
        "EFSign",
        "ErrorFeedback",
        "Exchange",
        "FP16",
        "GradiVeQ",
        "GradientReducer",
        "NoCompression",
        "OneBit",
        "OneBitQuantizer",
        "PowerSGD",
        "QSGD",
        "ScaledSign",
        "SignSGD",
        "TernGrad",
        "TopK",
        "TopKSparsifier",
        "Wrapper",
        "allreduce_gradients",
        "broadcast_variables",
        "compression_error",
        "from_spec",
        "reset_wire_stats",
        "wire_stats",
    ],
    "hvd_compress.tensorflow.codecs": [
        "BF16",
        "Codec",
        "DoubleSqueeze",
        "EFSign",
        "ErrorFeedback",
        "FP16",
        "GradiVeQ",
        "NoCompression",
        "OneBit",
        "OneBitQuantizer",
        "PowerSGD",
        "QSGD",
        "ReferenceCodec",
        "ScaledSign",
        "SignSGD",
        "TernGrad",
        "TopK",
        "TopKSparsifier",
        "Wrapper",
    ],
}

# Where each class of the codec packages is defined.
DEFINED_IN = {
    "hvd_compress.codecs": {
        "BF16": "hvd_compress.codecs.casts",
        "DoubleSqueeze": "hvd_compress.codecs.doublesqueeze",
        "FP16": "hvd_compress.codecs.casts",
        "GradiVeQ": "hvd_compress.codecs.gradiveq",
        "Lattice": "hvd_compress.codecs.lattice",
        "NoCompression": "hvd_compress.codecs.casts",
        "OneBit": "hvd_compress.codecs.onebit",
        "PowerSGD": "hvd_compress.codecs.powersgd",
        "QSGD": "hvd_compress.codecs.qsgd",
        "ScaledSign": "hvd_compress.codecs.sign",
        "SignSGD": "hvd_compress.codecs.sign",
        "TernGrad": "hvd_compress.codecs.terngrad",
        "TopK": "hvd_compress.codecs.topk",
    },
    "hvd_compress.torch.codecs": {
        "BF16": "hvd_compress.torch.codecs.casts",
        "Codec": "hvd_compress.torch.codecs.base",
        "DoubleSqueeze": "hvd_compress.torch.codecs.doublesqueeze",
        "EFSign": "hvd_compress.torch.codecs.efsign",
        "ErrorFeedback": "hvd_compress.torch.codecs.error_feedback",
        "FP16": "hvd_compress.torch.codecs.casts",
        "GradiVeQ": "hvd_compress.torch.codecs.gradiveq",
        "Lattice": "hvd_compress.torch.codecs.lattice",
        "NoCompression": "hvd_compress.torch.codecs.casts",
        "OneBit": "hvd_compress.torch.codecs.onebit",
        "OneBitQuantizer": "hvd_compress.torch.codecs.onebit",
        "PowerSGD": "hvd_compress.torch.codecs.powersgd",
        "QSGD": "hvd_compress.torch.codecs.qsgd",
        "ReferenceCodec": "hvd_compress.torch.codecs.reference",
        "ScaledSign": "hvd_compress.torch.codecs.efsign",
        "SignSGD": "hvd_compress.torch.codecs.signsgd",
        "TernGrad": "hvd_compress.torch.codecs.terngrad",
        "TopK": "hvd_compress.torch.codecs.topk",
        "TopKSparsifier": "hvd_compress.torch.codecs.topk",
        "Wrapper": "hvd_compress.torch.codecs.base",
    },
    "hvd_compress.tensorflow.codecs": {
        "BF16": "hvd_compress.tensorflow.codecs.casts",
        "Codec": "hvd_compress.tensorflow.codecs.base",
        "DoubleSqueeze": "hvd_compress.tensorflow.codecs.doublesqueeze",
        "EFSign": "hvd_compress.tensorflow.codecs.efsign",
        "ErrorFeedback": "hvd_compress.tensorflow.codecs.error_feedback",
        "FP16": "hvd_compress.tensorflow.codecs.casts",
        "GradiVeQ": "hvd_compress.tensorflow.codecs.gradiveq",
        "NoCompression": "hvd_compress.tensorflow.codecs.casts",
        "OneBit": "hvd_compress.tensorflow.codecs.onebit",
        "OneBitQuantizer": "hvd_compress.tensorflow.codecs.onebit",
        "PowerSGD": "hvd_compress.tensorflow.codecs.powersgd",
        "QSGD": "hvd_compress.tensorflow.codecs.qsgd",
        "ReferenceCodec": "hvd_compress.tensorflow.codecs.reference",
        "ScaledSign": "hvd_compress.tensorflow.codecs.efsign",
        "SignSGD": "hvd_compress.tensorflow.codecs.signsgd",
        "TernGrad": "hvd_compress.tensorflow.codecs.terngrad",
        "TopK": "hvd_compress.tensorflow.codecs.topk",
        "TopKSparsifier": "hvd_compress.tensorflow.codecs.topk",
        "Wrapper": "hvd_compress.tensorflow.codecs.base",
    },
}


def _module(name):
    if name.startswith("hvd_compress.torch"):
        pytest.importorskip("torch")
    if name.startswith("hvd_compress.tensorflow"):
        pytest.importorskip("tensorflow")
    return importlib.import_module(name)


@pytest.mark.parametrize("name", sorted(ALL))
def test_all_is_pinned(name):
    module = _module(name)
    assert len(module.__all__) == len(set(module.__all__)), name
    assert sorted(module.__all__) == ALL[name]


@pytest.mark.parametrize("name", sorted(DEFINED_IN))
def test_codec_classes_are_defined_where_pinned(name):
    module = _module(name)
    assert {n: getattr(module, n).__module__ for n in module.__all__} == DEFINED_IN[name]


@pytest.mark.parametrize("framework", ["hvd_compress.torch", "hvd_compress.tensorflow"])
def test_framework_exports_its_codecs_package_classes(framework):
    module, codecs = _module(framework), _module(framework + ".codecs")
    for n in set(module.__all__) & set(codecs.__all__):
        assert getattr(module, n) is getattr(codecs, n), n
