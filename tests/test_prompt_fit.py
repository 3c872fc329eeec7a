"""Fitting a long chat to the context (llama/prompts.py ``Prompts.fit``) on SmolLM2's real
template and tokenizer: the same turns dropped as dropping them one by one, with a few
renders however long the chat (a 1,200-turn chat froze a server for 83 s when each
dropped turn meant rendering and tokenizing the whole chat again), and a text too long
for any context refused without tokenizing it."""

from __future__ import annotations

import random

import pytest

from edgechat.errors import ContextOverflow
from edgechat.llama.prompts import Prompts

pytestmark = pytest.mark.model


def one_by_one(prompts: Prompts, messages, reserve: int, n_ctx: int):
    """The rule as it was written first: drop the oldest turn (a user turn with its
    reply), render and tokenize the whole chat again, until it fits."""
    kept, dropped = list(messages), 0
    while True:
        tokens = prompts.tokens(kept)
        if len(tokens) + reserve <= n_ctx:
            return kept, dropped, tokens
        droppable = [i for i, m in enumerate(kept[:-1]) if m.get("role") != "system"]
        if not droppable:
            raise ContextOverflow("too long")
        first, n = droppable[0], 1
        if (
            kept[first].get("role") == "user"
            and first + 1 < len(kept) - 1
            and kept[first + 1].get("role") == "assistant"
        ):
            n = 2
        del kept[first : first + n]
        dropped += n


class Counting:
    """The engine's Prompts, counting its renders."""

    def __init__(self, prompts: Prompts) -> None:
        self.prompts, self.renders = prompts, 0
        self._format = prompts.format

    def __enter__(self):
        def format(messages, *args, **kwargs):
            self.renders += 1
            return self._format(messages, *args, **kwargs)

        self.prompts.format = format
        return self

    def __exit__(self, *exc) -> None:
        del self.prompts.format


def chat(rng: random.Random, turns: int) -> list[dict]:
    words = ["river", "mill", "town", "note", "the", "old", "and", "past", "runs", "a", "of"]
    out = [{"role": "system", "content": "You keep notes."}] if rng.random() < 0.7 else []
    for i in range(turns):
        role = "user" if i % 2 == 0 or rng.random() < 0.1 else "assistant"
        if rng.random() < 0.05:
            role = "system"
        text = " ".join(rng.choice(words) for _ in range(rng.randint(0, 60)))
        out.append({"role": role, "content": f"{i}: {text}"})
    out.append({"role": "user", "content": "What was the last note?"})
    return out


def test_the_same_turns_are_dropped_as_one_by_one(small_engine):
    prompts = small_engine._prompts
    rng = random.Random(7)
    for case in range(40):
        messages = chat(rng, rng.randint(0, 50))
        reserve = rng.choice([16, 64, 128])
        try:
            expected = one_by_one(prompts, messages, reserve, 512)
        except ContextOverflow:
            with pytest.raises(ContextOverflow):
                prompts.fit(messages, reserve, 512)
            continue
        assert prompts.fit(messages, reserve, 512) == expected, case


def test_a_chat_of_1200_turns_is_rendered_a_few_times(small_engine):
    """Failed before the fix: 1,200 turns took a render and a tokenizing per turn."""
    long = [{"role": "system", "content": "Be brief."}]
    for i in range(600):
        long += [
            {"role": "user", "content": f"Note {i}: the river runs past the mill."},
            {"role": "assistant", "content": f"Noted {i}."},
        ]
    long.append({"role": "user", "content": "What was the last note number?"})
    with Counting(small_engine._prompts) as counting:
        kept, dropped, tokens = small_engine._prompts.fit(long, 64, 512)
    assert counting.renders <= 12
    assert kept[0] == long[0] and kept[-1] == long[-1] and len(tokens) + 64 <= 512
    assert kept[1]["content"].startswith("Note ") and dropped % 2 == 0  # whole exchanges
    one_more = [long[0], *long[dropped - 1 : dropped + 1], *kept[1:]]  # the last one dropped
    assert len(small_engine._prompts.tokens(one_more)) + 64 > 512  # no fewer drops fit


def test_a_text_beyond_any_context_is_refused_without_tokenizing(small_engine):
    huge = "word " * 2_000_000  # 10 MB: far more than 512 tokens can hold
    prompts = small_engine._prompts
    calls = []
    tokenize, prompts._tokenize = prompts._tokenize, lambda *a, **k: calls.append(a) or []
    try:
        with pytest.raises(ContextOverflow, match="over 448 tokens"):
            prompts.whole([{"role": "user", "content": huge}], 64, 512, 8192)
        two = [{"role": "user", "content": "hi"}, {"role": "user", "content": huge}]
        with pytest.raises(ContextOverflow, match="over 512 tokens"):
            prompts.fit(two, 64, 512)
        with pytest.raises(ContextOverflow, match="over 448 tokens"):
            small_engine.completion_tokens(huge, small_engine_sampling())
    finally:
        prompts._tokenize = tokenize
    assert calls == []  # not one tokenizer call for any of them


def small_engine_sampling():
    from edgechat.planning.plan import Sampling

    return Sampling(max_tokens=64)
