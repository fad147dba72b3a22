"""How compressible are real CNN gradients for GradiVeQ? The spectrum study behind ``docs/linear.md``.

    python -m hvd_compress.bench gradiveq-spectrum [--model resnet20] [--workers 4]
        [--warmup 200] [--iters 100] [--json PATH] [--plot PATH]

Trains a CIFAR-style ResNet (16-32-64 channels, as in the GradiVeQ paper's ResNet-32) in one
process on an offline CIFAR-like stand-in (the digits upsampled to 32x32x3 with colour, shifts and
a textured background; see :func:`cifar_like`), the batch split into ``--workers`` shards so that
each step yields every worker's gradient and their average (what data-parallel SGD aggregates).
After ``--warmup`` steps it records ``--iters`` steps of every conv layer's gradients, then
``--holdout`` more steps.

For every conv layer and two slice layouts, both with the paper's filter-adjacent order (the values
at one kernel position across all ``F`` filters side by side):

* ``paper``: ``K = F * D`` with the largest ``D`` that divides the positions and keeps
  ``K <= --slice-size`` (no constraint from the number of samples);
* ``ours``: what :class:`hvd_compress.torch.GradiVeQ` picks (the same, and also enough sampled
  slices per dimension: ``samples_per_dim``, default 4);

it fits the PCA of the recorded *aggregated* slices (centred: the mean slice is removed, as the
codec does) and reports ``d`` for 90/95/99% of the variance (the paper's energy rule with
lambda = 0.01 is the 99% column), ``K/d``, and the share of the energy of the **held-out** steps'
gradients (aggregated, and one worker's) that the 99% basis keeps: a basis that explains its own
samples but not the next gradients only looks compressive. Also: the share of the sampled
variance that ``K/8`` dimensions hold (``E@K/8``: what the paper's ratio would keep), the
held-out share one worker keeps with ``K/8`` dimensions (``w0@K/8``), and ``d`` for 99% of the
*uncentred* second moment (an energy rule that counts the mean slice as signal).

JSON: ``{"config": {...}, "layers": [{"layer", "shape", "layout", "K", "slices", "samples",
"d90", "d95", "d99", "ratio99", "holdout_energy_agg", "holdout_energy_worker"}, ...],
"summary": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

PAPER_RATIO = 8.0  # K/d reported for ResNet-32 on CIFAR-100 (Yu et al., NeurIPS 2018)
ENERGIES = (0.90, 0.95, 0.99)


# ------------------------------------------------------------------------------------ data + model
def cifar_like(n: int, seed: int = 0):
    """``n`` 32x32x3 images from the digits: each 8x8 digit upsampled 4x, tinted with a random
    colour, shifted by up to 4 pixels, over a random smooth texture plus pixel noise. Returns
    ``(x, y)`` as float32 NCHW / int64 numpy arrays (standardized)."""
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(seed)
    digits, labels = load_digits(return_X_y=True)
    idx = rng.integers(0, len(digits), n)
    img = (digits[idx] / 16.0).reshape(n, 8, 8).repeat(4, 1).repeat(4, 2)  # n x 32 x 32
    shift = rng.integers(-4, 5, (n, 2))
    img = np.stack([np.roll(im, tuple(s), axis=(0, 1)) for im, s in zip(img, shift)])
    colour = rng.uniform(0.3, 1.0, (n, 3, 1, 1))
    low = rng.normal(0, 1, (n, 3, 4, 4)).repeat(8, 2).repeat(8, 3) * 0.3  # blocky background texture
    x = colour * img[:, None] + low + rng.normal(0, 0.1, (n, 3, 32, 32))
    x = (x - x.mean()) / x.std()
    return x.astype(np.float32), labels[idx].astype(np.int64)


def resnet(depth: int = 20, classes: int = 10):
    """He et al.'s CIFAR ResNet: a 3x3 conv to 16 channels, three stages of ``(depth - 2) / 6``
    basic blocks at 16, 32 and 64 channels (stride 2 between stages), global pooling, a linear
    layer. ``depth`` 20 or 32 (the paper's)."""
    import torch.nn as nn

    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    blocks = (depth - 2) // 6

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.short = (
                nn.Sequential()
                if stride == 1 and cin == cout
                else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            )

        def forward(self, x):
            y = self.b2(self.c2(self.b1(self.c1(x)).relu()))
            return (y + self.short(x)).relu()

    layers: List[nn.Module] = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for stage, width in enumerate((16, 32, 64)):
        for b in range(blocks):
            layers.append(Block(cin, width, 2 if stage and b == 0 else 1))
            cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes)]
    return nn.Sequential(*layers)


