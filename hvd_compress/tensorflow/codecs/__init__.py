"""Every TensorFlow codec, one file per algorithm (the same set as ``hvd_compress.torch.codecs``)."""

from hvd_compress.tensorflow.codecs.base import Codec, Wrapper
from hvd_compress.tensorflow.codecs.casts import BF16, FP16, NoCompression
from hvd_compress.tensorflow.codecs.doublesqueeze import DoubleSqueeze
from hvd_compress.tensorflow.codecs.efsign import EFSign, ScaledSign
from hvd_compress.tensorflow.codecs.error_feedback import ErrorFeedback
from hvd_compress.tensorflow.codecs.gradiveq import GradiVeQ
from hvd_compress.tensorflow.codecs.onebit import OneBit, OneBitQuantizer
from hvd_compress.tensorflow.codecs.powersgd import PowerSGD
from hvd_compress.tensorflow.codecs.qsgd import QSGD
from hvd_compress.tensorflow.codecs.reference import ReferenceCodec
from hvd_compress.tensorflow.codecs.signsgd import SignSGD
from hvd_compress.tensorflow.codecs.terngrad import TernGrad
from hvd_compress.tensorflow.codecs.topk import TopK, TopKSparsifier

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
    "ReferenceCodec",
]
