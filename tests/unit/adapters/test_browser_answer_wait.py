"""The browser check waits for the exchange log's row of the new answer, not for any log that
holds the question: Streamlit streams a page's elements in order, so the log of the page's last
run (the same question, asked before) is still on screen just after "stored as #N" appears."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from ailab_deploy.adapters.browser import QUESTION, _answer_logged

HEADER = ["id", "when", "question", "answer", "model", "ms"]


class Page:
    """What the check reads of a page: its text and the cells of its last table."""

    def __init__(self, text: str, log: list[list[str]]) -> None:
        self.text, self.log = text, log

    def find_element(self, by: str, value: str) -> Any:
        assert (by, value) == ("tag name", "body")
        return SimpleNamespace(text=self.text)

    def find_elements(self, by: str, value: str) -> list[Any]:
        return [SimpleNamespace()] if (by, value) == ("css selector", "table") else []

    def execute_script(self, script: str, table: Any) -> list[list[str]]:
        return self.log


def row(exchange_id: int) -> list[str]:
    return [str(exchange_id), "2026-12-01 03:10", QUESTION, "A database.", "tiny", "881"]


ANSWERED = f"Answer:\nA database.\n881 ms, stored as #7\nExchange log\n{QUESTION}"


def test_the_last_runs_log_holding_the_question_is_not_the_answer_logged() -> None:
    assert not _answer_logged(Page(ANSWERED, [HEADER, row(6), row(5)]), QUESTION)


def test_the_log_with_the_new_answers_row_is() -> None:
    assert _answer_logged(Page(ANSWERED, [HEADER, row(7), row(6)]), QUESTION)


def test_no_stored_answer_yet_is_not_logged_whatever_the_log_holds() -> None:
    assert not _answer_logged(Page(f"Exchange log\n{QUESTION}", [HEADER, row(7)]), QUESTION)
