"""The CLI's module graph: `cli/group.py` owns the click group and imports no other CLI module; command modules
register onto it; only `cli/main.py` gathers them. No module of the CLI imports one that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

import edgetune.cli
from edgetune.cli.group import cli
from edgetune.cli.main import main  # noqa: F401  (importing main registers every command)

CLI_DIR = Path(edgetune.cli.__file__).parent


def cli_imports(path: Path) -> set[str]:
    """The edgetune.cli modules a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found |= {n for n in names
                      if n.startswith("edgetune.cli.") and (CLI_DIR / f"{n.rsplit('.', 1)[1]}.py").exists()}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("edgetune.cli.")}
    return found


def test_the_group_is_a_leaf_and_the_graph_has_no_cycle():
    graph = {f"edgetune.cli.{p.stem}": cli_imports(p) for p in CLI_DIR.glob("*.py") if p.stem != "__init__"}
    assert not graph["edgetune.cli.group"] - {"edgetune.cli.logs"}  # logs: the group's callback sets up logging
    assert all("edgetune.cli.main" not in deps for name, deps in graph.items() if name != "edgetune.cli.main")

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, " -> ".join((*path, name))
        for dep in graph.get(name, ()):
            visit(dep, (*path, name))

    for name in graph:
        visit(name, ())


def test_every_command_module_registers_on_the_group():
    assert {"build", "init", "setup", "doctor", "train", "sweep", "deploy", "report", "plan"} <= set(cli.commands)
