"""PyTorch Lightning: hvd_compress's DDP communication hook inside ``Trainer(strategy=...)``.

Lightning's own ``DDPStrategy(ddp_comm_state=state, ddp_comm_hook=hook)`` registers the hook only
when the root device is CUDA (Lightning 2.x: "DDP communication hooks only work with NCCL"), and on
CPU / Gloo it silently trains uncompressed. :class:`DDPStrategy` here is Lightning's, registering
the hook on every device type, so one line serves CPU clusters and GPUs alike::

    import lightning.pytorch as pl
    import hvd_compress.torch as hc
    from hvd_compress.torch.frontends.lightning import DDPStrategy

    module = MyLightningModule()
    state, hook = hc.ddp_comm_hook("qsgd:bits=4", named_parameters=module.named_parameters())
    trainer = pl.Trainer(accelerator="cpu", devices=2,
                         strategy=DDPStrategy(process_group_backend="gloo",
                                              ddp_comm_state=state, ddp_comm_hook=hook))
    trainer.fit(module, loader)
    print(hc.wire_stats())          # the codec's row shows the bytes it put on the wire

On GPUs Lightning's stock ``lightning.pytorch.strategies.DDPStrategy`` with the same two
arguments works too. Build the hook from the LightningModule's (or its inner model's)
``named_parameters()``: the names key the codec state, and Lightning's DDP wrapper sees the
same parameter objects. Guide: ``docs/lightning_accelerate.md``.
"""

from __future__ import annotations

from lightning.pytorch.strategies import DDPStrategy as _LightningDDPStrategy


class DDPStrategy(_LightningDDPStrategy):
    """Lightning's ``DDPStrategy``; ``ddp_comm_hook`` is registered on CPU too (see the module)."""

    def configure_ddp(self) -> None:
        super().configure_ddp()  # wraps the model; registers the hook itself only on CUDA
        if self.root_device.type != "cuda" and self._ddp_comm_hook is not None:
            self.model.register_comm_hook(self._ddp_comm_state, self._ddp_comm_hook)
