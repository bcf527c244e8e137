"""Generate docs/cli-reference.md from the commands' own --help (``make docs``)."""

from __future__ import annotations

from collections.abc import Iterator

import click

from .main import cli


def walk(cmd: click.Command, path: list[str]) -> Iterator[tuple[list[str], click.Command]]:
    yield path, cmd
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd, info_name=path[-1])
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None:
                yield from walk(sub, [*path, name])


def help_text(path: list[str], cmd: click.Command) -> str:
    """The command's --help exactly as a user sees it (context settings of the group applied)."""
    ctx = cli.make_context(path[0], [], resilient_parsing=True, terminal_width=100)
    node: click.Command = cli
    for name in path[1:]:
        assert isinstance(node, click.Group)
        sub = node.get_command(ctx, name)
        assert sub is not None
        ctx = sub.make_context(name, [], parent=ctx, resilient_parsing=True)
        node = sub
    return node.get_help(ctx)


def reference() -> str:
    out = [
        "# Command-line reference",
        "",
        "Generated from each command's `--help` by `make docs` (`python -m handover_vault.cli.reference`);",
        "tests/test_docs.py fails when this file is out of date.",
        "",
    ]
    for path, cmd in walk(cli, ["handover"]):
        out += [f"## {' '.join(path)}", "", "```", help_text(path, cmd).rstrip(), "```", ""]
    return "\n".join(out)


if __name__ == "__main__":
    click.echo(reference(), nl=False)
