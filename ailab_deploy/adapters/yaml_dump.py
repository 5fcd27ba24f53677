"""Deterministic YAML for the files the tool writes (inventory, cloud-init snippets)."""

from __future__ import annotations

from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    """Block style, multi-line strings (PEM, pip.conf) as ``|`` literals, no anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True  # a repeated list is written out again: readable, and diffs stay local


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(data: Any) -> str:
    """Sorted keys, block style, ``---`` start."""
    return yaml.dump(
        data, Dumper=_Dumper, sort_keys=True, default_flow_style=False, explicit_start=True, width=4096
    )
