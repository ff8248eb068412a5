"""The package's shape: no import circle, ai-toolkit imported only by ``aitk/runtime/``, and a cheap top-level import.

Imports are read from the source (``ast``), function-level ones included, so
an import moved into a function to dodge a circle is still found.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "extensions" / "zero_prior"
AI_TOOLKIT_ROOTS = ("toolkit", "extensions_built_in", "jobs")
RUNTIME = "zero_prior.aitk.runtime"


def _module_name(path: Path) -> str:
    parts = ["zero_prior", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path) -> list[str]:
    """Every module ``name`` imports (absolute names), from any scope."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            # "from .x import y" imports the submodule x.y when there is one, else the name y from x itself
            submodules = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in MODULES]
            found += submodules + ([target] if len(submodules) < len(node.names) else [])
    return found


def _graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (an import of ``a.b`` also runs ``a``)."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        edges = set()
        for target in _imports(name, path):
            if target.startswith("extensions.zero_prior"):
                target = target[len("extensions."):]
            if target in MODULES and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == 1:
                return stack[stack.index(child):] + [child]
            if child not in state and (found := visit(child)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_modules() -> None:
    assert _cycle(_graph()) is None


def test_no_import_cycle_between_subpackages() -> None:
    """The folders form a one-way chain too (``placeholder`` never needs ``weights``, and so on)."""

    def folder(name: str) -> str:
        parts = name.split(".")
        return ".".join(parts[:2]) if len(parts) > 2 or MODULES[name].name == "__init__.py" else "zero_prior"

    graph: dict[str, set[str]] = {}
    for name, edges in _graph().items():
        graph.setdefault(folder(name), set()).update(folder(e) for e in edges if folder(e) != folder(name))
    for node in list(graph):
        graph[node].discard("zero_prior")  # the package root only holds lazy names and the version
    assert _cycle(graph) is None


def test_only_aitk_runtime_imports_ai_toolkit() -> None:
    offenders = sorted(
        f"{name} imports {target}"
        for name, path in MODULES.items()
        if not name.startswith(RUNTIME)
        for target in _imports(name, path)
        if target.split(".")[0] in AI_TOOLKIT_ROOTS
    )
    assert offenders == []
    trainer = f"{RUNTIME}.trainer"
    assert any(t.split(".")[0] in AI_TOOLKIT_ROOTS for t in _imports(trainer, MODULES[trainer]))


@pytest.mark.parametrize("module", ["zero_prior", "zero_prior.experiment.spec", "zero_prior.cli", "zero_prior.models",
                                    "zero_prior.aitk.settings", "zero_prior.cli.demo"])
def test_light_modules_do_not_load_torch(module: str) -> None:
    """What the CLI's --help and the config checks import must not pull in torch or diffusers."""
    heavy = "('torch', 'diffusers', 'transformers')"
    code = f"import sys, {module}; print(sorted(m for m in {heavy} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


COMFYUI_ROOTS = ("comfy", "comfy_extras", "comfy_api", "folder_paths", "nodes", "execution", "server")
COMFYUI_GLUE = ("zero_prior.comfyui.loading", "zero_prior.comfyui.nodes")


def test_only_the_comfyui_glue_imports_comfyui() -> None:
    """ComfyUI is imported in two modules of ``comfyui/``; its tokenizer, install and checkout modules run without."""
    importers = sorted(name for name, path in MODULES.items()
                       if any(target.split(".")[0] in COMFYUI_ROOTS for target in _imports(name, path)))
    assert importers == sorted(COMFYUI_GLUE)
