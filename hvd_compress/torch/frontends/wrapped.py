"""Wrapping a torch optimizer by delegation (as accelerate's AcceleratedOptimizer does)."""

from __future__ import annotations

import torch


class WrappedOptimizer(torch.optim.Optimizer):
    """Base of optimizers that add communication around ``self.optimizer``: state, parameter
    groups and defaults are the wrapped optimizer's own objects, so LR schedulers and checkpoints
    see one set of them. ``torch.optim.Optimizer.__init__`` is deliberately not called."""

    optimizer: torch.optim.Optimizer

    @property
    def state(self):
        return self.optimizer.state

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value):
        self.optimizer.param_groups = value

    @property
    def defaults(self):
        return self.optimizer.defaults

    def zero_grad(self, set_to_none: bool = True):
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group):
        raise NotImplementedError("add parameter groups to the wrapped optimizer before wrapping it")
