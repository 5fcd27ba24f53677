"""The Streamlit "lab status" page: system status, questions to the LLM, the log of stored exchanges.

The status lines read "Database status: ok" and "LLM status: ok" when all is well; the browser
check of `ailab-deploy verify` looks for exactly those.
"""

from __future__ import annotations

import streamlit as st
from ailab_kit.db import make_engine, make_sessionmaker, recent_exchanges
from ailab_kit.llm import LLMError
from ailab_kit.service import ask
from ailab_kit.settings import Settings
from ailab_kit.status import OK, system_status


@st.cache_resource
def _resources():
    settings = Settings.from_env()
    engine = make_engine(settings.database_url)
    client = settings.llm_client()
    return settings, engine, make_sessionmaker(engine), client


st.set_page_config(page_title="AI lab status", layout="wide")
st.title("AI lab status")
settings, engine, factory, client = _resources()

st.header("System status")
status = system_status(engine, client)
db_col, llm_col, versions_col = st.columns(3)
with db_col:
    st.subheader("Database")
    st.markdown(f"Database status: **{status.database.state}**")
    (st.success if status.database.state == OK else st.error)(status.database.detail)
    st.caption(f"{settings.masked_database_url()}, schema revision {status.schema_revision or 'none'}")
with llm_col:
    st.subheader(f"LLM ({settings.llm_provider})")
    st.markdown(f"LLM status: **{status.llm.state}**")
    (st.success if status.llm.state == OK else st.error)(status.llm.detail)
    st.caption(f"{settings.llm_url}, model {settings.llm_model}")
with versions_col:
    st.subheader("Versions")
    st.table([{"component": name, "version": version} for name, version in status.versions.items()])

st.header("Ask the lab")
history = st.session_state.setdefault("history", [])
with st.form("ask"):
    question = st.text_input("Question", value="In one sentence, what is PostgreSQL?")
    submitted = st.form_submit_button("Ask")
if submitted:
    try:
        result = ask(client, factory, question)
    except (LLMError, ValueError) as exc:
        st.error(str(exc))
    else:
        history.insert(0, {"id": result.stored_id, "question": question.strip(), "answer": result.answer})
        st.markdown("**Answer:**")
        st.write(result.answer)
        st.caption(f"{result.latency_ms:.0f} ms, stored as #{result.stored_id}")
if history:
    st.subheader("Your questions in this session")
    st.table(history)

st.header("Exchange log")
try:
    rows = recent_exchanges(factory, limit=20)
    st.table(
        [
            {
                "id": r.id,
                "when": r.created_at,
                "question": r.question,
                "answer": r.answer,
                "model": r.model,
                "ms": round(r.latency_ms),
            }
            for r in rows
        ]
    )
except Exception as exc:
    st.error(f"Cannot read exchanges: {exc.__class__.__name__}")
