"""Benchmarks: where compression pays.

Run ``python -m hvd_compress.bench <command> --help``. Commands (one module each, each exposing
``main(argv)``):

* ``codecs``: encode+decode throughput and bits per value of every codec beside a plain reference
  implementation (:mod:`hvd_compress.bench.reference`) and the machine's copy bandwidth.
* ``step``: the training step of a communication-bound model under ``horovodrun`` over a loopback
  link shaped with ``tc`` inside a network namespace (needs root).
* ``accuracy``: final accuracy and bits to a target loss per codec on the demo task.
* ``report``: regenerate ``BENCHMARKS.md`` and its plots from the JSON the others wrote.

Any other module ``hvd_compress.bench.<name>`` with a ``main(argv)`` function is a command too
(``python -m hvd_compress.bench <name>``), so a new benchmark needs no change here.
"""

COMMANDS = {
    "codecs": "encode+decode throughput and bits per value per codec, beside a plain reference",
    "step": "training step time and bytes per step over a tc-shaped link (needs root)",
    "accuracy": "final accuracy and bits to a target loss per codec on the demo task",
    "report": "regenerate BENCHMARKS.md and plots from benchmark JSON",
    "gradiveq-spectrum": "how compressible a CIFAR-style ResNet's conv gradients are for GradiVeQ (PCA spectra)",
    "aggregation": "compress + allreduce + decompress time of fp32, QSGD, GradiVeQ and PowerSGD",
}

from hvd_compress._lazy import lazy_attributes as _lazy_attributes  # noqa: E402

# bench.step, bench.codecs, ... on attribute access (each imports torch/Horovod only when used).
__getattr__, __dir__ = _lazy_attributes(__name__, __path__)