# ------------------------------------------------------------------------------------ collection
def collect(model_depth: int, workers: int, batch: int, warmup: int, iters: int, holdout: int, seed: int, lr: float):
    """Train and record ``{layer: {"shape", "agg": [steps x numel], "worker": [...]}}`` for the
    ``iters`` recorded steps and the ``holdout`` steps after them (float32 numpy)."""
    import torch

    torch.manual_seed(seed)
    model = resnet(model_depth)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    x, y = cifar_like(batch * (warmup + iters + holdout) // 4 + 4 * batch, seed)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    convs = {name: p for name, p in model.named_parameters() if p.dim() == 4}
    rec: Dict[str, Dict] = {n: {"shape": tuple(p.shape), "agg": [], "worker": []} for n, p in convs.items()}
    loss_fn = torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    shard = batch // workers
    losses = []
    for step in range(warmup + iters + holdout):
        pick = torch.randint(0, len(x), (batch,), generator=gen)
        grads = []
        for w in range(workers):  # each worker's gradient on its shard, then the average
            opt.zero_grad(set_to_none=True)
            sel = pick[w * shard : (w + 1) * shard]
            loss = loss_fn(model(x[sel]), y[sel])
            loss.backward()
            grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters()})
            if w == 0:
                losses.append(loss.item())
        for n, p in model.named_parameters():
            p.grad = sum(g[n] for g in grads) / workers
        if step >= warmup:
            for n in convs:
                rec[n]["agg"].append(convs[n].grad.reshape(-1).numpy().copy())
                rec[n]["worker"].append(grads[0][n].reshape(-1).numpy().copy())
        opt.step()
    for r in rec.values():
        r["agg"], r["worker"] = np.stack(r["agg"]), np.stack(r["worker"])
    return rec, losses


# ------------------------------------------------------------------------------------ analysis
def slices_of(flat_steps: np.ndarray, shape, k: int) -> np.ndarray:
    """The codec's layout (:func:`hvd_compress.torch.codecs.gradiveq.to_slices`) of each step's
    flat gradient, stacked: ``(steps * S) x K``."""
    f = shape[0]
    return flat_steps.reshape(len(flat_steps), f, -1).transpose(0, 2, 1).reshape(-1, k)


def energy_dims(eigenvalues: np.ndarray) -> Dict[float, int]:
    total = eigenvalues.sum()
    share = np.cumsum(eigenvalues) / total if total > 0 else np.ones_like(eigenvalues)
    return {e: int(min(len(share), np.searchsorted(share, e - 1e-12) + 1)) for e in ENERGIES}


def kept_energy(slices: np.ndarray, basis: np.ndarray, mean: np.ndarray) -> float:
    """Share of ``slices``' energy the codec's reconstruction ``U U^T (g - mu) + mu`` keeps."""
    recon = (slices - mean) @ basis @ basis.T + mean
    return float(1.0 - ((slices - recon) ** 2).sum() / max((slices**2).sum(), 1e-30))


