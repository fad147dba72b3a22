"""Every codec, one file per algorithm."""

from hvd_compress.torch.codecs.base import Codec, Wrapper
from hvd_compress.torch.codecs.casts import BF16, FP16, NoCompression
from hvd_compress.torch.codecs.doublesqueeze import DoubleSqueeze
from hvd_compress.torch.codecs.efsign import EFSign, ScaledSign
from hvd_compress.torch.codecs.error_feedback import ErrorFeedback
from hvd_compress.torch.codecs.gradiveq import GradiVeQ
from hvd_compress.torch.codecs.lattice import Lattice
from hvd_compress.torch.codecs.onebit import OneBit, OneBitQuantizer
from hvd_compress.torch.codecs.powersgd import PowerSGD
from hvd_compress.torch.codecs.qsgd import QSGD
from hvd_compress.torch.codecs.reference import ReferenceCodec
from hvd_compress.torch.codecs.signsgd import SignSGD
from hvd_compress.torch.codecs.terngrad import TernGrad
from hvd_compress.torch.codecs.topk import TopK, TopKSparsifier

__all__ = [
    "Codec",
    "Wrapper",
    "NoCompression",
    "FP16",
    "BF16",
    "QSGD",
    "TernGrad",
    "OneBit",
    "OneBitQuantizer",
    "EFSign",
    "ScaledSign",
    "SignSGD",
    "TopK",
    "TopKSparsifier",
    "ErrorFeedback",
    "DoubleSqueeze",
    "GradiVeQ",
    "PowerSGD",
    "Lattice",
    "ReferenceCodec",
]
