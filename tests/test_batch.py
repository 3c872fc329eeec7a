"""The batch engine (llama/batch.py) on the real SmolLM2: several replies in one decode
per step, each exactly what it would be alone, slots that keep their conversations,
cancels that free a slot, and a full cache that makes the newest request wait."""

from __future__ import annotations

import pytest

from edgechat.llama.batch import Batcher, SeqRequest, shared, worth_copying
from edgechat.llama.engine import Engine
from edgechat.planning.plan import RunPlan, Sampling

pytestmark = pytest.mark.model

GREEDY = Sampling(temperature=0.0, max_tokens=20)
TOPICS = ["apples", "the sea", "Rome", "owls"]


def chat(topic: str) -> list[dict]:
    return [{"role": "user", "content": f"Tell me about {topic}."}]


class Reply:
    """One request's text and end, as the batcher hands them over."""

    def __init__(self, engine: Engine, messages: list[dict], sampling: Sampling = GREEDY):
        tokens, _ = engine.chat_tokens(messages, sampling, drop_oldest=False)
        self.parts: list[str] = []
        self.stats = None
        self.error = None
        self.req = SeqRequest(tokens, sampling, self.parts.append, self._end)

    def _end(self, stats, error) -> None:
        self.stats, self.error = stats, error

    @property
    def text(self) -> str:
        return "".join(self.parts)


def run(batcher: Batcher) -> int:
    steps = 0
    while batcher.busy:
        assert batcher.step() == []
        steps += 1
    return steps


@pytest.fixture(scope="module")
def alone(starter_path) -> dict[str, str]:
    """Each topic's greedy reply from the single-sequence engine, one at a time."""
    out = {}
    with Engine(RunPlan(starter_path, n_ctx=512, n_threads=1)) as engine:
        for topic in TOPICS:
            engine.clear_cache()
            out[topic] = engine.chat(chat(topic), GREEDY).collect()
    return out


@pytest.fixture(scope="module")
def engine(starter_path):
    with Engine(RunPlan(starter_path, n_ctx=512, n_threads=1, n_seq=4)) as eng:
        yield eng


def test_four_replies_in_one_decode_each_equal_to_alone(engine, alone):
    assert engine.n_seq == 4 and engine.n_ctx == 512  # each sequence has the whole --ctx
    batcher = Batcher(engine)
    replies = [Reply(engine, chat(t)) for t in TOPICS]
    assert [batcher.admit(r.req) for r in replies] == [0, 1, 2, 3]
    assert batcher.admit(Reply(engine, chat("more")).req) is None  # every slot is busy
    steps = run(batcher)
    assert steps == GREEDY.max_tokens  # one decode per token, for all four at once
    assert [r.text for r in replies] == [alone[t] for t in TOPICS]
    assert all(r.stats.finish == "length" and r.stats.gen_tokens == 20 for r in replies)


def test_a_follow_up_goes_back_to_its_slot_and_reads_only_what_is_new(engine):
    batcher = Batcher(engine)
    first = Reply(engine, chat("apples"))
    seq = batcher.admit(first.req)
    run(batcher)
    other = Reply(engine, chat("Rome"))  # another conversation: another slot
    assert batcher.admit(other.req) != seq
    run(batcher)
    turns = [*chat("apples"), {"role": "assistant", "content": first.text}]
    follow = Reply(engine, [*turns, {"role": "user", "content": "And pears?"}])
    assert batcher.admit(follow.req) == seq
    run(batcher)
    s = follow.stats
    assert s.prompt_tokens - s.prompt_eval_tokens >= first.stats.prompt_tokens  # reused
    assert s.prompt_eval_tokens < s.prompt_tokens // 2


def test_a_new_conversation_starts_from_a_copy_of_another_slots_cache(engine, alone):
    """Every chat starts with the template's system prompt: a new conversation in an empty
    slot copies another slot's cache of it, reads only the rest of its prompt, and
    writes exactly what it would alone."""
    batcher = Batcher(engine)
    first = Reply(engine, chat(TOPICS[0]))
    home = batcher.admit(first.req)
    run(batcher)
    others = [Reply(engine, chat(t)) for t in TOPICS[1:]]
    seqs = [batcher.admit(r.req) for r in others]
    assert home not in seqs and len(set(seqs)) == 3  # the empty slots, not the first's
    run(batcher)
    for reply, topic in zip(others, TOPICS[1:], strict=True):
        common = shared(first.req.tokens, reply.req.tokens)
        assert worth_copying(common, engine.n_ctx)
        assert reply.stats.prompt_eval_tokens == len(reply.req.tokens) - common
        assert reply.text == alone[topic]


