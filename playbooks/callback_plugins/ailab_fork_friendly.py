"""Freeze the controller's heap before each task's worker is forked.

Ansible forks one worker process per task and host. A garbage collection in a worker walks the
objects it inherited, and each page it touches is copied: with the heap frozen (gc.freeze) the
collector leaves inherited objects alone. The price: a reference cycle among frozen objects that
becomes garbage later stays in memory until the run ends (the run's peak memory did not change).
"""

from __future__ import annotations

import gc

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: ailab_fork_friendly
    type: aggregate
    short_description: gc.freeze() before each worker fork
    description:
        - Calls gc.freeze() when a task is about to start on a host, just before its worker is forked,
          so the worker's garbage collections do not copy the inherited heap page by page.
    requirements:
        - enabled in callbacks_enabled
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "ailab_fork_friendly"
    CALLBACK_NEEDS_ENABLED = True

    def v2_runner_on_start(self, host: object, task: object) -> None:
        gc.freeze()
