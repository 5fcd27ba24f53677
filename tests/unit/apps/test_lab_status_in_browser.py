"""The status page in headless Chromium: Streamlit on 127.0.0.1, sqlite, the fake LLM server.

Skipped when streamlit or Debian's chromium and chromium-driver are not installed.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "apps" / "ailab_kit" / "src"))

pytest.importorskip("streamlit")
pytest.importorskip("selenium")
pytest.importorskip("alembic")

from ailab_kit.migrate import upgrade  # noqa: E402

from ailab_deploy.adapters.browser import Browser, check_streamlit_app, find_browser  # noqa: E402

from .test_ailab_kit_llm import FakeLLM, fake_llm  # noqa: E402,F401  (fixture re-used)

BROWSER = find_browser()
pytestmark = pytest.mark.skipif(BROWSER is None, reason="chromium and chromedriver are not installed")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture()
def page(tmp_path: Path, fake_llm: str) -> Iterator[tuple[str, Path]]:  # noqa: F811
    database = tmp_path / "lab.db"
    upgrade(f"sqlite:///{database}")
    port = _free_port()
    env = dict(
        os.environ,
        DATABASE_URL=f"sqlite:///{database}",
        AILAB_LLM_URL=fake_llm,
        AILAB_LLM_MODEL="gemma3-270m",
        AILAB_LLM_PROVIDER="llamacpp",
        PYTHONPATH=f"{ROOT / 'apps' / 'ailab_kit' / 'src'}:{ROOT / 'apps' / 'lab_status' / 'src'}",
    )
    command = [
        sys.executable, "-m", "streamlit", "run", str(ROOT / "apps/lab_status/src/lab_status/page.py"),
        "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/", database
    finally:
        process.terminate()
        process.wait(timeout=30)


def _no_selenium_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    def refuse(*args: object) -> None:
        raise AssertionError("Selenium Manager must not run: the driver path is given")

    monkeypatch.setattr(SeleniumManager, "binary_paths", refuse)


def test_question_through_the_form_is_answered_and_stored(
    page: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_selenium_manager(monkeypatch)
    url, database = page
    assert isinstance(BROWSER, Browser)
    shot = tmp_path / "reports" / "browser-lab-status.png"
    result = check_streamlit_app(BROWSER, "lab-status", url, shot, timeout=60)
    assert result.passed, result.detail
    assert (result.database_status, result.llm_status) == ("ok", "ok")
    assert result.answer == "Paris."  # what the fake LLM answers
    assert result.stored_in_log and result.answer_ms is not None and result.answer_ms > 0
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT id, question, answer FROM exchanges").fetchall()
    assert len(rows) == 1
    stored_id, question, answer = rows[0]
    assert stored_id == result.stored_id and answer == "Paris."
    assert question == "In one sentence, what is PostgreSQL?"
    assert result.screenshot == shot.name
    assert shot.read_bytes().startswith(PNG_SIGNATURE)
    posted = [request for request in FakeLLM.requests if request[0] == "POST"]
    assert [path for _, path, _ in posted] == ["/completion"]  # one question, asked through the form


def test_an_answer_that_itself_says_answer_is_read_whole(
    page: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_selenium_manager(monkeypatch)
    url, _ = page
    FakeLLM.completion_content = " Q.1. A database. Answer: Q.2. A relational one. Answer:\n"
    assert isinstance(BROWSER, Browser)
    result = check_streamlit_app(BROWSER, "lab-status", url, tmp_path / "shot.png", timeout=60)
    assert result.passed, result.detail
    assert result.answer == "Q.1. A database. Answer: Q.2. A relational one. Answer:"


def test_a_kept_http_cache_is_filled_and_used_again(
    page: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_selenium_manager(monkeypatch)
    url, _ = page
    cache = tmp_path / "browser-cache"
    assert isinstance(BROWSER, Browser)
    first = check_streamlit_app(BROWSER, "lab-status", url, tmp_path / "1.png", timeout=60, cache_dir=cache)
    assert first.passed, first.detail
    cached = sum(path.stat().st_size for path in cache.rglob("*") if path.is_file())
    assert cached > 100_000  # Streamlit's scripts
    second = check_streamlit_app(BROWSER, "lab-status", url, tmp_path / "2.png", timeout=60, cache_dir=cache)
    assert second.passed, second.detail
    assert second.stored_id == first.stored_id + 1


def test_llm_down_fails_the_check_with_its_status(page: tuple[str, Path], tmp_path: Path) -> None:
    url, database = page
    FakeLLM.fail_with = 503
    assert isinstance(BROWSER, Browser)
    result = check_streamlit_app(BROWSER, "lab-status", url, tmp_path / "down.png", timeout=60)
    assert not result.passed
    assert (result.database_status, result.llm_status) == ("ok", "error"), result
    assert result.detail == "LLM status is 'error'"
    assert (tmp_path / "down.png").read_bytes().startswith(PNG_SIGNATURE)  # evidence of the failure
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM exchanges").fetchone() == (0,)


def test_nothing_listening_is_a_failed_check_not_an_error(tmp_path: Path) -> None:
    assert isinstance(BROWSER, Browser)
    url = f"http://127.0.0.1:{_free_port()}/"
    result = check_streamlit_app(BROWSER, "lab-status", url, tmp_path / "none.png", timeout=5)
    assert not result.passed and "ERR_CONNECTION_REFUSED" in result.detail
