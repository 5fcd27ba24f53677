"""Read vms.yaml into a :class:`Plan`, or report every problem with its file and line.

Problems come out as ``vms.yaml:31: vms[1].memory: <what is wrong>``; the plan
is never half-accepted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from ailab_deploy.core.plan import Plan
from ailab_deploy.core.problems import Problem
from ailab_deploy.core.sizing import sizing_findings
from ailab_deploy.core.validate import check_plan
from ailab_deploy.errors import PlanError

PathParts = Sequence[str | int]


def format_path(parts: PathParts) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def resolve_plan_path(text: str, plan_dir: Path) -> Path:
    """A path written in the plan: ``~`` expanded, relative paths taken from the plan's folder."""
    path = Path(text).expanduser()
    return path if path.is_absolute() else plan_dir / path


@dataclass(frozen=True)
class LoadedPlan:
    """A valid plan, where it came from, and how to point back into the file."""

    plan: Plan
    path: Path
    display_name: str
    text_sha256: str
    tree: Any = field(repr=False)
    warnings: tuple[str, ...] = ()

    def resolve(self, text: str) -> Path:
        return resolve_plan_path(text, self.path.absolute().parent)

    def line_of(self, parts: PathParts) -> int:
        return _line_of(self.tree, parts)

    def where(self, parts: PathParts) -> str:
        """``file:line: path`` prefix for a message about ``parts``."""
        return f"{self.display_name}:{self.line_of(parts)}: {format_path(parts)}"


def private_key_of(loaded: LoadedPlan) -> Path | None:
    """The SSH private key file the plan names for reaching the VMs, resolved next to the plan."""
    key = loaded.plan.template.ssh_private_key_file
    if key is None:
        return None
    return loaded.resolve(key)


def _line_of(tree: Any, parts: PathParts) -> int:
    """1-based line of the deepest node of ``parts`` present in the YAML tree."""
    line = 0
    node = tree
    for part in parts:
        if isinstance(node, CommentedMap) and isinstance(part, str) and part in node:
            line = node.lc.key(part)[0]
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            line = node.lc.item(part)[0]
            node = node[part]
        else:
            if line == 0 and isinstance(node, CommentedMap | CommentedSeq) and node.lc.line:
                line = node.lc.line
            break
    return line + 1


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(key): _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(item) for item in node]
    return node


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _pydantic_message(error: ErrorDetails) -> tuple[list[str | int], str]:
    location = [part for part in error["loc"] if isinstance(part, str | int)]
    kind = error["type"]
    if kind == "extra_forbidden":
        return location, f"unknown key {location[-1]!r}"
    if kind == "missing":
        return location, "required key is missing"
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if "input" in error and kind not in {"value_error"}:
        message = f"{message} (got {_describe(error['input'])})"
    return location, message


def parse_plan_text(text: str, display_name: str) -> tuple[Any, list[str]]:
    """The YAML tree of ``text``, or the problems that keep it from being a plan."""
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        tree = yaml.load(text)
    except DuplicateKeyError as error:
        line = error.problem_mark.line + 1 if error.problem_mark else 1
        problem = (error.problem or "duplicate key").replace("\n", " ")
        return None, [f"{display_name}:{line}: duplicate key: {problem}"]
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else 1
        problem = error.problem or error.context or "cannot be parsed"
        return None, [f"{display_name}:{line}: invalid YAML: {problem}"]
    except YAMLError as error:
        return None, [f"{display_name}:1: invalid YAML: {error}"]
    if tree is None:
        return None, [f"{display_name}:1: the plan is empty"]
    if not isinstance(tree, CommentedMap):
        return None, [
            f"{display_name}:1: the plan must be a mapping of sections "
            f"(version, proxmox, host, ...), got {_describe(tree)}"
        ]
    return tree, []


def load_plan_text(text: str, display_name: str = "vms.yaml", path: Path | None = None) -> LoadedPlan:
    tree, problems = parse_plan_text(text, display_name)
    if problems:
        raise PlanError(problems)
    try:
        plan = Plan.model_validate(_plain(tree))
    except ValidationError as error:
        located = [_pydantic_message(detail) for detail in error.errors()]
        raise PlanError(
            [
                f"{display_name}:{_line_of(tree, parts)}: {format_path(parts) or '(top)'}: {msg}"
                for parts, msg in located
            ]
        ) from None
    findings: list[Problem] = check_plan(plan)
    if not any(p.severity == "error" for p in findings):
        findings += sizing_findings(plan)  # sizing builds on a plan without errors
    errors = [
        f"{display_name}:{_line_of(tree, p.path)}: {format_path(p.path)}: {p.message}"
        for p in findings
        if p.severity == "error"
    ]
    if errors:
        raise PlanError(errors)
    warnings = tuple(
        f"{display_name}:{_line_of(tree, p.path)}: {format_path(p.path)}: {p.message}"
        for p in findings
        if p.severity == "warning"
    )
    return LoadedPlan(
        plan=plan,
        path=path or Path(display_name),
        display_name=display_name,
        text_sha256=hashlib.sha256(text.encode()).hexdigest(),
        tree=tree,
        warnings=warnings,
    )


def load_plan(path: Path) -> LoadedPlan:
    """Read and check the plan at ``path``; raise :class:`PlanError` listing every problem."""
    display_name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError([f"{display_name}: no such file (pass --plan PATH)"]) from None
    except IsADirectoryError:
        raise PlanError([f"{display_name}: is a directory, not a plan file"]) from None
    except UnicodeDecodeError as error:
        raise PlanError([f"{display_name}: not UTF-8 text ({error.reason})"]) from None
    except OSError as error:
        raise PlanError([f"{display_name}: cannot be read ({error.strerror})"]) from None
    return load_plan_text(text, display_name, path)
