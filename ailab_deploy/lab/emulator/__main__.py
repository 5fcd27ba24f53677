"""``python -m ailab_deploy.lab.emulator --lab-dir DIR [--host H] [--port N]``: serve until SIGTERM."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from ailab_deploy.errors import AilabError

from .app import Emulator
from .server import RunningEmulator
from .settings import load_settings
from .state import write_atomic

READY_FILE = "emulator.ready"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ailab_deploy.lab.emulator")
    parser.add_argument("--lab-dir", type=Path, required=True)
    parser.add_argument("--host", default=None, help="listen address (settings 'listen')")
    parser.add_argument("--port", type=int, default=None, help="port (settings 'port'; 0: any)")
    parser.add_argument("--log-level", default=os.environ.get("AILAB_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings(args.lab_dir)
        host = args.host or settings.listen
        port = settings.port if args.port is None else args.port
        running = RunningEmulator(Emulator(settings), host, port).start()
    except (AilabError, OSError) as err:
        print(f"emulator: {err}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    ready = settings.lab_dir / READY_FILE
    write_atomic(
        ready,
        json.dumps(
            {
                "pid": os.getpid(),
                "url": running.url,
                "port": running.port,
                "node": settings.node,
                "fingerprint": running.emulator.fingerprint,
            }
        ),
    )
    logging.getLogger(__name__).info("serving %s (fingerprint %s)", running.url, running.emulator.fingerprint)
    stop.wait()
    ready.unlink(missing_ok=True)
    running.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
