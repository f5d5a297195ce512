"""Exit codes and where usage errors point: 0 ok, 2 for a user mistake, 130 for Ctrl-C."""

from __future__ import annotations

import pytest

from domainvlm.cli import main


def test_unrecognized_option_names_the_sub_command(capsys):
    # was "domainvlm: error: unrecognized arguments: ... (see domainvlm --help)": the top-level help
    assert main(["train", "max_steps=1", "--bogus"]) == 2
    assert capsys.readouterr().err.strip() == ("domainvlm train: error: unrecognized arguments: --bogus "
                                               "(see domainvlm train --help)")
    assert main(["calibrate", "--max-new-tokens", "4"]) == 2
    assert "domainvlm calibrate: error: unrecognized arguments: --max-new-tokens 4" in capsys.readouterr().err
    # key=value overrides after the bad flag are overrides, not 'unrecognized' too
    assert main(["train", "data=x.jsonl", "--bogus", "output_dir=y", "max_steps=1"]) == 2
    assert capsys.readouterr().err.strip() == ("domainvlm train: error: unrecognized arguments: --bogus "
                                               "(see domainvlm train --help)")


@pytest.mark.parametrize("cmd, field", [("train", "max_steps="), ("train-expert", "max_steps="),
                                        ("train-classify", "max_steps=")])
def test_recipe_help_lists_every_config_field(capsys, cmd, field):
    """train-classify's --help listed no config field, unlike train and train-expert."""
    assert main([cmd, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"  {field}" in out and "seed=0" in out


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == 2  # was 1
    out = capsys.readouterr()
    assert "usage: domainvlm" in out.err and not out.out


def test_version_and_help_exit_0(capsys):
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("domainvlm ")
    assert main(["export", "--help"]) == 0


def test_ctrl_c_is_130(monkeypatch, capsys):
    from domainvlm.commands import train

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "run", interrupted)
    assert main(["train", "max_steps=1"]) == 130
    assert capsys.readouterr().err.strip() == "domainvlm: interrupted"
