"""A Streamlit app checked as a person sees it: headless Chromium driven by Selenium.

Debian's ``chromium`` and ``chromium-driver`` packages are used as installed; the driver's path
is given to Selenium explicitly, so Selenium Manager never runs and nothing is downloaded.
Chromium gets a fresh profile per check and no proxy: the apps are on the private network. Its
HTTP cache may be kept across checks (``cache_dir``), as a person's browser keeps Streamlit's
scripts between visits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ailab_deploy.core.report import BrowserResult

log = logging.getLogger(__name__)

CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMEDRIVER_NAME = "chromedriver"
WINDOW = (1280, 2200)  # tall enough for the whole status page in one screenshot
QUESTION = "In one sentence, what is PostgreSQL?"
_FLAGS = (
    "--headless",
    "--no-sandbox",  # runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-proxy-server",  # the apps are on the private network, never behind a proxy
)
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
_STATUS = {name: re.compile(rf"{name} status: (\S+)") for name in ("Database", "LLM")}
_STORED = re.compile(r"(\d+) ms, stored as #(\d+)")
_ERROR_ALERT = "[data-testid='stAlertContentError']"  # st.error(...) on the page
_TABLE_CELLS = (
    "return Array.from(arguments[0].rows, row => Array.from(row.cells, cell => cell.innerText.trim()));"
)


@dataclass(frozen=True)
class Browser:
    chromium: Path
    chromedriver: Path


def find_browser() -> Browser | None:
    """Chromium and its driver from the system's packages, or None when either is missing."""
    chromium = next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)
    driver = shutil.which(CHROMEDRIVER_NAME)
    if chromium is None or driver is None:
        return None
    return Browser(Path(chromium), Path(driver))


def _driver_environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key.lower() not in _PROXY_VARIABLES}


def _page_text(driver: Any) -> str:
    return str(driver.find_element("tag name", "body").text)


def _exceptions(driver: Any) -> list[str]:
    """Tracebacks Streamlit renders in the page (an uncaught exception in the script)."""
    return [
        str(element.text)[:300]
        for element in driver.find_elements("css selector", "[data-testid='stException']")
    ]


def check_streamlit_app(
    browser: Browser,
    app: str,
    url: str,
    screenshot: Path,
    *,
    timeout: float = 600.0,
    cache_dir: Path | None = None,
) -> BrowserResult:
    """Open the page, check it rendered with ok statuses, ask through its form, see the stored answer."""
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException, WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    # The plain question: a random marker in the prompt can make a small model answer nothing.
    # The stored row is identified by the id the page shows ("stored as #N") instead.
    question = QUESTION
    facts: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ailab-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(browser.chromium)
        cache = [f"--disk-cache-dir={cache_dir}"] if cache_dir else []
        for flag in (*_FLAGS, f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}", *cache):
            options.add_argument(flag)
        service = Service(executable_path=str(browser.chromedriver), env=_driver_environment())
        driver = None
        try:
            driver = webdriver.Chrome(service=service, options=options)
            driver.set_page_load_timeout(120)
            driver.get(url)
            rendered = WebDriverWait(driver, 120, poll_frequency=0.1)
            rendered.until(
                lambda d: (
                    _exceptions(d)
                    or (
                        all(rx.search(_page_text(d)) for rx in _STATUS.values())
                        and d.find_elements("css selector", "input[aria-label='Question']")
                    )
                )
            )
            failure = _check_rendered(driver, facts)
            if failure:
                return _result(app, url, facts, _save(driver, screenshot), failure)
            field = driver.find_element("css selector", "input[aria-label='Question']")
            field.click()
            field.send_keys(Keys.CONTROL, "a")
            field.send_keys(Keys.DELETE)
            field.send_keys(question)
            submitted_at = time.monotonic()
            driver.find_element("css selector", "[data-testid='stFormSubmitButton'] button").click()
            with contextlib.suppress(TimeoutException):  # _check_answer names what never appeared
                WebDriverWait(driver, timeout, poll_frequency=0.1).until(
                    lambda d: (
                        _exceptions(d)
                        or d.find_elements("css selector", _ERROR_ALERT)
                        or _answer_logged(d, question)
                    )
                )
            facts["answer_ms"] = (time.monotonic() - submitted_at) * 1000
            failure = _check_answer(driver, question, facts)
            return _result(app, url, facts, _save(driver, screenshot), failure)
        except WebDriverException as error:  # includes timeouts waiting for the page or the answer
            message = (error.msg or type(error).__name__).splitlines()[0]
            detail = f"{type(error).__name__}: {message}"
            return _result(app, url, facts, _save(driver, screenshot) if driver else None, detail)
        finally:
            if driver is not None:
                driver.quit()


