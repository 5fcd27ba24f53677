"""Whether a VM's SSH host keys are trusted: first contact, a match, a VM this run created, or an attack.

Pure: the recorded keys come from known_hosts, the offered ones from an SSH handshake, and
``created_by_this_run`` from the provisioning engine, which knows when it cloned the VM itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from ailab_deploy.errors import AilabError

HostKeyPair = tuple[str, str]  # (key type, base64)


class HostKeyMismatch(AilabError):
    """A VM presented a host key other than the one recorded for it."""


class HostKeyAction(Enum):
    RECORD = "record"  # nothing recorded for this address yet
    MATCH = "match"  # every offered key of a recorded type is the recorded one
    REPLACE = "replace"  # the run created the VM: whatever was recorded belonged to an older VM


@dataclass(frozen=True)
class HostKeyVerdict:
    action: HostKeyAction
    message: str

    @property
    def writes(self) -> bool:
        return self.action is not HostKeyAction.MATCH


def judge_host_keys(
    recorded: Iterable[HostKeyPair],
    offered: Iterable[HostKeyPair],
    *,
    created_by_this_run: bool,
    vmid: int,
    host: str,
    known_hosts: str,
) -> HostKeyVerdict:
    """The verdict for ``offered`` keys at ``host``; raises HostKeyMismatch for a changed key
    on a VM this run did not create."""
    recorded_set = set(recorded)
    offered_list = list(offered)
    if not recorded_set:
        message = f"recorded {len(offered_list)} host key(s) (first contact)"
        return HostKeyVerdict(HostKeyAction.RECORD, message)
    changed = [key for key in offered_list if key not in recorded_set]
    recorded_types = {key_type for key_type, _ in recorded_set}
    if created_by_this_run:
        if not changed and set(offered_list) == recorded_set:
            return HostKeyVerdict(HostKeyAction.MATCH, "host keys match")
        return HostKeyVerdict(
            HostKeyAction.REPLACE,
            f"replaced {len(recorded_set)} recorded host key(s) of {host} with "
            f"{len(offered_list)} new one(s): this run created VM {vmid}",
        )
    for key_type, _ in changed:
        if key_type in recorded_types:
            raise HostKeyMismatch(
                f"VM {vmid} at {host} presents a different {key_type} host key than the one recorded in "
                f"{known_hosts}. If the VM was rebuilt outside ailab-deploy, run "
                f"'ssh-keygen -R {host} -f {known_hosts}'; otherwise treat this as an attack"
            )
    return HostKeyVerdict(HostKeyAction.MATCH, "host keys match")
