"""Load the VM backend named in settings (``null``, ``containers`` or ``module:attr``).

The containers module is imported only when asked for, so the emulator runs without it.
A factory found there is called with the keyword arguments it accepts among
``lab_dir`` (Path), ``settings`` (Settings) and ``node`` (str).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from ailab_deploy.errors import ConfigError
from ailab_deploy.lab.backend import NullBackend, VMBackend

from .settings import Settings

_CONTAINER_MODULES = ("ailab_deploy.lab.containers.backend", "ailab_deploy.lab.containers")
_FACTORY_NAMES = ("create_backend", "make_backend", "ContainerBackend", "ContainersBackend", "Backend")


def _build(factory: Any, settings: Settings) -> VMBackend:
    offered = {"lab_dir": settings.lab_dir, "settings": settings, "node": settings.node}
    try:
        accepted = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        accepted = {}  # type: ignore[assignment]
    backend = factory(**{k: v for k, v in offered.items() if k in accepted})
    if not isinstance(backend, VMBackend):
        raise ConfigError(f"backend {factory!r} does not implement VMBackend")
    return backend


def load_backend(settings: Settings) -> VMBackend:
    name = settings.backend
    if name == "null":
        return NullBackend()
    if ":" in name:
        module_name, attr = name.split(":", 1)
        try:
            return _build(getattr(importlib.import_module(module_name), attr), settings)
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"settings.json: backend '{name}': {err}") from err
    if name == "containers":
        for module_name in _CONTAINER_MODULES:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            for attr in _FACTORY_NAMES:
                if hasattr(module, attr):
                    return _build(getattr(module, attr), settings)
        raise ConfigError(
            "settings.json: backend 'containers' is not available "
            "(ailab_deploy.lab.containers offers no backend factory)"
        )
    raise ConfigError(f"settings.json: unknown backend '{name}' (use null, containers or module:attr)")
