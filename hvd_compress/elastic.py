"""Elastic Horovod, the framework-neutral part: which codec state is shared, which is a worker's own,
and DoubleSqueeze's server residual re-cut from one world's chunks to another's.

Used by :mod:`hvd_compress.torch.frontends.elastic` (``hvd.elastic.TorchState`` handlers) and
:mod:`hvd_compress.tensorflow.frontends.elastic` (``TensorFlowKerasState`` / ``TensorFlowState`` subclasses).
A codec's state is seen here as a nested dict: ``{"state": {group: ...}, "inner": {...},
"fallback": {...}, "sampler": {...}}`` (torch's ``Codec.state_dict()``; the TF module builds the
same shape from the codec's ``tf.Variable``\\ s).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from hvd_compress.common import chunk_bounds

# codec state entries that belong to one worker (never broadcast); everything else is shared
LOCAL_STATE_KEYS = frozenset({"residual", "server_residual", "samples"})
# nested codec state (Wrapper.inner, GradiVeQ's fallback codec and sampler)
NESTED_KEYS = ("inner", "fallback", "sampler")

# (old world size, old rank, {tensor key: that rank's server-residual chunk}); sizes are None for
# a worker that joined with no state
Piece = Tuple[Optional[int], Optional[int], Dict[str, Any]]


def split_state(sd: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """A codec's state as (shared, local): ``local`` holds the per-worker entries of
    :data:`LOCAL_STATE_KEYS` at every nesting level, ``shared`` the rest."""
    shared: Dict[str, Any] = {}
    local: Dict[str, Any] = {}
    for key, value in sd.items():
        if key == "state" and isinstance(value, dict):
            shared["state"] = {k: v for k, v in value.items() if k not in LOCAL_STATE_KEYS}
            local["state"] = {k: v for k, v in value.items() if k in LOCAL_STATE_KEYS}
        elif key in NESTED_KEYS and isinstance(value, dict) and "state" in value:
            shared[key], local[key] = split_state(value)
        else:
            shared[key] = value
    return shared, local


def merge_state(shared: Dict[str, Any], local: Dict[str, Any]) -> Dict[str, Any]:
    """Inverse of :func:`split_state`: rank 0's shared entries with this worker's local ones."""
    out = dict(shared)
    for key, value in local.items():
        if key == "state":
            out["state"] = {**shared.get("state", {}), **value}
        elif key in shared and isinstance(shared[key], dict):
            out[key] = merge_state(shared[key], value)
    return out


def recut_server_residual(
    pieces: Sequence[Piece], numels: Dict[str, int], align: int, new_size: int, new_rank: int
) -> Dict[str, np.ndarray]:
    """DoubleSqueeze's server residual for ``new_rank`` of ``new_size`` workers, as float32 arrays.

    ``pieces``: every current worker's ``(old_size, old_rank, {key: chunk residual})`` (chunks as
    anything ``np.asarray`` takes). The chunks are placed at the old world's chunk bounds of each
    tensor (``numels[key]`` values, ``align`` as the codec's alignment), the chunks of workers that
    are gone stay zero, and the full residual is cut to the new bounds. ``{}`` when no worker has
    committed state of one and the same old world (nothing to re-cut: start from zero).
    """
    old_sizes = {size for size, _, res in pieces if size is not None and res}
    if len(old_sizes) != 1:
        return {}
    (old_size,) = old_sizes
    out = {}
    for key, n in numels.items():
        full = np.zeros(n, dtype=np.float32)
        old_bounds = chunk_bounds(n, old_size, align)
        for size, rank, res in pieces:
            chunk = res.get(key)
            if size == old_size and chunk is not None and rank is not None and 0 <= rank < old_size:
                lo, hi = old_bounds[rank]
                values = np.asarray(chunk, dtype=np.float32).reshape(-1)
                if values.size == hi - lo:
                    full[lo:hi] = values
        lo, hi = chunk_bounds(n, new_size, align)[new_rank]
        out[key] = full[lo:hi].copy()
    return out


__all__: List[str] = ["LOCAL_STATE_KEYS", "NESTED_KEYS", "split_state", "merge_state", "recut_server_residual"]
