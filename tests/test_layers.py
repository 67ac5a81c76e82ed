"""The layer rule, read off every module's imports: retrainer.config/clock/db <- retrainer.models <-
retrainer.services <- retrainer.tasks <- retrainer.cli / retrainer.demo; nothing imports upward.

A short AST walk rather than import-linter: import-linter finds modules through the file system of
the import path, and with the folders mapped by setuptools' `package-dir` through an editable install
it reports "module retrainer.tasks does not exist"; running it would take a second, regular install
in every test run. This reads the ~50 source files in milliseconds, sees imports inside functions
too, and names the offending line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Where each part of the namespace lives (pyproject.toml, [tool.setuptools] package-dir).
SOURCES = {"retrainer": ROOT / "retrainer", "retrainer.models": ROOT / "models",
           "retrainer.services": ROOT / "services", "retrainer.tasks": ROOT / "tasks"}
LAYERS = [
    {"retrainer", "retrainer.config", "retrainer.clock", "retrainer.db"},
    {"retrainer.models"},
    {"retrainer.services"},
    {"retrainer.tasks"},
    {"retrainer.cli", "retrainer.demo", "retrainer.replay", "retrainer.api"},
]
NO_CELERY = {"retrainer.models", "retrainer.services"}  # logic a test or a script calls without a broker


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            if package == "retrainer" and path.relative_to(folder).parts[0] in ("models", "services", "tasks"):
                continue
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            found[name] = path
    return found


def unit(module: str) -> str:
    """The layer unit a module belongs to: retrainer.services.events -> retrainer.services."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def layer(module: str) -> int:
    return next(i for i, units in enumerate(LAYERS) if unit(module) in units)


def imports(path: Path, module: str) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: -node.level if path.name != "__init__.py" else len(module.split("."))]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            out.append((node.lineno, name))
    return out


ALL = modules()


def test_the_namespace_is_complete() -> None:
    assert {"retrainer.cli", "retrainer.models.base", "retrainer.services.retrain", "retrainer.tasks.app",
            "retrainer.demo.loop", "retrainer.db.records"} <= set(ALL)


@pytest.mark.parametrize("module", sorted(ALL))
def test_imports_only_go_down(module: str) -> None:
    own = layer(module)
    wrong = []
    for line, name in imports(ALL[module], module):
        top = name.split(".")[0]
        if top in ("models", "services", "tasks"):
            wrong.append(f"line {line}: `{name}` is not installed; it is retrainer.{name}")
        elif top == "retrainer" and layer(name) > own:
            wrong.append(f"line {line}: {unit(module)} (layer {own}) imports {name} (layer {layer(name)})")
        elif top in ("celery", "kombu") and unit(module) in NO_CELERY:
            wrong.append(f"line {line}: {unit(module)} imports {name}; Celery belongs to retrainer.tasks")
    assert not wrong, f"{ALL[module].relative_to(ROOT)}:\n" + "\n".join(wrong)
