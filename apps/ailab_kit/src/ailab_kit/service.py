"""The one use case both apps share: ask the LLM and keep the exchange in the database."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from .db import Exchange, session_scope
from .llm import LLMClient

MAX_QUESTION_LENGTH = 2000


@dataclass(frozen=True)
class Answer:
    answer: str
    latency_ms: float
    stored_id: int
    model: str


def ask(
    client: LLMClient, factory: sessionmaker[Session], question: str, max_tokens: int | None = None
) -> Answer:
    """App -> LLM -> database; raises ValueError for an empty or oversized question."""
    question = question.strip()
    if not question:
        raise ValueError("the question is empty")
    if len(question) > MAX_QUESTION_LENGTH:
        raise ValueError(f"the question is longer than {MAX_QUESTION_LENGTH} characters")
    completion = client.generate(question, max_tokens=max_tokens)
    with session_scope(factory) as session:
        exchange = Exchange(
            question=question,
            answer=completion.text,
            model=completion.model,
            latency_ms=completion.latency_ms,
        )
        session.add(exchange)
        session.flush()
        stored_id = exchange.id
    return Answer(
        answer=completion.text,
        latency_ms=round(completion.latency_ms, 1),
        stored_id=stored_id,
        model=completion.model,
    )
