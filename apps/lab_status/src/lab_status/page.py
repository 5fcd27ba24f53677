"""The Streamlit "lab status" page."""

from __future__ import annotations

import streamlit as st
from ailab_kit.db import check_database, make_engine, make_sessionmaker, recent_exchanges
from ailab_kit.llm import LLMError
from ailab_kit.service import ask
from ailab_kit.settings import Settings


@st.cache_resource
def _resources():
    settings = Settings.from_env()
    engine = make_engine(settings.database_url)
    client = settings.llm_client()
    return settings, engine, make_sessionmaker(engine), client


st.set_page_config(page_title="AI lab status", layout="wide")
st.title("AI lab status")
settings, engine, factory, client = _resources()

db_col, llm_col = st.columns(2)
with db_col:
    st.subheader("Database")
    try:
        st.success(check_database(engine))
    except Exception as exc:  # shown to the operator, not raised
        st.error(f"Database unreachable: {exc.__class__.__name__}: {exc}")
    st.caption(settings.masked_database_url())
with llm_col:
    st.subheader(f"LLM ({settings.llm_provider})")
    try:
        models = client.models()
        st.success("Models: " + (", ".join(models) if models else "none loaded"))
    except LLMError as exc:
        st.error(str(exc))
    st.caption(f"{settings.llm_url}, model {settings.llm_model}")

st.subheader("Ask the lab")
with st.form("ask"):
    question = st.text_input("Question", value="In one sentence, what is PostgreSQL?")
    submitted = st.form_submit_button("Ask")
if submitted:
    try:
        result = ask(client, factory, question)
    except (LLMError, ValueError) as exc:
        st.error(str(exc))
    else:
        st.write(result.answer)
        st.caption(f"{result.latency_ms:.0f} ms, stored as #{result.stored_id}")

st.subheader("Latest exchanges")
try:
    rows = recent_exchanges(factory)
    st.table(
        [
            {
                "#": r.id,
                "when": r.created_at,
                "question": r.question,
                "answer": r.answer,
                "ms": round(r.latency_ms),
            }
            for r in rows
        ]
    )
except Exception as exc:
    st.error(f"Cannot read exchanges: {exc.__class__.__name__}")
