"""The callback that freezes the controller's heap before each worker fork: enabled and working."""

from __future__ import annotations

import configparser
import gc
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "playbooks" / "callback_plugins" / "ailab_fork_friendly.py"


def test_the_projects_ansible_cfg_enables_it_beside_the_playbook() -> None:
    config = configparser.ConfigParser()
    config.read(REPO / "ansible.cfg")
    enabled = [name.strip() for name in config["defaults"]["callbacks_enabled"].split(",")]
    assert "ailab_fork_friendly" in enabled
    assert PLUGIN.is_file()  # playbook-adjacent: Ansible finds it without callback_plugins set


def test_a_task_start_freezes_every_object_that_exists() -> None:
    spec = importlib.util.spec_from_file_location("ailab_fork_friendly", PLUGIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    callback = module.CallbackModule()
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        objects = [[index] for index in range(1000)]
        callback.v2_runner_on_start(host=None, task=None)
        assert gc.get_freeze_count() >= len(objects)
    finally:
        gc.unfreeze()
