"""Spec: the C kernels, built with AddressSanitizer and UndefinedBehaviorSanitizer, pass the native
kernel tests and the malformed-payload fuzz without one report.

The run happens in a child ``pytest`` with the sanitized library (``HVD_COMPRESS_SANITIZE=1``, its
own cache folder) and the ASan runtime preloaded. Any out-of-bounds access or undefined behaviour
aborts that child (``halt_on_error`` / ``-fno-sanitize-recover``), so it fails this test with the
sanitizer's report. TensorFlow is hidden from the child: TF's own code trips ASan at import, and the
TF decoders do not run the C kernels' decode anyway.

A first test proves the harness can see a bug: a kernel handed a buffer that is too short must be
caught, or the replay would pass vacuously.

To replay the full 10,000-case corpus by hand::

    HVD_COMPRESS_FUZZ_EXAMPLES=10000 python -m pytest tests/test_native_sanitizers.py -q
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _runtime(name: str) -> str:
    try:
        out = subprocess.run(["cc", f"-print-file-name={name}"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    path = out.stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else ""


ASAN = _runtime("libasan.so")
pytestmark = pytest.mark.skipif(not ASAN, reason="the compiler has no AddressSanitizer runtime (libasan.so)")


@pytest.fixture(scope="module")
def sanitized_env(tmp_path_factory):
    """Environment of a child process that loads the sanitized kernels and cannot import TF."""
    hidden = tmp_path_factory.mktemp("no_tf")
    (hidden / "tensorflow.py").write_text(
        'raise ImportError("tensorflow is hidden in the sanitizer run (its own code trips ASan)")\n'
    )
    env = dict(os.environ)
    env.update(
        {
            "LD_PRELOAD": ASAN,
            "ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1:abort_on_error=0",  # Python "leaks" at exit
            "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
            "HVD_COMPRESS_SANITIZE": "1",
            "HVD_COMPRESS_NATIVE": "1",
            "HVD_COMPRESS_CACHE": str(tmp_path_factory.mktemp("sanitized_cache")),
            "PYTHONPATH": os.pathsep.join([str(hidden), str(ROOT), env.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "2",  # the parallel tiles run too
        }
    )
    return env


def _run(env, args, timeout):
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _report(out) -> str:
    return (out.stdout[-3000:] + "\n" + out.stderr[-6000:]).strip()


def test_the_sanitized_build_loads_and_catches_an_out_of_bounds_read(sanitized_env):
    probe = textwrap.dedent("""
        import ctypes
        from hvd_compress import _native
        assert _native.sanitized() and "-fsanitize=address,undefined" in _native.cflags()
        assert _native.enabled(), _native.unavailable_reason()
        lib = _native.load()
        # decode 4096 values from an 8-byte payload (the wrappers never allow this): ASan must stop it.
        # libc's malloc, not ctypes arrays: those live in Python's arenas, where ASan sees no bounds.
        libc = ctypes.CDLL(None)
        libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
        payload, out = libc.malloc(8), libc.malloc(4096 * 4)
        lib.hvdc_sign_decode(payload, 4096, out, 0, 1.0, 1)
        print("NOT CAUGHT")
    """)
    out = _run(sanitized_env, ["-c", probe], timeout=300)
    assert "NOT CAUGHT" not in out.stdout, _report(out)
    assert out.returncode != 0 and "AddressSanitizer" in out.stderr, _report(out)


def test_kernels_and_fuzz_corpus_run_clean_under_asan_and_ubsan(sanitized_env):
    out = _run(
        sanitized_env,
        [
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_native.py",
            "tests/test_malformed.py",
            "-k",
            "native and not concurrently and not forked",
        ],
        timeout=1200,
    )
    report = _report(out)
    assert "AddressSanitizer" not in out.stderr and "runtime error:" not in out.stderr, report
    assert out.returncode == 0, report
    assert " passed" in out.stdout and " failed" not in out.stdout, report
