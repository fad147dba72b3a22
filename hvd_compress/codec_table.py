"""The README's codec table, generated from the codec registry (issue #19: the README table comes
from the registry, so a new built-in codec appears there without anyone remembering to add it).

One row per built-in codec (:data:`hvd_compress.core.BUILTIN_NAMES`), each cell read from the code:

* **spec string**: the registered name (``hc.from_spec(name)`` builds it with its defaults);
* **torch / TF class**: the framework classes the catalogs discover for that name, or ``-`` where
  a framework has none;
* **bits/value**: :meth:`CodecSpec.nominal_bits` of the default knobs on a 1024 x 1024 tensor,
  scales included (a spec whose size depends on more than the tensor's length says so in its
  ``bits_note``);
* **exchange**: what carries the default torch codec, at 2 workers and at 4
  (:meth:`CodecConfig.pattern`); PowerSGD and GradiVeQ run their own rounds of allreduce, and
  Lattice is SwarmSGD's gossip codec;
* **error feedback**: whether the default torch codec carries a residual into the next step
  (DoubleSqueeze: on the workers and on the reduce-scatter's owner);
* **what it is**: the first paragraph of the spec's docstring.

Regenerate after changing a codec: ``python -m hvd_compress.cli codecs --update-readme``;
``tests/test_codec_table.py`` fails while README.md's table differs from :func:`markdown`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List

BEGIN = "<!-- codec table: generated from the registry by `python -m hvd_compress.cli codecs --update-readme` -->"
END = "<!-- end of codec table -->"
README = Path(__file__).resolve().parents[1] / "README.md"
TENSOR = (1024, 1024)
_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")  # Sphinx roles (":meth:`decode_relative`") -> `decode_relative`


def _summary(doc: str) -> str:
    para = " ".join((doc or "").strip().split("\n\n")[0].split())
    return _ROLE.sub(r"`\1`", para).replace("``", "`").replace("|", "\\|")


def _framework_classes() -> Dict[str, Dict[str, type]]:
    from hvd_compress.torch.codecs import catalog as torch_catalog

    out = {"torch": torch_catalog.codec_classes()}
    try:  # TensorFlow is an optional extra: without it, the TF column says so
        from hvd_compress.tensorflow.codecs import catalog as tf_catalog
    except ImportError:
        out["tf"] = {}
    else:
        out["tf"] = tf_catalog.codec_classes()
    return out


def _exchange(codec) -> str:
    from hvd_compress.torch.codecs.base import Codec

    if type(codec).custom_exchange is not Codec.custom_exchange:
        return "own rounds of allreduce"
    if hasattr(codec, "decode_relative"):
        return "gossip (`SwarmSGD`)"
    numel = TENSOR[0] * TENSOR[1]
    two, four = codec.pattern(2, numel), codec.pattern(4, numel)
    text = two if two == four else f"{two} (2 workers), {four} (3+)"
    return text.replace("_", "-")


def _error_feedback(codec) -> str:
    from hvd_compress.torch.codecs.doublesqueeze import DoubleSqueeze
    from hvd_compress.torch.codecs.error_feedback import ErrorFeedback

    if isinstance(codec, DoubleSqueeze):
        return "worker + server"
    return "yes" if isinstance(codec, ErrorFeedback) or getattr(codec, "error_feedback", False) else "no"


def rows() -> List[Dict[str, str]]:
    """The table's rows, in registered-name order."""
    from hvd_compress.core.registry import builtin_names, registry
    from hvd_compress.torch.codecs.catalog import from_spec_with

    specs = registry()
    classes = _framework_classes()
    out = []
    for name in sorted(builtin_names()):
        spec = specs[name]()
        torch_cls = classes["torch"].get(name)
        tf_cls = classes["tf"].get(name)
        note = getattr(spec, "bits_note", None)
        bits = note or f"{spec.nominal_bits(TENSOR[0] * TENSOR[1]):.3g}"
        codec = None if torch_cls is None else from_spec_with(name)
        out.append(
            {
                "spec string": f"`{name}`",
                "torch / TF class": " / ".join(f"`{c.__name__}`" if c else "-" for c in (torch_cls, tf_cls)),
                "bits/value (defaults, 1024 x 1024)": bits,
                "exchange": "-" if codec is None else _exchange(codec),
                "error feedback": "-" if codec is None else _error_feedback(codec),
                "what it is": _summary(type(spec).__doc__ or ""),
            }
        )
    return out


def markdown() -> str:
    """The table as Markdown, between the :data:`BEGIN` and :data:`END` markers."""
    table = rows()
    head = list(table[0])
    lines = [BEGIN, "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row[h] for h in head) + " |" for row in table]
    lines.append(END)
    return "\n".join(lines)


def readme_block(text: str) -> str:
    """The generated block as it stands in ``text`` (README.md's contents)."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md has no generated codec table (markers {BEGIN!r} ... {END!r})")
    return text[start : end + len(END)]


def update_readme(path: Path = README) -> bool:
    """Rewrite the table in ``path``; True when it changed."""
    text = path.read_text()
    new = text.replace(readme_block(text), markdown())
    if new != text:
        path.write_text(new)
    return new != text
