from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path

import pytest

from ailab_deploy.adapters.secrets import (
    SecretStore,
    database_password_secret_name,
    mask_secrets,
    vault_variable,
)
from ailab_deploy.errors import ConfigError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generated_once_then_reused(tmp_path: Path) -> None:
    store = SecretStore(tmp_path)
    first = store.get_or_generate("postgresql-ailab.password")
    assert len(first) >= 32
    assert SecretStore(tmp_path).get_or_generate("postgresql-ailab.password") == first
    assert _mode(tmp_path / "secrets") == 0o700
    assert _mode(tmp_path / "secrets" / "postgresql-ailab.password") == 0o600


def test_different_names_get_different_secrets(tmp_path: Path) -> None:
    store = SecretStore(tmp_path)
    assert store.get_or_generate("a") != store.get_or_generate("b")


def test_put_replaces_and_stays_private(tmp_path: Path) -> None:
    store = SecretStore(tmp_path)
    store.put("token", "one")
    path = store.put("token", "two")
    assert store.get("token") == "two"
    assert _mode(path) == 0o600
    assert sorted(p.name for p in store.directory.iterdir()) == ["token"]


def test_loose_permissions_are_refused(tmp_path: Path) -> None:
    store = SecretStore(tmp_path)
    path = store.put("token", "value")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        store.get("token")


def test_loosened_directory_is_tightened(tmp_path: Path) -> None:
    store = SecretStore(tmp_path)
    store.ensure_directory().chmod(0o755)
    store.get_or_generate("x")
    assert _mode(store.directory) == 0o700


def test_unsafe_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="secret name"):
        SecretStore(tmp_path).path("../escape")


def test_values_lists_secrets_only(tmp_path: Path) -> None:
    store = SecretStore(tmp_path)
    one = store.get_or_generate("one")
    store.put("two", "second-value")
    (store.directory / "inventory-vars.yml").write_text("x: y\n")
    assert sorted(store.values()) == sorted([one, "second-value"])
    assert SecretStore(tmp_path / "nowhere").values() == []


def _generate(directory: str, queue: multiprocessing.Queue[str]) -> None:
    queue.put(SecretStore(Path(directory)).get_or_generate("shared"))


def test_concurrent_generation_agrees(tmp_path: Path) -> None:
    queue: multiprocessing.Queue[str] = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=_generate, args=(str(tmp_path), queue)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len({queue.get() for _ in workers}) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Authorization: PVEAPIToken=root@pam!ci=0b9e1c55-5e0c-4e8a-9d1b-6a4f3e2d1c0b",
            "Authorization: PVEAPIToken=root@pam!ci=***",
        ),
        ("PVEAPIToken=ailab@pve!deploy plain-secret", "PVEAPIToken=ailab@pve!deploy ***"),
        ("cookie PVEAuthCookie=PVE:root@pam:6613A1B2::c2ln", "cookie PVEAuthCookie=***"),
        ("postgresql://ailab:hunter2@10.0.0.5:5432/ailab", "postgresql://ailab:***@10.0.0.5:5432/ailab"),
        ("password=hunter2 user=ailab", "password=*** user=ailab"),
        ('{"password": "hunter2"}', '{"password": "***"}'),
        ("db_password: hunter2", "db_password: ***"),
        ("secret 0b9e1c55-5e0c-4e8a-9d1b-6a4f3e2d1c0b leaked", "secret *** leaked"),
        ('password: "{{ vault_db }}"', 'password: "{{ vault_db }}"'),  # a reference, not a secret
        ("Authorization: Bearer s6SbB3-WZ_qL5bhE", "Authorization: Bearer ***"),
        ("AILAB_LLM_API_KEY=s6SbB3-WZ_qL5bhE", "AILAB_LLM_API_KEY=***"),
        ("nothing to hide here", "nothing to hide here"),
    ],
)
def test_mask_patterns(text: str, expected: str) -> None:
    assert mask_secrets(text) == expected


def test_mask_known_values_longest_first() -> None:
    assert mask_secrets("abc abcdef", ["abc", "abcdef"]) == "*** ***"
    assert mask_secrets("x", [""]) == "x"  # an empty secret masks nothing


def test_secret_names_and_vault_references() -> None:
    assert database_password_secret_name("ailab") == "postgresql-ailab.password"
    assert vault_variable("vault:ailab_db") == "vault_ailab_db"
    assert vault_variable("generated") is None