def analyse(rec, iters: int, slice_size: int, samples_per_dim: float):
    from hvd_compress.common import filters_and_positions, slice_geometry_fp

    rows = []
    for name, r in rec.items():
        shape = r["shape"]
        f, p = filters_and_positions(shape, 0)
        layouts = {
            "paper": slice_geometry_fp(f, p, slice_size),
            "ours": slice_geometry_fp(f, p, slice_size, iters, samples_per_dim),
        }
        for layout, (_, _, _, k, s) in layouts.items():
            sample = slices_of(r["agg"][:iters], shape, k).astype(np.float64)
            mean = sample.mean(0)
            cov = np.cov(sample, rowvar=False, bias=True).reshape(k, k)
            vals, vecs = np.linalg.eigh(cov)
            vals, vecs = np.clip(vals[::-1], 0, None), vecs[:, ::-1]
            dims = energy_dims(vals)
            basis = vecs[:, : dims[0.99]]
            d8 = max(1, k // 8)  # the paper's ratio: how much of the energy do K/8 dimensions hold?
            second = sample.T @ sample / len(sample)  # uncentred second moment (mean not removed)
            raw = np.clip(np.linalg.eigvalsh(second)[::-1], 0, None)
            row = {
                "layer": name,
                "shape": list(shape),
                "layout": layout,
                "K": k,
                "slices": s,
                "samples": len(sample),
                **{f"d{int(e * 100)}": d for e, d in dims.items()},
                "ratio99": k / dims[0.99],
                "ratio95": k / dims[0.95],
                "ratio90": k / dims[0.90],
                "energy_at_ratio8": float(vals[:d8].sum() / max(vals.sum(), 1e-300)),
                "uncentred_d99": energy_dims(raw)[0.99],
            }
            if len(r["agg"]) > iters:
                row["holdout_energy_agg"] = kept_energy(slices_of(r["agg"][iters:], shape, k), basis, mean)
                row["holdout_energy_worker"] = kept_energy(slices_of(r["worker"][iters:], shape, k), basis, mean)
                row["holdout_energy_worker_ratio8"] = kept_energy(
                    slices_of(r["worker"][iters:], shape, k), vecs[:, :d8], mean
                )
            rows.append(row)
    return rows


def summarize(rows) -> Dict[str, Dict[str, float]]:
    out = {}
    for layout in ("paper", "ours"):
        sel = [r for r in rows if r["layout"] == layout]
        values = sum(r["K"] * r["slices"] for r in sel)
        out[layout] = {
            f"value_weighted_ratio{e}": values / sum(r["K"] * r["slices"] / r[f"ratio{e}"] for r in sel)
            for e in (90, 95, 99)
        }
        if sel and "holdout_energy_agg" in sel[0]:
            w = np.array([r["K"] * r["slices"] for r in sel], dtype=np.float64)
            for key in ("holdout_energy_agg", "holdout_energy_worker", "holdout_energy_worker_ratio8"):
                out[layout][key] = float((w * [r[key] for r in sel]).sum() / w.sum())
        if sel:
            w = np.array([r["K"] * r["slices"] for r in sel], dtype=np.float64)
            out[layout]["energy_at_ratio8"] = float((w * [r["energy_at_ratio8"] for r in sel]).sum() / w.sum())
            out[layout]["uncentred_value_weighted_ratio99"] = values / sum(
                r["K"] * r["slices"] / (r["K"] / r["uncentred_d99"]) for r in sel
            )
    return out


def table(rows) -> str:
    head = (
        f"{'layer':<14} {'shape':<16} {'layout':<6} {'K':>4} {'S':>5} {'samples':>7} "
        f"{'d90':>4} {'d95':>4} {'d99':>4} {'K/d99':>6} {'kept agg':>8} {'kept w0':>8} {'E@K/8':>6} {'w0@K/8':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['layer'][-14:]:<14} {'x'.join(map(str, r['shape'])):<16} {r['layout']:<6} "
            f"{r['K']:>4} {r['slices']:>5} {r['samples']:>7} {r['d90']:>4} {r['d95']:>4} "
            f"{r['d99']:>4} {r['ratio99']:>6.2f} {r.get('holdout_energy_agg', math.nan):>8.3f} "
            f"{r.get('holdout_energy_worker', math.nan):>8.3f} {r['energy_at_ratio8']:>6.3f} "
            f"{r.get('holdout_energy_worker_ratio8', math.nan):>6.3f}"
        )
    return "\n".join(lines)


def plot(rows, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    for layout, marker in (("paper", "o"), ("ours", "s")):
        sel = [r for r in rows if r["layout"] == layout]
        ax.plot(range(len(sel)), [r["ratio99"] for r in sel], marker=marker, label=f"{layout}: K/d at 99% energy")
        if sel and "holdout_energy_worker" in sel[0]:
            ax.plot(
                range(len(sel)),
                [8 * r["holdout_energy_worker"] for r in sel],
                marker=marker,
                linestyle=":",
                label=f"{layout}: held-out energy kept (x8, one worker)",
            )
    ax.axhline(PAPER_RATIO, color="k", linestyle="--", label="paper: K/d = 8 (ResNet-32)")
    ax.set_xlabel("conv layer (input to output)")
    ax.set_ylabel("K / d")
    ax.legend(fontsize=7)
    ax.set_title("GradiVeQ: compressibility of a CIFAR-style ResNet's conv gradients")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20", choices=["resnet20", "resnet32"])
    ap.add_argument("--workers", type=int, default=4, help="data-parallel workers emulated by shards")
    ap.add_argument("--batch", type=int, default=64, help="global batch (split over the workers)")
    ap.add_argument("--warmup", type=int, default=200, help="training steps before recording")
    ap.add_argument("--iters", type=int, default=100, help="recorded steps (the PCA's sample set)")
    ap.add_argument("--holdout", type=int, default=20, help="steps after the sample set, to test the basis")
    ap.add_argument("--slice-size", type=int, default=256)
    ap.add_argument("--samples-per-dim", type=float, default=4.0)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    ap.add_argument("--plot")
    args = ap.parse_args(argv)
    t0 = time.time()
    rec, losses = collect(
        int(args.model[6:]), args.workers, args.batch, args.warmup, args.iters, args.holdout, args.seed, args.lr
    )
    rows = analyse(rec, args.iters, args.slice_size, args.samples_per_dim)
    summary = summarize(rows)
    print(table(rows))
    print()
    for layout, s in summary.items():
        print(
            f"{layout:<6} value-weighted K/d: 90% {s['value_weighted_ratio90']:.2f}, "
            f"95% {s['value_weighted_ratio95']:.2f}, 99% {s['value_weighted_ratio99']:.2f}; "
            f"held-out energy kept at 99%: aggregated {s.get('holdout_energy_agg', math.nan):.3f}, "
            f"one worker {s.get('holdout_energy_worker', math.nan):.3f}; at K/d = 8: sample energy "
            f"{s['energy_at_ratio8']:.3f}, held-out one worker {s.get('holdout_energy_worker_ratio8', math.nan):.3f}; "
            f"uncentred 99% K/d {s['uncentred_value_weighted_ratio99']:.2f}   (paper: K/d = {PAPER_RATIO:g})"
        )
    print(f"loss {losses[0]:.3f} -> {np.mean(losses[-10:]):.3f}; {time.time() - t0:.0f} s")
    config = {k: v for k, v in vars(args).items() if k not in ("json", "plot")}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps(
                {
                    "config": config,
                    "layers": rows,
                    "summary": summary,
                    "loss_first": losses[0],
                    "loss_last10": float(np.mean(losses[-10:])),
                },
                indent=1,
            )
        )
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
