from __future__ import annotations

import pytest

from ailab_deploy.adapters.bandwidth_probe import measure_locally, parse_probe_output


def test_parse_probe_output_takes_the_json_line() -> None:
    assert parse_probe_output('noise\n{"workers": 2, "buffer_bytes": 1, "bandwidth_gbs": 12.5}\n') == 12.5


def test_parse_probe_output_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="no probe result"):
        parse_probe_output("Traceback: boom")


def test_probe_measures_this_machine() -> None:
    gbs = measure_locally(workers=1, buffer_bytes=32 << 20)
    assert 0.1 < gbs < 2000