def test_a_cancelled_reply_frees_its_slot_and_the_others_finish_unchanged(engine, alone):
    batcher = Batcher(engine)
    replies = [Reply(engine, chat(t)) for t in TOPICS[:3]]
    seqs = [batcher.admit(r.req) for r in replies]
    for _ in range(4):
        batcher.step()
    batcher.cancel(seqs[1])
    assert replies[1].stats.finish == "cancelled" and batcher.busy == 2
    late = Reply(engine, chat(TOPICS[3]))
    assert batcher.admit(late.req) is not None  # the freed slot takes a new request
    run(batcher)
    assert replies[0].text == alone[TOPICS[0]] and replies[2].text == alone[TOPICS[2]]
    assert late.text == alone[TOPICS[3]]


def test_stop_strings_and_max_tokens_end_a_slot_alone(engine, alone):
    batcher = Batcher(engine)
    text = alone[TOPICS[0]]
    stop = text[len(text) // 2 : len(text) // 2 + 4]
    cut = Reply(engine, chat(TOPICS[0]))
    cut.req = SeqRequest(cut.req.tokens, GREEDY, cut.parts.append, cut._end, (stop,))
    short = Reply(engine, chat(TOPICS[1]), Sampling(temperature=0.0, max_tokens=3))
    batcher.admit(cut.req)
    batcher.admit(short.req)
    run(batcher)
    assert cut.stats.finish == "stop" and cut.text == text[: text.index(stop)]
    assert short.stats.finish == "length" and short.stats.gen_tokens == 3


def test_a_full_cache_makes_the_newest_request_wait(starter_path, alone):
    with Engine(RunPlan(starter_path, n_ctx=512, n_threads=1, n_seq=2)) as engine:
        batcher = Batcher(engine)
        running = Reply(engine, chat(TOPICS[0]))
        assert batcher.admit(running.req) == 0
        batcher.step()
        # Slot 1 holds a 500-token conversation; its next turn needs more cells than its
        # cache has left. (The server refuses such a prompt before it gets here, so this
        # is llama.cpp's own word: llama_decode returns 1.)
        lc, held = engine._lc, engine.tokenize("so", add_special=False) * 500
        fill = lc.llama_batch_init(500, 0, 1)
        fill.n_tokens = 500
        for i, tok in enumerate(held):
            fill.token[i], fill.pos[i], fill.n_seq_id[i], fill.logits[i] = tok, i, 1, 0
            fill.seq_id[i][0] = 1
        assert lc.llama_decode(engine._ctx, fill) == 0
        lc.llama_batch_free(fill)
        batcher.slots[1].cached[:] = held
        newest = Reply(engine, chat(TOPICS[1]))
        newest.req = SeqRequest([*held, *newest.req.tokens], GREEDY, newest.parts.append, None)
        assert batcher.admit(newest.req) == 1
        assert batcher.step() == [newest.req]  # back to wait; the running reply goes on
        assert batcher.busy == 1 and not newest.parts
        assert batcher.admit(Reply(engine, chat("more")).req) is None  # until a reply ends
        run(batcher)
        assert running.text == alone[TOPICS[0]] and running.stats.finish == "length"
        late = Reply(engine, chat(TOPICS[2]))
        assert batcher.admit(late.req) is not None
        run(batcher)
        assert late.text == alone[TOPICS[2]]


# -- a shared server (issue 30): one reply's failure, one client's cache -------------------


def test_a_failed_decode_fails_only_the_reply_it_concerns(engine, alone):
    """A token the model lacks fails the decode of its whole step. Failed before the fix:
    every reply of the step ended with "llama.cpp failed while generating (code -1)" and
    every slot's cache was cleared. Now that reply alone ends; the others read the same
    tokens again and write what they would alone, and no other cache is touched."""
    batcher = Batcher(engine)
    kept = Reply(engine, chat(TOPICS[2]))
    home = batcher.admit(kept.req)
    run(batcher)
    held = list(batcher.slots[home].cached)
    good = Reply(engine, chat(TOPICS[0]))
    bad = Reply(engine, chat(TOPICS[1]))
    bad.req = SeqRequest([*bad.req.tokens[:-1], 99_999_999], GREEDY, bad.parts.append, bad._end)
    batcher.admit(good.req)
    batcher.admit(bad.req)
    run(batcher)
    assert bad.error is not None and "vocabulary" in str(bad.error) and not bad.parts
    assert good.error is None and good.text == alone[TOPICS[0]]
    assert batcher.slots[home].cached == held  # its conversation's cache, untouched
    follow = Reply(engine, [*chat(TOPICS[2]), {"role": "assistant", "content": kept.text}])
    assert batcher.admit(follow.req) == home
    run(batcher)
    assert follow.stats.prompt_tokens - follow.stats.prompt_eval_tokens >= len(held) - 1


def owned(reply: Reply, owner: str) -> Reply:
    r = reply.req
    reply.req = SeqRequest(r.tokens, r.sampling, r.on_text, r.on_end, owner=owner)
    return reply


def test_a_cache_is_reused_by_its_owner_only(engine, alone):
    """Failed before the fix: a second client's guess of another's prompt came from that
    one's cache, and ``cached_tokens`` (or how soon the reply came) told it it was right."""
    secret = [{"role": "system", "content": "The code word is heliotrope."}, *chat("owls")]
    batcher = Batcher(engine)
    first = owned(Reply(engine, secret), "alice")
    home = batcher.admit(first.req)
    run(batcher)
    guess = owned(Reply(engine, secret), "mallory")  # the right guess, from someone else
    assert batcher.admit(guess.req) != home
    run(batcher)
    assert guess.stats.prompt_eval_tokens == guess.stats.prompt_tokens  # nothing reused
    assert guess.text == first.text  # and nothing else changes
    again = owned(Reply(engine, secret), "alice")
    batcher.admit(again.req)
    run(batcher)
    assert again.stats.prompt_eval_tokens == 1  # its own cache (a copy): all but the last
    taken = [owned(Reply(engine, chat(t)), "mallory") for t in TOPICS]  # every slot ...
    for r in taken:
        batcher.admit(r.req)
    run(batcher)
    assert [r.text for r in taken] == [alone[t] for t in TOPICS]
    assert all(s.owner == "mallory" for s in batcher.slots)  # ... alice's start is gone


def test_a_long_prompt_beside_a_reply_is_read_in_chunks_and_changes_no_token(
    engine, alone, monkeypatch
):
    """A prompt read while another reply is written comes in chunks (batch.STEP_S), so
    that reply gets a token every step instead of waiting for a whole batch of prompt;
    both replies are still what they are alone."""
    import edgechat.llama.batch as batch

    monkeypatch.setattr(batch, "STEP_S", 1e-6)  # every chunk as small as it may be
    long_chat = [{"role": "user", "content": "Tell me about owls. " + "Owls hoot. " * 60}]
    with Engine(RunPlan(engine.plan.model_path, n_ctx=512, n_threads=1)) as single:
        single.clear_cache()
        long_alone = single.chat(long_chat, GREEDY).collect()
    batcher = Batcher(engine)
    writer = Reply(engine, chat("apples"), Sampling(temperature=0.0, max_tokens=60))
    batcher.admit(writer.req)
    for _ in range(3):
        batcher.step()  # the writer is writing
    reader = Reply(engine, long_chat)
    n_prompt = len(reader.req.tokens)
    assert n_prompt > 4 * batch.MIN_CHUNK
    batcher.admit(reader.req)
    steps = 0
    while not reader.parts:
        batcher.step()
        steps += 1
        tokens, prompt_tokens, _ = batcher.decoded
        assert prompt_tokens <= batch.MIN_CHUNK
        assert tokens - prompt_tokens == 1  # the writer's next token, in every step
    assert steps >= n_prompt // batch.MIN_CHUNK
    run(batcher)
    assert writer.text.startswith(alone["apples"]) and reader.text == long_alone
