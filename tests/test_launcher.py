"""Spec for hvd_compress.run's hooks, in-process: the codec from HVD_COMPRESS replaces a missing or
`Compression.none` compression and nothing else; the hooks go in when the script imports Horovod;
a missing or malformed spec stops before the script runs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hvd_compress import run

ROOT = Path(__file__).resolve().parents[1]
hvd = pytest.importorskip("horovod.torch")


def fake_distributed_optimizer(optimizer, named_parameters=None, compression=hvd.Compression.none, op=None):
    return compression


def hooked(spec="qsgd:bits=4"):
    return run.wrap(fake_distributed_optimizer, hvd, spec, "hvd_compress.torch", "DistributedOptimizer")


@pytest.mark.parametrize(
    "call",
    [
        lambda f: f("opt"),
        lambda f: f("opt", named_parameters=[]),
        lambda f: f("opt", compression=hvd.Compression.none),
        lambda f: f("opt", [], hvd.Compression.none),  # positionally, as Horovod's signature allows
    ],
)
def test_no_compression_becomes_the_codec_from_the_spec(call):
    codec = call(hooked())
    assert codec.describe().startswith("qsgd(bits=4")


def test_a_compression_the_script_chose_is_kept(capsys):
    f = hooked()
    assert f("opt", compression=hvd.Compression.fp16) is hvd.Compression.fp16
    assert "keeping it" in capsys.readouterr().err


def test_each_hooked_call_gets_its_own_codec():
    f = hooked()
    assert f("a") is not f("b")


def test_a_shared_hook_builds_one_codec_for_every_call():
    # DistributedGradientTape: a new tape each step (and each tf.function retrace), one codec state
    f = run.wrap(fake_distributed_optimizer, hvd, "qsgd:bits=4", "hvd_compress.torch", "tape", shared=True)
    first = f("a")
    assert f("b") is first and f("c", compression=hvd.Compression.none) is first
    assert f("d", compression=hvd.Compression.fp16) is hvd.Compression.fp16


def test_only_the_gradient_tape_shares_its_codec():
    assert run.SHARED_CODEC == {"horovod.tensorflow.DistributedGradientTape"}
    assert all(
        f"{module}.{name}" in run.SHARED_CODEC or name == "DistributedOptimizer"
        for module, (names, _) in run.TARGETS.items()
        for name in names
    )


def python(code_or_args, env_spec):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(run.ENV, None)
    if env_spec is not None:
        env[run.ENV] = env_spec
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)


def test_hooks_go_in_when_the_script_imports_horovod_and_torch_scripts_stay_torch_only():
    done = python(
        "import sys; from hvd_compress import run; run.install('onebit');"
        "import horovod.torch as hvd; assert hvd.DistributedOptimizer.__hvd_compress_original__;"
        "assert 'tensorflow' not in sys.modules; print('ok')",
        None,
    )
    assert done.stdout.strip() == "ok", done.stderr[-3000:]


@pytest.mark.parametrize("spec, message", [(None, "HVD_COMPRESS is not set"), ("qsgd:bits", "expected key=value")])
def test_missing_or_malformed_spec_stops_before_the_script(tmp_path, spec, message):
    script = tmp_path / "train.py"
    script.write_text("raise SystemExit('the script ran')\n")
    done = python(["-m", "hvd_compress.run", str(script)], spec)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_script_runs_as_main_with_its_own_argv(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("import sys\nif __name__ == '__main__':\n    print(sys.argv[1:], sys.path[0])\n")
    done = python(["-m", "hvd_compress.run", str(script), "--epochs", "3"], "none")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['--epochs',", "'3']", str(tmp_path)]
