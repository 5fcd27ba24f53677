"""ailab_kit: the Alembic migration, the SQLAlchemy model and ask() on sqlite."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "apps" / "ailab_kit" / "src"))

pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")

from ailab_kit.db import (
    check_database,
    count_exchanges,
    make_engine,
    make_sessionmaker,
    recent_exchanges,
)
from ailab_kit.llm import Completion, LLMError
from ailab_kit.migrate import upgrade
from ailab_kit.service import ask
from sqlalchemy import inspect


@dataclass
class StubClient:
    """Stands in for LLMClient; the HTTP side is covered by test_ailab_kit_llm.py."""

    text: str = "Paris."
    fail: bool = False
    model: str = "stub-model"

    def generate(self, prompt: str, max_tokens: int = 128) -> Completion:
        if self.fail:
            raise LLMError("down")
        return Completion(text=self.text, model=self.model, latency_ms=12.34)


@pytest.fixture()
def database_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'lab.db'}"
    upgrade(url)
    return url


def test_migration_creates_the_table_and_is_repeatable(database_url: str) -> None:
    upgrade(database_url)  # second run: already at head, no error
    engine = make_engine(database_url)
    inspector = inspect(engine)
    assert "exchanges" in inspector.get_table_names()
    columns = {c["name"] for c in inspector.get_columns("exchanges")}
    assert columns == {"id", "created_at", "question", "answer", "model", "latency_ms"}
    assert "sqlite" in check_database(engine)


def test_ask_stores_question_and_answer(database_url: str) -> None:
    factory = make_sessionmaker(make_engine(database_url))
    first = ask(StubClient(), factory, "  Capital of France?  ")
    second = ask(StubClient(text="Berlin."), factory, "Capital of Germany?")
    assert (first.answer, first.latency_ms, first.model) == ("Paris.", 12.3, "stub-model")
    assert second.stored_id == first.stored_id + 1
    assert count_exchanges(factory) == 2
    latest = recent_exchanges(factory, limit=1)[0]
    assert (latest.question, latest.answer) == ("Capital of Germany?", "Berlin.")


def test_ask_refuses_empty_questions_and_stores_nothing_on_llm_error(database_url: str) -> None:
    factory = make_sessionmaker(make_engine(database_url))
    with pytest.raises(ValueError, match="empty"):
        ask(StubClient(), factory, "   ")
    with pytest.raises(ValueError, match="longer"):
        ask(StubClient(), factory, "x" * 5000)
    with pytest.raises(LLMError):
        ask(StubClient(fail=True), factory, "anyone there?")
    assert count_exchanges(factory) == 0
