"""Every command's --help is pinned: moving code around must not change what users read.

The snapshot (tests/snapshots/help.json) was written from the CLI before the package
layout changed. After a deliberate change to an option or a help text, rewrite it with
`python tests/test_cli_help.py --update` and review the diff.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import typer
from typer.testing import CliRunner

from synccurate.cli import app

SNAPSHOT = Path(__file__).parent / "snapshots" / "help.json"
SCREEN = {"COLUMNS": "100", "TERM": "dumb", "NO_COLOR": "1"}  # the same text on every machine


def help_texts() -> dict[str, str]:
    """`synccurate … --help` of the app, every group and every command, by command line."""
    texts: dict[str, str] = {}

    def visit(command: click.Command, words: list[str]) -> None:
        result = CliRunner().invoke(app, [*words, "--help"], env=SCREEN)
        assert result.exit_code == 0, result.output
        texts[" ".join(words)] = result.output
        for name, sub in getattr(command, "commands", {}).items():
            visit(sub, [*words, name])

    visit(typer.main.get_command(app), [])
    return texts


def test_every_help_text_is_the_pinned_one():
    pinned = json.loads(SNAPSHOT.read_text())
    now = help_texts()
    assert sorted(now) == sorted(pinned), "commands were added or removed"
    for words, text in pinned.items():
        assert now[words] == text, f"`synccurate {words} --help` changed"


if __name__ == "__main__" and sys.argv[1:] == ["--update"]:
    SNAPSHOT.write_text(json.dumps(help_texts(), indent=1, sort_keys=True) + "\n")
