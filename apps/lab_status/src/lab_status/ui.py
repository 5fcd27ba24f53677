"""`lab-status-ui`: run the Streamlit page; extra arguments go to `streamlit run`."""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> int:
    from streamlit.web import cli as streamlit_cli

    page = Path(__file__).with_name("page.py")
    sys.argv = ["streamlit", "run", str(page), *sys.argv[1:]]
    return int(streamlit_cli.main() or 0)


if __name__ == "__main__":
    raise SystemExit(main())
