"""AsyFPG: the full-precision baseline of Yu, Wu, Huang (NeurIPS 2019).

Asynchronous SVRG on a parameter server with fp32 models down and fp32 gradients up: 64 bits per
coordinate per update (plus headers). Everything the low-precision algorithms save is measured
against it.

Example::

    from hvd_compress.ps import AsyFPG, run, synthetic_logistic
    result = run(synthetic_logistic(), AsyFPG(step_size=1.0), num_workers=4, target_loss=0.35)
    print(result.bits_to_target)
"""

from hvd_compress.ps.svrg import AsyncSVRG


class AsyFPG(AsyncSVRG):
    """Asynchronous full-precision SVRG (fp32 both ways). See :class:`AsyncSVRG` for ``step_size``."""

    name = "AsyFPG"
