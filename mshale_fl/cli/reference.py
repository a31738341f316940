"""The CLI reference in Markdown, generated from the Typer app so the docs cannot drift.

`python -m mshale_fl.cli.reference > docs/cli.md`; a test fails when docs/cli.md is stale.
"""

from __future__ import annotations

import click
import typer

from mshale_fl.cli import app


def _commands(group: click.Group, prefix: str) -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    context = click.Context(group)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        if command is None or command.hidden:
            continue
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            found.extend(_commands(command, path))
        else:
            found.append((path, command))
    return found


def _usage(path: str, command: click.Command) -> str:
    context = click.Context(command, info_name=path)
    return " ".join(command.collect_usage_pieces(context))


def render() -> str:
    root = typer.main.get_command(app)
    assert isinstance(root, click.Group)
    lines = [
        "# mshale-fl command reference",
        "",
        "Generated from the code by `python -m mshale_fl.cli.reference`; do not edit by hand.",
        "Every command also takes `--help`. Settings come from `MSHALE_*` environment variables.",
        "",
    ]
    for path, command in _commands(root, "mshale-fl"):
        lines += [f"## `{path}`", "", (command.help or "").strip().split("\n\n")[0], "", "```", f"{path} {_usage(path, command)}", "```", ""]
        rows = []
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden and param.name != "help":
                names = ", ".join(f"`{opt}`" for opt in param.opts + param.secondary_opts)
                rows.append(f"| {names} | {(param.help or '').replace('|', '/')} |")
            elif isinstance(param, click.Argument):
                rows.append(f"| `{param.human_readable_name}` | argument |")
        if rows:
            lines += ["| option | meaning |", "|---|---|", *rows, ""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
