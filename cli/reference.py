"""Generate docs/cli-reference.md from the commands' own --help (``make docs``)."""

from __future__ import annotations

from collections.abc import Iterator

import click

from cli.main import cli


def walk(cmd: click.Command, path: list[str]) -> Iterator[tuple[list[str], click.Command]]:
    yield path, cmd
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd, info_name=path[-1])
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None:
                yield from walk(sub, [*path, name])


def help_text(path: list[str], cmd: click.Command) -> str:
    parent = None
    for i, name in enumerate(path):
        parent = click.Context(cmd if i == len(path) - 1 else click.Command(name), info_name=name, parent=parent)
    assert parent is not None
    parent.max_content_width = 100
    parent.terminal_width = 100
    return cmd.get_help(parent)


def reference() -> str:
    out = [
        "# Command-line reference",
        "",
        "Generated from each command's `--help` by `make docs` (`python -m cli.reference`);",
        "tests/test_docs.py fails when this file is out of date.",
        "",
    ]
    for path, cmd in walk(cli, ["handover"]):
        out += [f"## {' '.join(path)}", "", "```", help_text(path, cmd).rstrip(), "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    click.echo(reference(), nl=False)
