"""Training problems for the parameter server: numpy models with a flat parameter vector.

Each problem holds its data and exposes ``dim``, ``n_samples``, ``init(seed)``,
``loss(w, idx=None)`` and ``grad(w, idx=None)`` (mean over the rows ``idx``, all rows by default,
plus the L2 term). Pure numpy, so Ray actors need no torch.

* :class:`LogisticRegression`: L2-regularized logistic loss, labels in {-1, +1};
  :func:`synthetic_logistic` builds a sparse high-dimensional data set shaped like real-sim
  (the paper's set: unit-norm sparse rows, a separable-ish linear model with label noise).
* :class:`MLP`: a one-hidden-layer tanh network with softmax cross-entropy (the paper's MNIST MLP,
  scaled to scikit-learn's 8x8 digits by :func:`digits_mlp`).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


class LogisticRegression:
    """``f(w) = mean_i log(1 + exp(-y_i <x_i, w>)) + lam/2 ||w||^2``; smoothness ``L <= max||x||^2/4 + lam``."""

    name = "logistic"

    def __init__(self, x: np.ndarray, y: np.ndarray, lam: float = 1e-4):
        self.x = np.ascontiguousarray(x, np.float32)
        self.y = np.asarray(y, np.float32).reshape(-1)
        if set(np.unique(self.y)) - {-1.0, 1.0}:
            raise ValueError("LogisticRegression labels must be -1 or +1")
        self.lam = float(lam)
        self.n_samples, self.dim = self.x.shape

    def init(self, seed: int = 0) -> np.ndarray:
        return np.zeros(self.dim, np.float64)

    def _rows(self, idx):
        return (self.x, self.y) if idx is None else (self.x[idx], self.y[idx])

    def loss(self, w: np.ndarray, idx: Optional[np.ndarray] = None) -> float:
        x, y = self._rows(idx)
        z = -y * (x @ w.astype(np.float32)).astype(np.float64)
        return float(np.mean(np.logaddexp(0.0, z)) + 0.5 * self.lam * np.dot(w, w))

    def grad(self, w: np.ndarray, idx: Optional[np.ndarray] = None) -> np.ndarray:
        x, y = self._rows(idx)
        margin = y * (x @ w.astype(np.float32)).astype(np.float64)
        coef = -y / (1.0 + np.exp(margin))  # d/dm log(1+exp(-m)) * y
        return (coef.astype(np.float32) @ x).astype(np.float64) / len(y) + self.lam * w

    def smoothness(self) -> float:
        return float(np.max(np.sum(self.x.astype(np.float64) ** 2, axis=1)) / 4 + self.lam)


def synthetic_logistic(
    n_samples: int = 4000, dim: int = 2000, density: float = 0.02, flip: float = 0.03, lam: float = 1e-4, seed: int = 0
) -> LogisticRegression:
    """A sparse, high-dimensional binary classification set (real-sim-like: unit-norm rows with
    ``density * dim`` non-zeros each, labels from a dense linear model, ``flip`` label noise)."""
    rng = np.random.default_rng(seed)
    nnz = max(1, int(round(density * dim)))
    x = np.zeros((n_samples, dim), np.float32)
    cols = np.argpartition(rng.random((n_samples, dim)), nnz, axis=1)[:, :nnz]
    vals = np.abs(rng.normal(size=(n_samples, nnz))).astype(np.float32)
    np.put_along_axis(x, cols, vals, axis=1)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w_true = rng.normal(size=dim)
    score = x @ w_true
    y = np.where(score > np.median(score), 1.0, -1.0)
    y[rng.random(n_samples) < flip] *= -1
    return LogisticRegression(x, y, lam=lam)


class MLP:
    """``sizes[0] -> sizes[1] (tanh) -> ... -> sizes[-1]`` softmax cross-entropy, L2 ``lam``."""

    name = "mlp"

    def __init__(self, x: np.ndarray, labels: np.ndarray, sizes: Sequence[int], lam: float = 1e-4):
        self.x = np.ascontiguousarray(x, np.float32)
        self.labels = np.asarray(labels, np.int64).reshape(-1)
        self.sizes = tuple(int(s) for s in sizes)
        if self.sizes[0] != self.x.shape[1] or self.labels.max() >= self.sizes[-1]:
            raise ValueError(f"MLP sizes {self.sizes} do not fit inputs {self.x.shape} / labels")
        self.lam = float(lam)
        self.n_samples = self.x.shape[0]
        self.shapes = [(a, b) for a, b in zip(self.sizes[:-1], self.sizes[1:])]
        self.dim = sum(a * b + b for a, b in self.shapes)

    def init(self, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        parts = []
        for a, b in self.shapes:
            parts.append(rng.normal(scale=np.sqrt(1.0 / a), size=a * b))
            parts.append(np.zeros(b))
        return np.concatenate(parts)

    def _unpack(self, w):
        out, pos = [], 0
        for a, b in self.shapes:
            wm = w[pos : pos + a * b].reshape(a, b)
            pos += a * b
            out.append((wm, w[pos : pos + b]))
            pos += b
        return out

    def _forward(self, w, idx):
        x = self.x if idx is None else self.x[idx]
        acts = [x.astype(np.float64)]
        layers = self._unpack(w)
        for k, (wm, bv) in enumerate(layers):
            z = acts[-1] @ wm + bv
            acts.append(np.tanh(z) if k < len(layers) - 1 else z)
        logits = acts[-1]
        logits = logits - logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return acts, layers, logp

    def loss(self, w: np.ndarray, idx: Optional[np.ndarray] = None) -> float:
        _, _, logp = self._forward(w, idx)
        lab = self.labels if idx is None else self.labels[idx]
        return float(-np.mean(logp[np.arange(len(lab)), lab]) + 0.5 * self.lam * np.dot(w, w))

    def grad(self, w: np.ndarray, idx: Optional[np.ndarray] = None) -> np.ndarray:
        acts, layers, logp = self._forward(w, idx)
        lab = self.labels if idx is None else self.labels[idx]
        m = len(lab)
        delta = np.exp(logp)
        delta[np.arange(m), lab] -= 1.0
        delta /= m
        grads = []
        for k in range(len(layers) - 1, -1, -1):
            wm, _ = layers[k]
            grads.append((acts[k].T @ delta, delta.sum(axis=0)))
            if k:
                delta = (delta @ wm.T) * (1.0 - acts[k] ** 2)
        flat = np.concatenate([np.concatenate([g.reshape(-1), b]) for g, b in reversed(grads)])
        return flat + self.lam * w


def digits_mlp(hidden: int = 32, lam: float = 1e-4) -> MLP:
    """scikit-learn's digits (1797 8x8 images, standardized), 64 -> hidden -> 10.

    Reuses the demo's loader (:func:`hvd_compress.demo.load_digits_split`), training split only.
    """
    from hvd_compress.demo import load_digits_split

    xtr, ytr, _, _ = load_digits_split(seed=0)
    return MLP(xtr.numpy(), ytr.numpy(), (64, hidden, 10), lam=lam)
