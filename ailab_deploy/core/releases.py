"""The Debian releases the VMs may run, and what each ships that the plan depends on.

The roles pick their own per-release values from the host's facts (roles/*/vars/); this
table is what the controller needs before a host exists: the template's cloud image and
name, the PostgreSQL major that sizing tunes for and verification expects, the Python the
apps run on. A unit test checks that the roles' tables agree with it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DebianRelease:
    major: int
    codename: str
    postgresql: int  # the major version Debian ships (source: debian)
    python: str  # the python3 the apps' venv is made with

    @property
    def template_name(self) -> str:
        return f"debian-{self.major}-cloud"

    @property
    def image_url(self) -> str:
        return (
            f"https://cloud.debian.org/images/cloud/{self.codename}/latest/"
            f"debian-{self.major}-genericcloud-amd64.qcow2"
        )


RELEASES: dict[int, DebianRelease] = {
    13: DebianRelease(13, "trixie", postgresql=17, python="3.13"),
    12: DebianRelease(12, "bookworm", postgresql=15, python="3.11"),
}
DEFAULT_RELEASE = 13
SUPPORTED = ", ".join(str(major) for major in RELEASES)


def release(major: int) -> DebianRelease:
    return RELEASES[major]


def named_release(text: str) -> DebianRelease | None:
    """The release a cloud image URL or template name names ("bookworm", "debian-12-"), if any."""
    lowered = text.lower()
    for candidate in RELEASES.values():
        if candidate.codename in lowered or f"debian-{candidate.major}-" in lowered:
            return candidate
    return None