def _check_rendered(driver: Any, facts: dict[str, Any]) -> str:
    """Why the rendered page fails (empty when it does not): an exception, or a status not ok."""
    shown = _exceptions(driver)
    if shown:
        return f"the page shows an exception: {shown[0]}"
    text = _page_text(driver)
    for name, pattern in _STATUS.items():
        match = pattern.search(text)
        facts[f"{name.lower()}_status"] = match.group(1) if match else ""
    bad = [
        f"{name} status is {facts[f'{name.lower()}_status']!r}"
        for name in _STATUS
        if facts[f"{name.lower()}_status"] != "ok"
    ]
    return ", ".join(bad)


def _answer_logged(driver: Any, question: str) -> bool:
    """The answer is shown and the exchange log holds it. Streamlit streams a page's elements in
    order, so the old log (the same question, asked before) stays on screen a moment after the
    new answer's "stored as #N": only a row with N counts."""
    stored = _STORED.search(_page_text(driver))
    return stored is not None and _logged(_table_rows(driver, last=True), question, int(stored.group(2)))


def _logged(rows: list[list[str]], question: str, stored_id: int) -> bool:
    return any(question in cells and str(stored_id) in cells for cells in rows)


def _check_answer(driver: Any, question: str, facts: dict[str, Any]) -> str:
    shown = _exceptions(driver)
    if shown:
        return f"the page shows an exception after asking: {shown[0]}"
    errors = [str(element.text)[:300] for element in driver.find_elements("css selector", _ERROR_ALERT)]
    if errors:
        return f"the page shows an error after asking: {errors[0]}"
    text = _page_text(driver)
    stored = _STORED.search(text)
    if stored is None:
        return "no stored answer appeared"
    facts["stored_id"] = int(stored.group(2))
    # The page's "Answer:" heading is the first one: a small model's answer may say "Answer:" too.
    answer = text[: stored.start()].split("Answer:", 1)
    facts["answer"] = answer[1].strip()[:500] if len(answer) == 2 else ""
    facts["stored_in_log"] = _logged(_table_rows(driver, last=True), question, facts["stored_id"])
    if not facts["answer"]:
        return "the answer is empty"
    if not facts["stored_in_log"]:
        return f"exchange #{facts['stored_id']} is not in the exchange log"
    return ""


def _table_rows(driver: Any, *, last: bool) -> list[list[str]]:
    """The cells of each row of the page's last table (the exchange log), as shown. Read in one
    call: a WebDriver call per cell takes about 10 ms, over a second for the log's 20 rows."""
    tables = driver.find_elements("css selector", "table")
    if not tables:
        return []
    rows = driver.execute_script(_TABLE_CELLS, tables[-1 if last else 0])
    return [[str(cell) for cell in row] for row in rows]


def _save(driver: Any, path: Path) -> str | None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.name if driver.save_screenshot(str(path)) else None
    except Exception as error:  # a screenshot is evidence, not the check itself
        log.warning("could not save a screenshot to %s: %s", path, error)
        return None


def _result(app: str, url: str, facts: dict[str, Any], screenshot: str | None, failure: str) -> BrowserResult:
    return BrowserResult(
        app=app,
        url=url,
        passed=not failure,
        database_status=facts.get("database_status", ""),
        llm_status=facts.get("llm_status", ""),
        answer=facts.get("answer", ""),
        answer_ms=facts.get("answer_ms"),
        stored_id=facts.get("stored_id"),
        stored_in_log=facts.get("stored_in_log", False),
        screenshot=screenshot,
        detail=failure,
    )
