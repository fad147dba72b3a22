"""``python -m hvd_compress._native --build``: compile the native codec kernels into the cache and
print the library's path (exit status 1, with the compiler's message, if that fails)."""

from __future__ import annotations

import argparse
import sys

from hvd_compress import _native


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hvd_compress._native", description=__doc__)
    ap.add_argument("--build", action="store_true", help="build (if needed) and print the library path")
    ap.add_argument("--force", action="store_true", help="rebuild even if the cached library exists")
    args = ap.parse_args(argv)
    if not (args.build or args.force):
        ap.print_help()
        return 2
    try:
        path = _native.build(force=args.force)
        import ctypes

        ctypes.CDLL(str(path)).hvdc_abi_version()  # it loads
    except Exception as exc:
        print(f"hvd_compress native build failed: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
