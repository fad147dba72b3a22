"""Typed per-tensor codec state: what a codec keeps between steps, declared field by field.

A codec's state is one small dataclass (optax's explicit, named state). Each field is a *group*:
a dict from tensor name to that tensor's value (a residual, a step count, PowerSGD's ``Q``, ...).
The class says which groups a codec has; a wrapper's state extends the base state with its own::

    @dataclass
    class ErrorFeedbackState(TensorState):
        residual: Dict[str, Any] = field(default_factory=dict)   # worker-side error, per tensor

    codec.state.residual["fc.weight"]       # typed access, what the codec code uses
    codec.state["residual"]["fc.weight"]    # the same dict, by group name (elastic, tools)

Why a dict per group and not one object per tensor: a checkpoint, elastic Horovod's split between
shared and per-worker state (:mod:`hvd_compress.elastic`) and the TF variables all address state
as ``group -> tensor name``. :meth:`TensorState.groups` is that nested dict, the checkpoint format
(``codec.state_dict()["state"]``), unchanged from the untyped state, so saved states still load.

Framework-neutral: the values are whatever the framework keeps (torch tensors, ints); this module
imports neither framework.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, Type, TypeVar

S = TypeVar("S", bound="TensorState")


@dataclass(eq=False)
class TensorState(Mapping):
    """The state every codec keeps: ``step``, exchanges done per tensor (the stochastic-rounding
    streams are seeded by it, so a restored run draws what the uninterrupted one would).

    Also a read-only mapping from group name to group (``state["step"]``), for code that walks
    groups by name; the groups themselves are plain dicts and are mutated in place."""

    step: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def group_names(cls) -> tuple:
        return tuple(f.name for f in dataclasses.fields(cls))

    def groups(self) -> Dict[str, Dict[str, Any]]:
        """``{group: {tensor name: value}}``: the checkpoint format (values not copied)."""
        return {name: getattr(self, name) for name in self.group_names()}

    @classmethod
    def from_groups(cls: Type[S], groups: Mapping, codec: str = "this codec") -> S:
        """The state saved as :meth:`groups`. A group this class does not declare is a
        ``ValueError`` (the state belongs to another codec); a missing one starts empty."""
        unknown = sorted(set(groups) - set(cls.group_names()))
        if unknown:
            raise ValueError(
                f"hvd_compress: saved codec state has group(s) {unknown} that {codec} does not keep "
                f"(its state, {cls.__name__}, has {list(cls.group_names())}); construct the same "
                "codec as the saved run"
            )
        return cls(**{name: dict(value) for name, value in groups.items()})

    def clear(self) -> None:
        """Forget every tensor's state (a fresh codec's state)."""
        for name in self.group_names():
            getattr(self, name).clear()

    # read-only Mapping: group name -> group
    def __getitem__(self, name: str) -> Dict[str, Any]:
        if name not in self.group_names():
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.group_names())

    def __len__(self) -> int:
        return len(self.group_names())

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name}: {len(group)} tensors" for name, group in self.groups().items())
        return f"{type(self).__name__}({sizes})"


@dataclass(eq=False)
class ErrorFeedbackState(TensorState):
    """Error feedback: ``residual``, the worker's compression error ``p - C(p)`` per tensor."""

    residual: Dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class DoubleSqueezeState(TensorState):
    """DoubleSqueeze's own state (the worker residual is its inner error feedback's):
    ``server_residual``, the owner's error on the chunk it re-encodes; ``numel``, each tensor's
    full length, so an elastic reset can re-cut the server residual to the new world's chunks (torch
    records it; TF reads the lengths off the worker residual variables and leaves it empty)."""

    numel: Dict[str, Any] = field(default_factory=dict)
    server_residual: Dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class PowerSGDState(ErrorFeedbackState):
    """PowerSGD: ``q``, the warm-start factor ``Q`` per tensor (identical on every rank), and the
    error-feedback ``residual``."""

    q: Dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class GradiVeQBasisState(ErrorFeedbackState):
    """GradiVeQ's state but the samples, per conv tensor: ``phase`` (warmup / sample / compress),
    the fitted ``basis`` and ``mean`` with their dimensions ``d`` (slice length), ``K`` (kept
    components) and ``slices``; and the ``residual``."""

    phase: Dict[str, Any] = field(default_factory=dict)
    basis: Dict[str, Any] = field(default_factory=dict)
    mean: Dict[str, Any] = field(default_factory=dict)
    d: Dict[str, Any] = field(default_factory=dict)
    K: Dict[str, Any] = field(default_factory=dict)
    slices: Dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class GradiVeQState(GradiVeQBasisState):
    """GradiVeQ (torch): the basis state and ``samples``, this worker's moments of the gradient
    slices gathered for the next fit (one dict per tensor: count, sum, outer)."""

    samples: Dict[str, Any] = field(default_factory=dict)
