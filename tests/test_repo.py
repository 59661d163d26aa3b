"""Repository hygiene: lint clean, README commands in step with CI, docstrings on packages."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff not installed (test extra)")
    proc = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [
        line.strip()
        for line in readme.splitlines()
        if "python -m pytest" in line and line.strip().startswith("python3 -m venv")
    ]
    assert commands, "README lost its test command"
    assert commands[0] in ci


def test_every_package_has_a_docstring():
    import ast

    missing = []
    for folder in ("node", "plugins", "_core", "proto/eap/v1"):
        for init in (ROOT / folder).rglob("__init__.py"):
            if "migrations" in init.parts:
                continue
            if ast.get_docstring(ast.parse(init.read_text())) is None:
                missing.append(str(init.relative_to(ROOT)))
    assert not missing, missing


def _eap_imports(path: Path) -> set[str]:
    """The ``eap.*`` modules a source file imports, at any depth (lazy imports included)."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("eap.")}


@pytest.mark.parametrize(
    ("floor", "allowed"),
    [
        # shared record types: nothing of the node but the error hierarchy
        ("records", ("eap.node.records", "eap.node.errors")),
        # the store: records, errors and itself; never the domain, federation or API above it
        ("store", ("eap.node.records", "eap.node.errors", "eap.node.store")),
    ],
)
def test_lower_floors_never_import_the_floors_above(floor, allowed):
    wrong = {
        f"{path.relative_to(ROOT)}: {module}"
        for path in (ROOT / "node" / floor).rglob("*.py")
        for module in _eap_imports(path)
        if not module.startswith(allowed)
    }
    assert not wrong, sorted(wrong)
