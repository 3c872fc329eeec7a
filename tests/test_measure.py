"""The measuring harness the memory benchmark relies on, on the real starter model."""

from __future__ import annotations

import pytest

from edgechat.lab.measure import measure
from edgechat.planning.plan import RunPlan

MiB = 2**20


@pytest.mark.subprocess  # the measure runs in a fresh child process
def test_measure_fills_the_context_and_reports_peak_rss(starter_path):
    r = measure(RunPlan(starter_path, n_ctx=512))
    assert r["n_ctx"] == 512
    assert 0.8 * 512 < r["ctx_used"] <= 512
    assert r["rss_before_load"] < r["rss_after_load"] <= r["rss_peak"]
    # At least the weights are resident while generating.
    assert r["rss_peak"] - r["rss_before_load"] > 90 * MiB
    buffers = r["llama_buffers_mib"]
    assert buffers["CPU KV"] == 11.25  # 30 layers x 512 cells x 2 x 3 heads x 64 x f16
    assert "CPU compute" in buffers and "CPU_Mapped model" in buffers
