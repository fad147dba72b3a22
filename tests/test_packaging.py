"""pyproject.toml builds a wheel a user can install: the kernels' C source ships, the version is the
package's own, and Horovod is in no requirement (its PyPI sdist does not build on today's torch)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import hvd_compress

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    pytest.importorskip("setuptools")
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy, so setuptools' build/ and *.egg-info/ do not land in the checkout.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "hvd_compress", source / "hvd_compress", ignore=shutil.ignore_patterns("__pycache__"))
    # No build isolation: uses this environment's setuptools, so the test needs no network.
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source), "-w", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0 and "bdist_wheel" in done.stderr:
        pytest.skip("this setuptools cannot build wheels without the 'wheel' package")
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = out.glob("hvd_compress-*.whl")
    return zipfile.ZipFile(path)


def metadata(wheel: zipfile.ZipFile) -> str:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return wheel.read(name).decode()


def test_wheel_ships_the_native_kernel_source_and_every_subpackage(wheel):
    names = set(wheel.namelist())
    assert "hvd_compress/_native/kernels.c" in names
    for package in (
        "hvd_compress",
        "hvd_compress.torch",
        "hvd_compress.torch.frontends",
        "hvd_compress.tensorflow.frontends.keras",
        "hvd_compress.tensorflow.keras",  # the old path, a shim: it must ship too
        "hvd_compress.ps",
        "hvd_compress.bench",
        "hvd_compress.torch.codecs",
    ):
        assert package.replace(".", "/") + "/__init__.py" in names
    assert not any(n.startswith("tests/") for n in names)


def test_wheel_metadata_has_the_package_version_extras_and_no_horovod(wheel):
    meta = metadata(wheel)
    assert f"Version: {hvd_compress.__version__}" in meta.splitlines()
    extras = {line.split(": ", 1)[1] for line in meta.splitlines() if line.startswith("Provides-Extra: ")}
    assert {"torch", "tf", "ray", "dev"} <= extras
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist: ")]
    assert "Requires-Dist: numpy" in requires
    assert not any("horovod" in line.lower() for line in requires)


def test_wheel_installs_the_hvd_compress_console_script(wheel):
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    entry_points = wheel.read(name).decode()
    assert "[console_scripts]" in entry_points
    assert "hvd-compress = hvd_compress.cli:main" in entry_points


def test_fresh_env_script_parses_and_stays_out_of_the_ci_run():
    """ci/fresh_env.sh (a user's install in throwaway venvs: pip install ., build-horovod, a compressed
    Horovod run, for torch and for TF) is run by hand: it takes minutes. Here only: it is there, bash
    parses it, it reads its versions from ci/setup.sh, and ci/test.sh does not run it."""
    script = ROOT / "ci" / "fresh_env.sh"
    assert script.is_file()
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    text = script.read_text()
    assert "pin TORCH_VERSION" in text and "pin TF_VERSION" in text
    setup = (ROOT / "ci" / "setup.sh").read_text()
    assert "\nTORCH_VERSION=" in setup and "\nTF_VERSION=" in setup
    assert "fresh_env" not in (ROOT / "ci" / "test.sh").read_text()
