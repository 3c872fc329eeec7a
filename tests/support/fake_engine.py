"""An engine that keeps the ``ChatEngine`` contract (edgechat/llama/contract.py) with no
model: for tests whose subject is not the engine (a screen, a queue, the summariser's
map/reduce bookkeeping). Replies come from a script; token counts are the remote
engine's cautious estimate, so the context policy is the real one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence

from edgechat.errors import ContextOverflow
from edgechat.llama.contract import reply_reserve
from edgechat.llama.remote import EstimatedPrompts, estimate_tokens
from edgechat.llama.reply import Reply, Stats
from edgechat.planning.plan import Sampling

Respond = Callable[[list[dict] | str], str]


class FakeEngine:
    """``respond(messages or prompt) -> text`` writes each reply (default: a fixed
    line); ``delay`` seconds pass between pieces, so a test can cancel mid-reply.
    ``speed`` (prompt tokens/s, generated tokens/s) runs the engine on its own clock
    instead, ``now()``, which only its calls move: a test of timing (a summary's ETA)
    gets the same figures on any machine, however busy."""

    def __init__(
        self,
        respond: Respond | str = "This is a reply from the fake engine.",
        *,
        n_ctx: int = 2048,
        delay: float = 0.0,
        is_local: bool = True,
        where: str = "this machine",
        speed: tuple[float, float] | None = None,
    ) -> None:
        self._respond = respond if callable(respond) else (lambda _: respond)
        self.n_ctx = n_ctx
        self.delay = delay
        self.is_local = is_local
        self.where = where
        self.load_s = 0.0
        self.n_ctx_used = 0
        self.last_stats: Stats | None = None
        self.requests: list[list[dict] | str] = []  # what each reply was asked for
        self.closed = False
        self._cancel = threading.Event()
        self._prompts = EstimatedPrompts()
        self.speed = speed
        self._clock = 0.0
        self.on_prompt = None  # hears (evaluated, to evaluate) after each batch, as llama's

    def now(self) -> float:
        """The engine's clock: real time, or with ``speed`` the time its calls took."""
        return self._clock if self.speed else time.perf_counter()

    def info(self) -> dict:
        return {"name": "fake", "path": "fake.gguf", "n_ctx": self.n_ctx, "chat_template": True}

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False):
        return estimate_tokens(text)

    def detokenize(self, tokens: Sequence[str]) -> str:
        return "".join(tokens)

    def prompt_tokens(self, messages) -> list:
        return self._prompts.tokens(messages)

    def fit(self, messages, reserve: int):
        return self._prompts.fit(messages, reserve, self.n_ctx)

    def chat(self, messages, sampling: Sampling | None = None, *, drop_oldest=True) -> Reply:
        sampling = sampling or Sampling()
        reserve = reply_reserve(sampling.max_tokens, self.n_ctx)
        if drop_oldest:
            kept, dropped, tokens = self.fit(messages, reserve)
        else:
            kept, dropped = list(messages), 0
            tokens = self._prompts.whole(messages, reserve, self.n_ctx, self.n_ctx)
        return self._reply(list(kept), len(tokens), sampling, dropped)

    def complete(self, prompt: str, sampling: Sampling | None = None) -> Reply:
        sampling = sampling or Sampling()
        n = len(estimate_tokens(prompt))
        if n + reply_reserve(sampling.max_tokens, self.n_ctx) > self.n_ctx:
            raise ContextOverflow(f"the prompt is {n} tokens: it does not fit {self.n_ctx}")
        return self._reply(prompt, n, sampling, 0)

    def continue_reply(self, messages, partial: str, sampling: Sampling | None = None) -> Reply:
        return self.chat([*messages, {"role": "assistant", "content": partial}], sampling)

    def clear_cache(self) -> None:
        self.n_ctx_used = 0

    def cancel(self) -> None:
        self._cancel.set()

    def close(self) -> None:
        self.closed = True

    def _reply(self, asked, n_prompt: int, sampling: Sampling, dropped: int) -> Reply:
        self._cancel.clear()
        self.requests.append(asked)
        text = self._respond(asked)
        return Reply(self._stream(text, n_prompt, sampling, dropped), self, dropped)

    def _stream(self, text: str, n_prompt: int, s: Sampling, dropped: int) -> Iterator[str]:
        t0 = self.now()
        prompt_s = n_prompt / self.speed[0] if self.speed else 0.0
        for start in range(0, n_prompt, 512):  # read in batches of 512, as llama.cpp does
            done = min(n_prompt, start + 512)
            self._clock += (done - start) / self.speed[0] if self.speed else 0.0
            if self.on_prompt is not None:
                self.on_prompt(done, n_prompt)
        finish, n = "stop", 0
        try:
            for piece in estimate_tokens(text):
                if self._cancel.is_set():
                    finish = "cancelled"
                    return
                if n >= s.max_tokens:
                    finish = "length"
                    return
                if self.delay:
                    time.sleep(self.delay)
                if self.speed and n:
                    self._clock += 1 / self.speed[1]
                n += 1
                yield piece
        except GeneratorExit:
            finish = "cancelled"
            raise
        finally:
            spent = self.now() - t0 - prompt_s
            self.n_ctx_used = min(self.n_ctx, n_prompt + n)
            self.last_stats = Stats(
                load_s=0.0,
                prompt_tokens=n_prompt,
                prompt_eval_tokens=n_prompt,
                prompt_s=prompt_s,
                gen_tokens=n,
                gen_s=spent,
                ttft_s=0.0,
                n_ctx_used=self.n_ctx_used,
                n_ctx=self.n_ctx,
                finish=finish,
                dropped_messages=dropped,
            )
