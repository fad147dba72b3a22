"""Worker: GradiVeQ and PowerSGD in TensorFlow, a small Keras CNN on the digits under horovodrun.

The TensorFlow demo's runs (``hvd_compress.tensorflow.demo.Demo``: digits sharded across ranks,
SGD 0.05 with momentum 0.9, batch 32 per worker, ranks starting from different weights that an
8-bit quantized broadcast makes identical), with the demo's MLP replaced by a small CNN::

    8x8x1 -> conv 3x3x16 (144 values: fp32) -> conv 3x3x16x32 (4608: GradiVeQ) -> pool
          -> conv 3x3x32x32 (9216: GradiVeQ) -> pool -> dense 128x64 (fallback codec) -> dense 64x10

    horovodrun -np 2 --gloo python tests/mp/tf_linear_cnn.py --out DIR --mode tfkeras \
        --runs "hvd:fp32;tape:gradiveq:warmup_steps=20,sample_steps=10,compress_steps=60;ours:powersgd:rank=2,start_iter=10"

Writes DIR/rank{R}.json: {"rows": [demo rows + "compression" (GradiVeQ: K, d, K/d per conv
layer; PowerSGD: n*m/((n+m)r) per compressed tensor), "phases", "state"]}; rank 0 prints a table.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result

from hvd_compress.tensorflow.demo import Demo, parser, split_runs  # no TF import yet

ap = parser()
ap.add_argument("--out", required=True)
args = ap.parse_args()


class CNNDemo(Demo):
    """The demo with a small CNN, remembering each run's codec (for its compression report)."""

    def make_model(self, seed: int):
        keras, layers = self.keras, self.keras.layers
        keras.utils.set_random_seed(seed)
        return keras.Sequential(
            [
                keras.Input(shape=(64,)),
                layers.Reshape((8, 8, 1)),
                layers.Conv2D(16, 3, padding="same", activation="relu", name="c1"),
                layers.Conv2D(32, 3, padding="same", activation="relu", name="c2"),
                layers.MaxPooling2D(2),
                layers.Conv2D(32, 3, padding="same", activation="relu", name="c3"),
                layers.MaxPooling2D(2),
                layers.Flatten(),
                layers.Dense(64, activation="relu", name="fc"),
                layers.Dense(10, name="out"),
            ],
            name="cnn",
        )

    def codec_of(self, name: str):
        self.last_codec = super().codec_of(name)
        return self.last_codec

    def train_fit(self, frontend, compression):
        self.last_model, logs = super().train_fit(frontend, compression)
        return self.last_model, logs

    def train_tape(self, frontend, compression, tag):
        self.last_model, logs = super().train_tape(frontend, compression, tag)
        return self.last_model, logs


demo = CNNDemo(args.mode, args.epochs, args.batch_size, args.lr)
# cosine decay to zero over the run: a settled final accuracy to compare (as tests/mp/linear_cnn.py)
demo.lr = demo.keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=demo.steps)


def describe(codec, model):
    """K/d per GradiVeQ conv layer, or PowerSGD's ratio per compressed tensor; phases and state groups."""
    if hasattr(codec, "compression_report"):
        return {
            "compression": codec.compression_report(),
            "phases": codec.phases(),
            "state": {g: sorted(t) for g, t in codec.state.items() if t},
        }
    if hasattr(codec, "compression_ratio"):
        from hvd_compress.tensorflow.frontends.stock import variable_key

        comp = {
            variable_key(w): {"shape": list(w.shape), "ratio": codec.compression_ratio(w.shape)}
            for w in model.trainable_weights
            if codec.should_compress(w) and codec.worth_compressing(w.shape)
        }
        return {"compression": comp, "state": {g: sorted(t) for g, t in codec.state.items() if t}}
    return {}


def main():
    result = {
        "rank": demo.rank,
        "size": demo.size,
        "mode": args.mode,
        "keras_version": demo.keras_version(),
        "steps_per_epoch": demo.per_rank // demo.batch_size,
        "rows": [],
    }
    for idx, run in enumerate(split_runs(args.runs or "")):
        row = demo.run(run, idx)
        row.update(describe(demo.last_codec, demo.last_model))
        result["rows"].append(row)
        if demo.rank == 0:
            comp = row.get("compression", {})
            extra = ""
            if "_total" in comp:
                extra = (
                    " K/d "
                    + ", ".join(f"{k}: {v['K']}/{v['d']} = {v['ratio']:.2f}" for k, v in comp.items() if k != "_total")
                    + f" (total {comp['_total']['ratio']:.2f})"
                )
            elif comp:
                extra = " n*m/((n+m)r) " + ", ".join(f"{k}: {v['ratio']:.2f}" for k, v in comp.items())
            print(
                f"np={demo.size} {run:66s} acc={100 * row['accuracy']:.2f}% identical={row['replicas_identical']} "
                f"bytes/step={row['bytes_per_step']:.0f} {row['seconds']:.1f}s{extra}",
                flush=True,
            )
    write_result(args.out, demo.rank, result)
    demo.hvd.shutdown()


if __name__ == "__main__":
    main()
