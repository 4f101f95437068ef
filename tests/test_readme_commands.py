"""The README cannot drift from the CLIs: every `coordinator ...` and `worker ...` command line it
shows (in code blocks, in inline code, in the command table) names a real subcommand and only
options that subcommand has, and runs with `--help` appended.

The command table's first column is a synopsis, read the man-page way: `[STUDY]` is an optional
argument, `STUDY` a required one, `[--reason TEXT]` an optional option; each must say what the
click command says. The same holds for the docs/ pages.
"""

from __future__ import annotations

import importlib
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*")
SHELL_SEPARATORS = {"&&", "||", ";", "|"}
SHELL_BLOCKS = {"bash", "sh", "shell", "console"}
"""Code blocks in these languages hold commands; others hold output, diagrams or files."""
NOT_COMMANDS = {"worker lost (signal 9)"}
"""Inline code that starts like a command but quotes a message zoomtune prints."""


def programs() -> dict[str, click.Group]:
    """The installed commands (pyproject's [project.scripts]) and their click groups."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    found = {}
    for name, target in scripts.items():
        module, _, attribute = target.partition(":")
        found[name] = getattr(importlib.import_module(module), attribute)
    return found


@dataclass(frozen=True)
class CommandLine:
    where: str
    """`README.md:123`"""
    tokens: tuple[str, ...]
    synopsis: bool
    """A row of a command table: brackets mark what is optional."""


def command_lines(text: str, name: str, names: set[str]) -> Iterator[CommandLine]:
    """Every command line of one of the programs `names` shown in a markdown page."""
    in_code, shell = False, False
    pending = ""
    for number, line in enumerate(text.splitlines(), start=1):
        where = f"{name}:{number}"
        if line.lstrip().startswith("```"):
            in_code = not in_code
            shell = in_code and line.strip()[3:].strip() in SHELL_BLOCKS
            continue
        if in_code and not shell:
            continue
        if in_code:
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            line, pending = pending + line, ""
            if not any(re.search(rf"(^|\s){p}\s", line) for p in names):
                continue
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError:
                continue
            segment: list[str] = []
            for token in [*tokens, ";"]:
                if token not in SHELL_SEPARATORS:
                    segment.append(token)
                    continue
                if segment and segment[0] in names:
                    yield CommandLine(where, tuple(segment), synopsis=False)
                segment = []
            continue
        table_cell = line.startswith("|") and line.split("|")[1]
        for match in re.finditer(r"`([^`]+)`", line):
            span = match.group(1).replace("\\|", "|")
            if span.split(" ", 1)[0] not in names or " " not in span or span in NOT_COMMANDS:
                continue
            synopsis = bool(table_cell) and match.start() < len(table_cell) + 1
            yield CommandLine(where, tuple(span.split()), synopsis)


def problems(line: CommandLine, groups: Mapping[str, click.Group]) -> list[str]:
    """What in `line` disagrees with the click command it names (empty when nothing)."""
    program, sub, *args = line.tokens
    shown = f"{line.where}: `{' '.join(line.tokens)}`"
    command = groups[program].commands.get(sub)
    if command is None:
        return [f"{shown}: `{program}` has no command {sub!r}"]
    context = click.Context(command, info_name=sub)
    options: dict[str, click.Option] = {}
    for param in command.get_params(context):
        if isinstance(param, click.Option):
            options |= {name: param for name in (*param.opts, *param.secondary_opts)}
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    found: list[str] = []
    positional: list[tuple[str, bool]] = []
    depth, value_of = 0, None
    for token in args:
        bare = token.strip("[]")
        optional = depth > 0 or token.startswith("[")
        depth += token.count("[") - token.count("]")
        if value_of is not None:
            value_of = None
            continue
        if bare in ("", "|"):
            continue
        if bare == "--":
            break  # what follows goes to another program (e.g. Flower)
        if bare.startswith("-"):
            name = bare.split("=", 1)[0]
            option = options.get(name)
            if option is None:
                found.append(f"{shown}: `{program} {sub}` has no option {name}")
                continue
            if line.synopsis and option.required == optional:
                should = "required" if option.required else "optional: write [" + name + " ...]"
                found.append(f"{shown}: {name} is {should}")
            if not option.is_flag and "=" not in bare:
                value_of = name
            continue
        positional.append((bare, optional))
    variadic = any(a.nargs == -1 for a in arguments)
    if len(positional) > len(arguments) and not variadic:
        found.append(f"{shown}: `{program} {sub}` takes {len(arguments)} argument(s)")
    if line.synopsis:
        for argument in arguments[len(positional) :]:
            if argument.required:
                found.append(f"{shown}: the required argument {argument.human_readable_name}")
        for (token, optional), argument in zip(positional, arguments, strict=False):
            if PLACEHOLDER.fullmatch(token) and argument.required == optional:
                want = token if argument.required else f"[{token}]"
                found.append(f"{shown}: the command has {want}")
    return found


def runs_with_help(line: CommandLine, groups: Mapping[str, click.Group]) -> str | None:
    """Run the line with `--help` appended; None when it printed its help, else the output."""
    program, *args = line.tokens
    clean = [t.strip("[]") for t in args if t.strip("[]") not in ("", "|")]
    if "--" in clean:
        clean = clean[: clean.index("--")]
    result = CliRunner().invoke(groups[program], [*clean, "--help"], catch_exceptions=False)
    if result.exit_code == 0 and "Usage:" in result.output:
        return None
    return f"{line.where}: `{' '.join(line.tokens)} --help` exited {result.exit_code}:\n" + (
        result.output
    )


def every_line() -> list[CommandLine]:
    names = set(programs())
    return [
        line
        for page in PAGES
        for line in command_lines(page.read_text(encoding="utf-8"), page.name, names)
    ]


def test_the_readme_shows_commands_of_both_programs_and_the_command_table() -> None:
    lines = every_line()
    shown = {" ".join(line.tokens[:2]) for line in lines}
    assert {"coordinator start", "coordinator report", "worker start", "worker gpus"} <= shown
    assert sum(line.synopsis for line in lines) >= 8  # the coordinator command table


def test_every_command_line_in_the_readme_and_docs_matches_its_command() -> None:
    groups = programs()
    found = [problem for line in every_line() for problem in problems(line, groups)]
    assert found == [], "\n".join(found)


def test_every_command_line_in_the_readme_and_docs_runs_with_help() -> None:
    groups = programs()
    failures = [f for line in every_line() if (f := runs_with_help(line, groups)) is not None]
    assert failures == [], "\n\n".join(failures)


@pytest.mark.parametrize(
    ("page", "problem"),
    [
        ("```bash\ncoordinator frobnicate study.toml\n```", "has no command 'frobnicate'"),
        ("```bash\npip install . && coordinator start s.toml --bogus 3\n```", "no option --bogus"),
        ("Run `worker start --gpu all` on each node.", "no option --gpu"),
        ("| `coordinator export STUDY` | x |", "the command has [STUDY]"),
        ("| `coordinator cancel [STUDY]` | x |", "the command has STUDY"),
        ("| `coordinator delete STUDY --yes` | x |", "--yes is optional"),
        ("| `coordinator plan [--workers N]` | x |", "the required argument STUDY_FILE"),
        ("```sh\ncoordinator list extra\n```", "takes 0 argument(s)"),
    ],
)
def test_the_check_finds_a_command_that_drifted(page: str, problem: str) -> None:
    groups = programs()
    lines = list(command_lines(page, "README.md", set(groups)))
    assert len(lines) == 1
    assert any(problem in p for p in problems(lines[0], groups)), problems(lines[0], groups)


def test_a_command_that_does_not_exist_fails_with_help_too() -> None:
    groups = programs()
    [line] = command_lines("```bash\ncoordinator frobnicate\n```", "README.md", set(groups))
    assert runs_with_help(line, groups) is not None
