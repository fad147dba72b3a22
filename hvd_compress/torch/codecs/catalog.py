"""Spec name -> torch codec class, and building a codec from a spec string with it.

:func:`hvd_compress.torch.from_spec` is :func:`from_spec_with` given :class:`GradiVeQ`. The table
lives here, in the codec layer, because GradiVeQ builds its ``fallback`` and ``sampler`` codecs
from spec strings too: it calls :func:`from_spec_with` passing itself, so no codec module imports
``hvd_compress.torch.spec`` (which imports every codec) and this module imports every codec but
GradiVeQ.
"""

from __future__ import annotations

from typing import Dict

from hvd_compress.spec import build
from hvd_compress.torch.codecs.base import Codec
from hvd_compress.torch.codecs.casts import BF16, FP16, NoCompression
from hvd_compress.torch.codecs.doublesqueeze import DoubleSqueeze
from hvd_compress.torch.codecs.efsign import EFSign
from hvd_compress.torch.codecs.lattice import Lattice
from hvd_compress.torch.codecs.onebit import OneBit
from hvd_compress.torch.codecs.powersgd import PowerSGD
from hvd_compress.torch.codecs.qsgd import QSGD
from hvd_compress.torch.codecs.reference import ReferenceCodec
from hvd_compress.torch.codecs.signsgd import SignSGD
from hvd_compress.torch.codecs.terngrad import TernGrad
from hvd_compress.torch.codecs.topk import TopK


def codec_classes(gradiveq: type) -> Dict[str, type]:
    """Every spec name and its class (``gradiveq``: the GradiVeQ class)."""
    return {
        "none": NoCompression,
        "fp16": FP16,
        "bf16": BF16,
        "qsgd": QSGD,
        "terngrad": TernGrad,
        "onebit": OneBit,
        "efsign": EFSign,
        "signsgd": SignSGD,
        "topk": TopK,
        "doublesqueeze": DoubleSqueeze,
        "gradiveq": gradiveq,
        "powersgd": PowerSGD,
        "lattice": Lattice,
    }


def from_spec_with(spec: "str | Codec", gradiveq: type) -> Codec:
    """``hvd_compress.torch.from_spec(spec)`` (see there), with ``gradiveq`` the GradiVeQ class."""
    return build(spec, codec_classes(gradiveq), Codec, ReferenceCodec)
