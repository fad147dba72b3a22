"""``python -m hvd_compress.bench <command> [options]``: dispatch to ``hvd_compress.bench.<command>``."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import hvd_compress.bench as bench


def available():
    """Known commands plus any module of this package that defines ``main`` (found by name only;
    modules starting with ``_`` and the helper modules are not commands)."""
    names = dict(bench.COMMANDS)
    for info in pkgutil.iter_modules(bench.__path__):
        if not info.name.startswith("_") and info.name not in names and info.name not in HELPERS:
            names[info.name] = "(see --help)"
    return names


HELPERS = {"reference", "common", "netns", "plots", "cluster", "step_hosts"}


def usage() -> str:
    lines = ["usage: python -m hvd_compress.bench <command> [options]", "", "commands:"]
    for name, text in sorted(available().items()):
        lines.append(f"  {name:<12} {text}")
    lines.append("")
    lines.append("Run 'python -m hvd_compress.bench <command> --help' for a command's options.")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0].replace("-", "_"), argv[1:]  # gradiveq-spectrum -> gradiveq_spectrum
    if not name.isidentifier() or name in HELPERS:
        print(f"unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(f"hvd_compress.bench.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"hvd_compress.bench.{name}":
            raise
        print(f"unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if not hasattr(module, "main"):
        print(f"hvd_compress.bench.{name} is not a command (it has no main(argv))", file=sys.stderr)
        return 2
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
