"""Worker: train the demo MLP once per codec under Horovod; every rank writes its rows.

Usage (via tests/launch.py): horovodrun -np N python tests/mp/train_codecs.py --out DIR
    --codecs fp32,qsgd:bits=4,... [--frontend stock|ours] [--epochs E] [--hidden H]
"""

from common import parse_args, write_result

args = parse_args(
    {
        "--codecs": {"required": True},
        "--frontend": {"default": "stock"},
        "--epochs": {"type": int, "default": 12},
        "--hidden": {"type": int, "default": 256},
    }
)

import types  # noqa: E402

import horovod.torch as hvd  # noqa: E402
import torch  # noqa: E402

import hvd_compress.torch as hc  # noqa: E402
from hvd_compress.demo import load_digits_split, split_codecs, train_one  # noqa: E402

hvd.init()
torch.set_num_threads(1)
opts = types.SimpleNamespace(
    seed=0, hidden=args.hidden, lr=0.05, batch_size=32, epochs=args.epochs, frontend=args.frontend
)
data = load_digits_split(0)
rows = []
for name in split_codecs(args.codecs):
    row = train_one(name, data, opts, hvd)
    if name not in ("fp32", "hvd-fp16"):
        codec = hc.from_spec(name)
        row["nominal_bits"] = codec.nominal_bits(1 << 20)
        row["patterns"] = sorted(
            {codec.pattern(hvd.size(), p.numel()) for p in torch.nn.Linear(256, 256).parameters() if p.dim() == 2}
        )
        row["describe"] = codec.describe()
    rows.append(row)
write_result(args.out, hvd.rank(), {"rank": hvd.rank(), "size": hvd.size(), "rows": rows})
hvd.shutdown()
