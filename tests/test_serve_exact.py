"""`edgechat serve --exact` on Gemma 3 (Q4_K_M): eight greedy replies generated together,
each token for token what it is alone.

Gemma's file holds K-quant weights, which llama.cpp's CPU multiplies with kernels that
depend on how many rows a step holds (repacked weights; the tiled path from 8 rows up):
without --exact, some of these eight replies part from their lone selves after a few
dozen tokens. The server runs in a child process because ggml reads its switch for the
tiled path once per process.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from support.serving import edgechat_serve

openai = pytest.importorskip("openai")
pytestmark = [pytest.mark.model, pytest.mark.subprocess]

TOPICS = ["the sea", "Rome", "owls", "apples", "trains", "winter", "bread", "music"]


@pytest.fixture(scope="module")
def server(gemma_path, new_home):
    home = new_home("exact-home")
    srv = edgechat_serve(
        gemma_path,
        *("--ctx", "512", "--parallel", "8", "--exact", "--threads", "1", "--quiet"),
        env={"EDGECHAT_HOME": str(home)},
    )
    yield srv
    assert srv.stop() in (0, 130)
    assert "Traceback" not in srv.log


def test_eight_replies_together_are_each_what_they_are_alone(server):
    assert "8 replies at once (exact)" in server.log
    with openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0) as client:
        model = client.models.list().data[0].id

        def ask(topic: str) -> str:
            stream = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": f"Write a long essay about {topic}."}],
                max_tokens=48,
                temperature=0,
                stream=True,
            )
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

        alone = [ask(t) for t in TOPICS]  # one after the other
        with ThreadPoolExecutor(len(TOPICS)) as pool:
            together = list(pool.map(ask, TOPICS))
    assert together == alone
    assert len(set(alone)) == len(TOPICS)
