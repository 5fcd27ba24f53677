"""The template image: a Debian 13 or 12 root filesystem like a Debian generic cloud image.

Built in two cached stages so that changing the guest configuration does not repeat the
download: ``base-<hash>`` (debootstrap from the host's Debian mirror) and
``template-<hash>`` (a copy of the base plus the lab configuration). Each key is a hash of
its whole recipe (the release's suite included), so a stage is rebuilt exactly when its
recipe changes, and each release has stages of its own.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ailab_deploy.errors import LabError
from ailab_deploy.lab.containers.proc import run

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("/var/cache/ailab-deploy/images")
CACHE_ENV = "AILAB_IMAGE_CACHE"
HOST_SOURCES = (Path("/etc/apt/sources.list.d"), Path("/etc/apt/sources.list"))
FALLBACK_MIRROR = "http://deb.debian.org/debian"
# Debian releases the lab can build, by major version (what a plan's template.release names).
SUITES = {13: "trixie", 12: "bookworm"}
DEFAULT_RELEASE = 13

# What a Debian generic cloud image provides that matters for Ansible and the roles.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "systemd-resolved",  # makes cloud-init's nameserver/searchdomain (networkd DNS=) effective
    "dbus",
    "libpam-systemd",
    "openssh-server",
    "openssh-sftp-server",
    "sudo",
    "python3",
    "python3-apt",
    "python3-cffi-backend",  # debootstrap cannot resolve cloud-init's virtual cffi dependency
    "cloud-init",
    "locales",
    "tzdata",
    "ca-certificates",
    "iproute2",
    "netbase",
    "curl",
    "acl",  # Ansible's become_user to an unprivileged user needs setfacl
    "procps",
    "less",
)

# Units that cannot work or only slow a container down (and would try to reach the network).
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-timesyncd.service",
    "console-getty.service",
    "getty@tty1.service",
)
ENABLED_UNITS = ("systemd-networkd.service", "systemd-resolved.service", "ssh.service")

CLOUD_CFG = """\
# ailab-deploy lab: NoCloud only (seed written by the lab backend), networkd renderer.
datasource_list: [NoCloud, None]
system_info:
  network:
    renderers: [networkd]
    activators: [networkd]
locale: C.UTF-8
"""


@dataclass(frozen=True)
class Recipe:
    """Everything that determines the image; its hashes are the cache keys."""

    suite: str
    mirror: str
    security_mirror: str | None
    packages: tuple[str, ...] = PACKAGES
    variant: str = "minbase"
    masked_units: tuple[str, ...] = MASKED_UNITS
    enabled_units: tuple[str, ...] = ENABLED_UNITS
    files: dict[str, str] = field(default_factory=dict)
    removed_files: tuple[str, ...] = ()

    def base_key(self) -> str:
        base = {k: v for k, v in asdict(self).items() if k in ("suite", "mirror", "variant")}
        base["packages"] = sorted(self.packages)
        return _digest(base)

    def template_key(self) -> str:
        return _digest({"base": self.base_key(), **asdict(self)})


@dataclass(frozen=True)
class TemplateImage:
    rootfs: Path
    key: str
    seconds: float
    cached: bool
    debootstrap_seconds: float | None = None  # None: the base stage came from the cache


def _digest(data: object) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def cache_dir_from_env() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


def host_mirrors() -> tuple[str, str | None]:
    """The Debian mirror (and security mirror) the host's apt uses, so guests use the same."""
    mirror, security = None, None
    for source in _source_entries():
        uri, suites = source
        if any(s.endswith("-security") for s in suites):
            security = security or uri
        elif "debian" in uri:
            mirror = mirror or uri
    return mirror or FALLBACK_MIRROR, security


def _source_entries() -> Iterator[tuple[str, list[str]]]:
    directory, legacy = HOST_SOURCES
    files = sorted(directory.glob("*.sources")) if directory.is_dir() else []
    for path in files:
        for stanza in path.read_text().split("\n\n"):
            fields = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith(("#", " ")):
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and "uris" in fields:
                yield fields["uris"].split()[0], fields.get("suites", "").split()
    lists = [legacy, *sorted(directory.glob("*.list"))] if directory.is_dir() else [legacy]
    for path in lists:
        if path.is_file():
            for line in path.read_text().splitlines():
                words = [w for w in line.split() if not w.startswith("[")]
                if len(words) >= 3 and words[0] == "deb":
                    yield words[1], [words[2]]


def suite_of(release: int) -> str:
    if release not in SUITES:
        raise LabError(
            f"Debian {release} is not a release the lab builds (releases: {', '.join(map(str, SUITES))})"
        )
    return SUITES[release]


def apt_sources(release: int, mirror: str, security: str | None) -> dict[str, str]:
    """The guest's apt sources as its cloud image has them: Debian 13 in deb822
    (``debian.sources``, no ``sources.list``), Debian 12 one-line ``sources.list``."""
    suite = suite_of(release)
    if release >= 13:
        stanzas = [f"Types: deb\nURIs: {mirror}\nSuites: {suite} {suite}-updates\nComponents: main\n"]
        if security:
            stanzas.append(f"Types: deb\nURIs: {security}\nSuites: {suite}-security\nComponents: main\n")
        keyring = "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        return {"/etc/apt/sources.list.d/debian.sources": "\n".join(s + keyring for s in stanzas)}
    lines = [f"deb {mirror} {suite} main", f"deb {mirror} {suite}-updates main"]
    if security:
        lines.append(f"deb {security} {suite}-security main")
    return {"/etc/apt/sources.list": "\n".join(lines) + "\n"}


