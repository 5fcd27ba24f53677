"""Imports point one way: cli -> pipeline -> adapters -> core; the lab sits beside them.

Every ``import`` in ailab_deploy (also those inside functions) is read from the source.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ailab_deploy"

# What each layer may import from the project (besides itself and ailab_deploy.errors).
ALLOWED = {
    "core": {"core"},
    "adapters": {"core", "adapters"},
    "pipeline": {"core", "adapters", "pipeline"},
    "cli": {"core", "adapters", "pipeline", "cli", "lab"},  # the CLI mounts the lab's commands
    "lab": {"lab"},
}
# The lab reuses product pieces directly (moving these behind the CLI is future work).
LAB_REACHES_INTO = {
    ("lab.assemble", "adapters.bandwidth_probe"),
    ("lab.assemble", "adapters.known_hosts"),
    ("lab.assemble", "adapters.ledger"),
    ("lab.assemble", "adapters.statedir"),
    ("lab.emulator.settings", "core.units"),
    ("lab.emulator.propstr", "core.units"),
    ("lab.scratch_vms", "adapters.known_hosts"),
    ("lab.scratch_vms", "adapters.ledger"),
    ("lab.scratch_vms", "adapters.proxmox"),
    ("lab.scratch_vms", "adapters.statedir"),
    ("lab.scratch_vms", "core.loader"),
    ("lab.scratch_vms", "core.plan"),
    ("lab.scratch_vms", "pipeline.provision"),
    ("lab.secret_scan", "adapters.secrets"),  # the scan searches for what the store holds
    ("lab.secret_scan", "adapters.statedir"),
    # the lab deploys as a user would: the token it makes holds the one list of privileges
    ("lab.assemble", "adapters.proxmox"),
    ("lab.assemble", "core.loader"),
    ("lab.assemble", "core.privileges"),
    ("lab.control", "core.privileges"),
    ("lab.deploy_token", "core.privileges"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path) -> set[str]:
    """Modules of ailab_deploy that ``path`` imports, without the ``ailab_deploy.`` prefix."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith("ailab_deploy."):
                found.add(name.removeprefix("ailab_deploy."))
    # ``from ailab_deploy.cli import up`` names the module cli.up; ``from x.y import Class`` adds
    # a name that is not a module, which the layer check ignores unless it is one.
    return {name for name in found if _is_module(name)}


def _is_module(name: str) -> bool:
    base = PACKAGE.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def violations() -> list[str]:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = _module_name(path)
        layer = importer.split(".")[0]
        if layer not in ALLOWED:  # errors.py, __init__, __main__ (the entry point)
            continue
        for imported in sorted(project_imports(path)):
            target = imported.split(".")[0]
            if target == "errors" or target in ALLOWED[layer]:
                continue
            if layer == "lab" and (importer, imported) in LAB_REACHES_INTO:
                continue
            wrong.append(f"{importer} imports {imported}")
    return wrong


def test_imports_follow_the_layers() -> None:
    assert violations() == []


def test_every_listed_lab_exception_is_still_real() -> None:
    actual = {
        (_module_name(path), imported)
        for path in PACKAGE.joinpath("lab").rglob("*.py")
        for imported in project_imports(path)
    }
    assert actual >= LAB_REACHES_INTO, sorted(LAB_REACHES_INTO - actual)


@pytest.mark.parametrize(
    ("importer", "source", "expected"),
    [
        ("core/sizing.py", "from ailab_deploy.adapters.ledger import Ledger\n", ["adapters.ledger"]),
        (
            "adapters/ssh.py",
            "def f():\n    from ailab_deploy.pipeline import up\n",
            ["pipeline", "pipeline.up"],
        ),
        ("pipeline/up.py", "import ailab_deploy.cli.output\n", ["cli.output"]),
        ("core/units.py", "from ailab_deploy.core.plan import Plan\n", []),
    ],
)
def test_the_check_sees_a_wrong_import(
    importer: str, source: str, expected: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checker catches a forbidden import wherever it is written, and passes an allowed one."""
    copy = tmp_path / "ailab_deploy"
    for path in PACKAGE.rglob("*.py"):
        if path.name in ("__init__.py",) or path.relative_to(PACKAGE).parts[0] in ALLOWED:
            target = copy / path.relative_to(PACKAGE)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("", encoding="utf-8")
    (copy / importer).write_text(source, encoding="utf-8")
    monkeypatch.setattr(__import__(__name__, fromlist=["PACKAGE"]), "PACKAGE", copy)
    layer_of_importer = importer.replace("/", ".").removesuffix(".py")
    assert [v.split(" imports ")[1] for v in violations() if v.startswith(layer_of_importer)] == expected
