"""A `num_ctx` beyond the server's context (issue 31 item 10): the refusal says what can
work, never a `--ctx` beyond what the model was trained for."""

from __future__ import annotations

import pytest

from edgechat.planning.plan import Sampling
from edgechat.serve.ollama import Options, sampling
from edgechat.serve.protocol import ApiError


def refusal(num_ctx: int, n_ctx: int, trained: int) -> str:
    with pytest.raises(ApiError) as e:
        sampling(Options(num_ctx=num_ctx), Sampling(), n_ctx, trained)
    assert e.value.status == 400
    return e.value.message


def test_more_than_the_model_was_trained_for_suggests_its_limit():
    said = refusal(100_000, 1024, 8192)
    assert "--ctx 8192" in said and "trained" in said and "--ctx 100000" not in said


def test_at_the_models_limit_already_says_what_to_send():
    said = refusal(100_000, 8192, 8192)
    assert "--ctx" not in said and "num_ctx 8192 or less" in said and "trained" in said


def test_within_the_models_limit_suggests_the_context_asked_for():
    assert "--ctx 4096" in refusal(4096, 1024, 8192)
    assert "--ctx 4096" in refusal(4096, 1024, 0)  # the trained context unknown
    assert sampling(Options(num_ctx=512), Sampling(), 1024, 8192)[1] == 512  # it fits
