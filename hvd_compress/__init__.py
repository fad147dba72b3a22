"""hvd_compress: bit-packed gradient compression for Horovod and torch.distributed."""
__version__ = "0.1.0"