def default_recipe(release: int = DEFAULT_RELEASE) -> Recipe:
    mirror, security = host_mirrors()
    suite = suite_of(release)
    files = {
        **apt_sources(release, mirror, security),
        "/etc/cloud/cloud.cfg.d/90_ailab_lab.cfg": CLOUD_CFG,
        "/etc/locale.gen": "en_US.UTF-8 UTF-8\n",
        "/etc/default/locale": "LANG=C.UTF-8\n",
        "/etc/timezone": "Etc/UTC\n",
        "/etc/hostname": "localhost\n",
        # The lab network is IPv4 only: waiting for IPv6 router advertisements that never come
        # would hold network-online (and cloud-init) back for ~13 s. cloud-init names eth0's file.
        "/etc/systemd/network/10-cloud-init-eth0.network.d/50-ailab-ipv4-only.conf": (
            "[Network]\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
        ),
        # Only the configured nameservers: no built-in public fallback, no multicast chatter.
        "/etc/systemd/resolved.conf.d/50-ailab-lab.conf": (
            "[Resolve]\nFallbackDNS=\nLLMNR=no\nMulticastDNS=no\n"
        ),
        # Empty: each clone gets its own machine id at first boot.
        "/etc/machine-id": "",
    }
    removed = ("/etc/apt/sources.list",) if release >= 13 else ()
    return Recipe(suite=suite, mirror=mirror, security_mirror=security, files=files, removed_files=removed)


@contextmanager
def _cache_lock(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build_template(
    cache_dir: Path | None = None, recipe: Recipe | None = None, *, release: int = DEFAULT_RELEASE
) -> TemplateImage:
    """Return the template rootfs, building whichever stage's recipe changed since last time."""
    cache_dir = cache_dir or cache_dir_from_env()
    recipe = recipe or default_recipe(release)
    started = time.monotonic()
    debootstrap_seconds = None
    with _cache_lock(cache_dir):
        template = cache_dir / f"template-{recipe.template_key()}"
        cached = (template / "recipe.json").is_file()
        if not cached:
            base = cache_dir / f"base-{recipe.base_key()}"
            if not (base / "recipe.json").is_file():
                debootstrap_started = time.monotonic()
                _build_stage(base, lambda rootfs: _debootstrap(rootfs, recipe), recipe)
                debootstrap_seconds = time.monotonic() - debootstrap_started
                log.info("debootstrap of %s took %.1f s", recipe.suite, debootstrap_seconds)
            _build_stage(template, lambda rootfs: _configure(base / "rootfs", rootfs, recipe), recipe)
    seconds = time.monotonic() - started
    log.info("template image %s ready in %.1f s (cached: %s)", template.name, seconds, cached)
    return TemplateImage(template / "rootfs", recipe.template_key(), seconds, cached, debootstrap_seconds)


def _build_stage(stage_dir: Path, build: Callable[[Path], None], recipe: Recipe) -> None:
    """Build into a scratch dir and rename it into place, so a failed build leaves no stage."""
    scratch = stage_dir.with_name(stage_dir.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        build(scratch / "rootfs")
        (scratch / "recipe.json").write_text(json.dumps(asdict(recipe), indent=2, sort_keys=True))
        shutil.rmtree(stage_dir, ignore_errors=True)
        scratch.rename(stage_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _debootstrap(rootfs: Path, recipe: Recipe) -> None:
    log.info("debootstrap %s from %s into %s", recipe.suite, recipe.mirror, rootfs)
    run(
        [
            "debootstrap",
            f"--variant={recipe.variant}",
            f"--include={','.join(sorted(recipe.packages))}",
            recipe.suite,
            rootfs,
            recipe.mirror,
        ],
        what="building the base image with debootstrap",
        timeout=1800,
    )


def _configure(base_rootfs: Path, rootfs: Path, recipe: Recipe) -> None:
    run(["cp", "-a", base_rootfs, rootfs], what="copying the base image", timeout=600)
    for path, content in recipe.files.items():
        target = rootfs / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    for path in recipe.removed_files:
        (rootfs / path.lstrip("/")).unlink(missing_ok=True)
    # Clones must not share host keys; cloud-init generates them on first boot.
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (rootfs / "etc/localtime").unlink(missing_ok=True)
    (rootfs / "etc/localtime").symlink_to("/usr/share/zoneinfo/Etc/UTC")
    chroot: list[str | os.PathLike[str]] = ["chroot", rootfs]
    run([*chroot, "locale-gen"], what="generating locales in the image", timeout=300)
    run([*chroot, "systemctl", "mask", *recipe.masked_units], what="masking units in the image")
    run([*chroot, "systemctl", "enable", *recipe.enabled_units], what="enabling units in the image")
    run([*chroot, "apt-get", "clean"], what="cleaning the image's apt cache")
    if not (rootfs / "usr/bin/cloud-init").exists():
        raise LabError(f"template image {rootfs} has no cloud-init")
