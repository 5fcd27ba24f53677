"""The LLM against its engine's own ceiling (llama-bench) and when the bandwidth bound applies."""

from __future__ import annotations

import json

import pytest

from ailab_deploy.core.report import (
    LlmResult,
    MeasurementError,
    Report,
    bound_ratio_text,
    engine_ceiling_from_llama_bench,
    render_markdown,
)

# llama-bench -o json prints one object per test; a prompt test is there when -p is not 0.
LLAMA_BENCH_JSON = json.dumps(
    [
        {"model_type": "gemma3 270M Q8_0", "n_prompt": 512, "n_gen": 0, "n_depth": 0, "avg_ts": 410.5},
        {
            "model_type": "gemma3 270M Q8_0",
            "n_prompt": 0,
            "n_gen": 64,
            "n_depth": 21,
            "avg_ts": 55.0,
            "samples_ts": [49.5, 61.25, 54.25],
        },
    ],
    indent=2,
)


def test_the_generation_tests_best_repetition_is_the_ceiling() -> None:
    noise = "build: 1234 (abcdef) with cc for x86_64-linux-gnu\n"
    assert engine_ceiling_from_llama_bench(noise + LLAMA_BENCH_JSON) == 61.25


def test_without_samples_the_mean_is_the_ceiling() -> None:
    output = json.dumps([{"n_prompt": 0, "n_gen": 64, "avg_ts": 58.5}])
    assert engine_ceiling_from_llama_bench(output) == 58.5


@pytest.mark.parametrize(
    "output",
    ["main: error: failed to load model", "[]", json.dumps([{"n_prompt": 512, "n_gen": 0, "avg_ts": 1.0}])],
)
def test_output_without_a_generation_result_is_a_measurement_error(output: str) -> None:
    with pytest.raises(MeasurementError, match="llama-bench"):
        engine_ceiling_from_llama_bench(output)


def _llm(tps: float, bound: float, ceiling: float | None) -> LlmResult:
    return LlmResult("llamacpp", "m", 64, tps, 40.0, 9.5, bound, ceiling)


def test_deployed_over_ceiling_and_a_bandwidth_bound_model() -> None:
    llm = _llm(tps=5.7, bound=7.5, ceiling=6.0)  # the engine reaches 80 % of the bound
    assert llm.bandwidth_bound_applies
    data = Report("ab" * 32, llm, None, (), ()).to_dict()["llm"]
    assert data["ratio_to_engine_ceiling"] == pytest.approx(0.95)
    assert data["ratio_to_bound"] == pytest.approx(0.76)
    assert data["bandwidth_bound_applies"] is True
    assert bound_ratio_text(llm) == "0.76"


def test_a_compute_bound_model_gets_no_ratio_to_the_bound() -> None:
    llm = _llm(tps=58.0, bound=900.0, ceiling=61.0)  # a tiny model: the engine is far below the bound
    assert not llm.bandwidth_bound_applies
    data = Report("ab" * 32, llm, None, (), ()).to_dict()["llm"]
    assert data["ratio_to_bound"] is None and data["bandwidth_bound_applies"] is False
    assert data["ratio_to_engine_ceiling"] == pytest.approx(58.0 / 61.0, abs=1e-3)
    text = render_markdown(Report("ab" * 32, llm, None, (), ()))
    assert "| measured / bound | not applicable (compute-bound" in text
    assert "| deployed / llama-bench | 0.95 |" in text


def test_without_a_ceiling_the_bound_still_applies() -> None:
    llm = _llm(tps=5.0, bound=7.5, ceiling=None)  # e.g. Ollama: no llama-bench
    assert llm.bandwidth_bound_applies and llm.ratio_to_engine_ceiling is None
    assert "| deployed / llama-bench | - |" in render_markdown(Report("ab" * 32, llm, None, (), ()))
