"""What the layering rules cannot say: handlers take their command typed and leave failures
to dispatch (the rest is import-linter's, in pyproject.toml)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

HANDLERS = Path(__file__).parent.parent / "src" / "hyperv_agent" / "handlers"
#: A success whose ``result`` is false: CheckOnHost's "host is alive", as the C# agent says it.
NOT_A_FAILURE = {"CheckOnHostAnswer"}


def _modules() -> list[Path]:
    return sorted(p for p in HANDLERS.glob("*.py") if p.name != "dispatch.py")


def _routed(tree: ast.Module) -> Iterator[tuple[str, str]]:
    """(command class, handler method) of each ``Route(Class, self.method)``."""
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "Route" and len(node.args) == 2):
            kind, handler = node.args
            if isinstance(handler, ast.Attribute):
                yield ast.unparse(kind), handler.attr


def _methods(tree: ast.Module) -> dict[str, ast.AsyncFunctionDef]:
    return {node.name: node for node in ast.walk(tree) if isinstance(node, ast.AsyncFunctionDef)}


def _isinstance_of(node: ast.AST, name: str) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "isinstance" and bool(node.args)
            and isinstance(node.args[0], ast.Name) and node.args[0].id == name)


@pytest.mark.parametrize("module", _modules(), ids=lambda p: p.name)
def test_handler_takes_its_command_typed_when_routed(module: Path) -> None:
    tree = ast.parse(module.read_text())
    methods = _methods(tree)
    routed = list(_routed(tree))
    assert routed or "def table" not in module.read_text(), module.name
    for kind, name in routed:
        method = methods[name]
        parameter = method.args.args[1]
        assert parameter.annotation is not None and kind in ast.unparse(parameter.annotation), (
            module.name, name, kind)
        checks = [n for n in ast.walk(method) if _isinstance_of(n, parameter.arg)]
        assert checks == [], f"{module.name}: {name} checks its command's type"


@pytest.mark.parametrize("module", _modules(), ids=lambda p: p.name)
def test_handler_builds_no_failed_answer_when_something_fails(module: Path) -> None:
    for node in ast.walk(ast.parse(module.read_text())):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            continue
        failed = any(k.arg == "result" and isinstance(k.value, ast.Constant)
                     and k.value.value is False for k in node.keywords)
        assert not failed or node.func.id in NOT_A_FAILURE, (
            f"{module.name}:{node.lineno} builds a failed {node.func.id}; raise AgentError")
    assert "expect(" not in module.read_text()


SOURCE = HANDLERS.parent


def test_no_module_looks_inside_a_backend_when_it_needs_to_know_which_it_is() -> None:
    """Opening a host returns a bundle (``backends.OpenedHost``) that says it; nothing
    unwraps the round-trip counter or asks whether a backend is the emulator."""
    for module in sorted(SOURCE.rglob("*.py")):
        relative = module.relative_to(SOURCE).as_posix()
        if relative.startswith("emulator/"):
            continue
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id == "isinstance" and len(node.args) == 2:
                assert "EmulatorCim" not in ast.unparse(node.args[1]), relative
            if isinstance(node, ast.Attribute) and node.attr == "inner":
                assert relative in ("cim/counting.py", "hostfs/adminshares.py"), relative


DOCS = SOURCE.parent.parent / "docs"
_CITED = re.compile(r"protocol §(\d+(?:\.\d+)?)((?:(?:, |–| and |-)§\d+(?:\.\d+)?)*)")


def _protocol_sections() -> set[str]:
    text = (DOCS / "protocol.md").read_text()
    return set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", text, re.M))


def test_every_protocol_section_a_comment_cites_is_in_docs_protocol_md() -> None:
    sections = _protocol_sections()
    roots = [SOURCE, SOURCE.parent.parent / "tests", SOURCE.parent.parent / "bench"]
    for module in sorted(p for root in roots for p in root.rglob("*.py")):
        for first, more in _CITED.findall(module.read_text()):
            for cited in [first, *re.findall(r"§(\d+(?:\.\d+)?)", more)]:
                assert cited in sections, f"{module.name} cites protocol §{cited}"


def test_no_comment_cites_a_document_that_is_not_in_the_repository() -> None:
    outside = re.compile(r"hyperv-wmi-v2\.md|cloudstack-protocol\.md|wsman-cim\.md|"
                         r"python-ecosystem\.md|reference §")
    roots = [SOURCE, SOURCE.parent.parent / "tests", SOURCE.parent.parent / "bench"]
    for module in sorted(p for root in roots for p in root.rglob("*.py")):
        if module.name == "test_layout.py":
            continue
        assert not outside.search(module.read_text()), module
