"""README.md's codec table is generated from the registry (issue #19): it must match what
``python -m hvd_compress.cli codecs --update-readme`` writes, so a new built-in codec, or a changed
default, shows up in the README or fails here."""

from __future__ import annotations

import pytest

import hvd_compress
from hvd_compress import cli, codec_table
from hvd_compress.core.registry import builtin_names


@pytest.fixture(scope="module")
def generated():
    return codec_table.markdown()


def test_readme_table_is_the_generated_one(generated):
    in_readme = codec_table.readme_block(codec_table.README.read_text())
    assert (
        in_readme == generated
    ), "README.md's codec table is stale: run python -m hvd_compress.cli codecs --update-readme"


def test_every_builtin_codec_has_a_row():
    names = {row["spec string"].strip("`") for row in codec_table.rows()}
    assert names == set(builtin_names())


def test_bits_come_from_the_specs():
    bits = {row["spec string"].strip("`"): row["bits/value (defaults, 1024 x 1024)"] for row in codec_table.rows()}
    assert bits["qsgd"] == "4.06" and bits["terngrad"] == "1.6" and bits["none"] == "32"
    assert bits["gradiveq"] == hvd_compress.registry()["gradiveq"].bits_note


def test_cli_prints_the_table(capsys, generated):
    assert cli.main(["codecs"]) == 0
    assert capsys.readouterr().out.strip() == generated


def test_update_readme_rewrites_only_the_block(tmp_path, generated):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n\n{codec_table.BEGIN}\n| stale |\n{codec_table.END}\n\noutro\n")
    assert codec_table.update_readme(readme) is True
    assert readme.read_text() == f"intro\n\n{generated}\n\noutro\n"
    assert codec_table.update_readme(readme) is False


def test_readme_without_markers_is_a_clear_error():
    with pytest.raises(ValueError, match="no generated codec table"):
        codec_table.readme_block("no table here")
