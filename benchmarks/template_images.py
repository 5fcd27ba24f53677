"""Print the cold build time of the lab's template image for each Debian release.

Run as root: ``.venv/bin/python benchmarks/template_images.py [--release 13 --release 12]``.
Each build uses a throw-away cache dir (the real image cache is left as it is), so it downloads
every package from the host's Debian mirror: what a fresh CI machine pays per release.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from ailab_deploy.lab.containers.image import SUITES, build_template


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--release", type=int, action="append", choices=sorted(SUITES), help="default: all")
    args = parser.parse_args()
    print(f"{'release':<18} {'debootstrap s':>14} {'whole build s':>14}")
    for release in args.release or list(SUITES):
        cold_cache = Path(tempfile.mkdtemp(prefix="ailab-cold-images-", dir="/var/tmp"))
        try:
            image = build_template(cold_cache, release=release)
        finally:
            shutil.rmtree(cold_cache)
        name = f"Debian {release} ({SUITES[release]})"
        print(f"{name:<18} {image.debootstrap_seconds or 0.0:>14.1f} {image.seconds:>14.1f}")


if __name__ == "__main__":
    main()
