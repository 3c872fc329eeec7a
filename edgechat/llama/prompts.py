"""Prompt templating and the context policy: messages -> prompt text -> tokens that fit.

Kept apart from the engine because it is plain text work: the model's own Jinja
chat template (or a family default when the GGUF has none), the BOS rule, and which
old turns make way when a conversation outgrows the context.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from edgechat.errors import ContextOverflow, EdgechatError

Message = dict  # {"role": "system"|"user"|"assistant", "content": str}

# Used when a GGUF carries no chat template: the family's own format where we know
# it (Gemma's base models ship without one), else ChatML, the most common.
GEMMA = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
    "<start_of_turn>user\n{{ m['content'] }}<end_of_turn>\n{% else %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def chat_template(template: str | None, architecture: str) -> str:
    """The template a model's chats are rendered with: its own, else its family's."""
    return template or (GEMMA if architecture.startswith("gemma") else CHATML)


class Prompts:
    """One model's prompt format and context policy.

    ``tokenize(text, add_special, parse_special)`` is the model's tokenizer;
    ``longest()``, the most characters one of its tokens stands for (None: unknown).
    """

    _longest: Callable[[], int] | None = None

    def __init__(
        self,
        template: str | bytes | None,
        architecture: str,
        bos_text: str,
        eos_text: str,
        tokenize: Callable[..., list[int]],
        longest: Callable[[], int] | None = None,
    ) -> None:
        """``template``: the file's own, as its bytes or text. One that cannot be read,
        compiled or rendered for a new chat gives way to the family format, as
        llama.cpp's own server does; ``problem`` says what was wrong with it."""
        self.has_template = bool(template)
        self.family = "Gemma" if architecture.startswith("gemma") else "ChatML"  # a fallback
        self._bos_text, self._eos_text = bos_text, eos_text
        self._tokenize = tokenize
        self._longest = longest
        self.problem: str | None = None
        self.tool_shape: str | None = None  # how its tool calls look (llama/tools.py)
        self.thinking = False  # it has a thinking switch
        fallback = chat_template(None, architecture)
        if template:
            try:
                text = template.decode("utf-8") if isinstance(template, bytes) else template
                self._formatter = self._compile(text)
                self.problem = self._trial()
                if not self.problem:
                    from edgechat.llama.tools import shape_of, thinks

                    self.tool_shape, self.thinking = shape_of(text), thinks(text)
            except UnicodeDecodeError:
                self.problem = "is not valid UTF-8 text"
            except Exception as exc:  # TemplateSyntaxError, RecursionError (too deep) ...
                self.problem = f"does not parse ({_why(exc)})"
        if not template or self.problem:
            self._formatter = self._compile(fallback)
        if self.problem:
            self.problem += f"; the {self.family} format stands in for it"

    def _compile(self, text: str):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        return Jinja2ChatFormatter(
            template=text, eos_token=self._eos_text, bos_token=self._bos_text
        )

    def _trial(self) -> str | None:
        """What is wrong with a template that fails on the plainest chat (an undefined
        name, a type error, endless recursion); None when it renders, refuses on purpose
        (raise_exception) or is slow (the real render stops it and says so)."""
        from edgechat.llama.bounded import RenderTimeout, deadline

        hi = {"role": "user", "content": "Hi"}
        try:
            with deadline(0.5):  # a chat starts with or without a system prompt
                self._formatter(messages=[hi])
                self._formatter(messages=[{"role": "system", "content": "Be brief."}, hi])
        except (RenderTimeout, ValueError):
            return None
        except Exception as exc:
            return f"fails on a plain chat ({_why(exc)})"
        return None

    def format(self, messages: Sequence[Message], seconds=None, cancel=None, **variables) -> str:
        """The prompt text, rendered with the model's own chat template, within
        ``seconds`` (bounded.py's default) unless ``cancel`` (an Event) is set first
        (``variables``: ``tools``, ``enable_thinking`` ... for templates that take them)."""
        from edgechat.llama.bounded import RenderTimeout, deadline

        try:
            with deadline(seconds, cancel):  # the template is the file's code: bounded
                return self._formatter(messages=list(messages), **variables).prompt
        except RenderTimeout:
            raise EdgechatError(
                "the model's chat template ran too long (a loop in the file?) and was "
                "stopped; use another model, or a fixed copy of this one"
            ) from None
        except ValueError as exc:  # raise_exception() in the template: a refusal on purpose
            raise EdgechatError(
                f"the model's chat template rejected the conversation: {_why(exc, False)}"
            ) from None
        except Exception as exc:  # UndefinedError, TypeError, RecursionError, SecurityError ...
            raise EdgechatError(
                f"the model's chat template failed on this conversation ({_why(exc)}); "
                "use another model, or a fixed copy of this one"
            ) from None

    def tokens(
        self, messages: Sequence[Message], seconds=None, cancel=None, prefill="", **variables
    ) -> list[int]:
        """The prompt's tokens; ``prefill``: the start of the reply, written for it."""
        prompt = self.format(messages, seconds, cancel, **variables) + prefill
        # A template that writes the BOS text itself must not get a second BOS.
        has_bos = bool(self._bos_text) and prompt.startswith(self._bos_text)
        return self._tokenize(prompt, add_special=not has_bos, parse_special=True)

    def continued(self, messages: Sequence[Message], partial: str) -> list[int]:
        """The chat up to an assistant reply that ended early, then that partial reply,
        left open: generating from here writes more of it."""
        return self.tokens(messages, prefill=partial)

    def measure(self, message: Message, cap: int) -> int:
        """About how many tokens ``message`` adds to a prompt: its text's own, without
        the template's markers around it (so a little under what it really adds); more
        than ``cap`` is not counted exactly."""
        text = message.get("content") or ""
        if not isinstance(text, str):
            return 0
        if self.beyond(len(text), cap):
            return cap + 1
        return len(self._tokenize(text, add_special=False, parse_special=True))

    def fit(
        self, messages: Sequence[Message], reserve: int, n_ctx: int, cancel=None, **render
    ) -> tuple[list[Message], int, list[int]]:
        """Drop the oldest turns (never system prompts, never the last message) until the
        prompt plus ``reserve`` tokens for the reply fits ``n_ctx``.

        Returns the kept messages, how many were dropped, and the prompt's tokens.

        A long chat is not rendered again for each turn dropped: each turn is measured
        once, newest first (turns too old to fit are never counted), the measures say
        where the cut lies, and the chat kept at that cut is rendered to check it; the
        cut then moves in steps that double, then halve, so a chat of a thousand turns
        is rendered a few times, and exactly the turns dropping them one by one would
        drop are dropped. The renders share one time budget; ``cancel`` stops them.
        """
        from edgechat.llama.bounded import RENDER_S

        t0 = time.monotonic()
        room = n_ctx - reserve
        order, cuts = _drop_order(messages)
        last = len(cuts) - 1

        def kept(step: int) -> list[Message]:
            gone = set(order[: cuts[step]])
            return [m for i, m in enumerate(messages) if i not in gone]

        def fitting(step: int) -> list[int] | None:
            chat = kept(step)
            if self.beyond(self.size(chat), room):
                return None
            left = max(0.05, RENDER_S - (time.monotonic() - t0))
            tokens = self.tokens(chat, left, cancel, **render)
            return tokens if len(tokens) <= room else None

        found = fitting(0)  # the whole chat: it fits, most of the time
        if found is not None:
            return list(messages), 0, found
        if last == 0:  # nothing to drop
            raise ContextOverflow(self._too_long(list(messages), reserve, n_ctx, render))
        # The fewest drops that leave the kept turns' own text within room.
        total = sum(self.measure(m, room) for m in _always(messages))
        guess = last
        for step in range(last - 1, -1, -1):
            if total > room:
                break
            more = sum(
                self.measure(messages[i], room - total) for i in order[cuts[step] : cuts[step + 1]]
            )
            if total + more > room:
                break
            total += more
            guess = step
        guess = max(guess, 1)
        found = fitting(guess)
        if found is not None:  # the measures ran high: fewer drops may fit
            lo, hi, step = 0, guess, 1
            while hi - step > 0:
                tokens = fitting(hi - step)
                if tokens is None:
                    lo = hi - step
                    break
                hi, found, step = hi - step, tokens, step * 2
        else:  # the template's markers take more: drop more
            lo, hi, step = guess, None, 1
            while hi is None:
                if lo == last:
                    raise ContextOverflow(self._too_long(kept(last), reserve, n_ctx, render))
                probe = min(lo + step, last)
                found = fitting(probe)
                if found is None:
                    lo, step = probe, step * 2
                else:
                    hi = probe
        while hi - lo > 1:
            mid = (lo + hi) // 2
            tokens = fitting(mid)
            if tokens is None:
                lo = mid
            else:
                hi, found = mid, tokens
        return kept(hi), cuts[hi], found

    def beyond(self, size: int, n: int) -> bool:
        """Whether a text of ``size`` characters is certainly more than ``n`` tokens,
        known without tokenizing it: no token stands for more than ``longest()``."""
        return self._longest is not None and size > n and size > n * self._longest()

    def check_size(self, text: str, reserve: int, n_ctx: int) -> None:
        """Refuse a raw prompt certainly too long for ``n_ctx`` with ``reserve`` kept,
        without tokenizing it (see ``beyond``)."""
        if self.beyond(len(text), n_ctx - reserve):
            raise ContextOverflow(
                f"the prompt is over {n_ctx - reserve} tokens ({len(text):,} characters), and "
                f"with {reserve} kept for the answer it does not fit the {n_ctx}-token context"
            )

    def _too_long(self, chat: list[Message], reserve: int, n_ctx: int, render: dict) -> str:
        if self.beyond(self.size(chat), n_ctx):
            size = f"over {n_ctx} tokens ({self.size(chat):,} characters)"
        else:
            size = f"{len(self.tokens(chat, **render))} tokens"
        return (
            f"the message is {size}, and with {reserve} kept for the reply it does not fit "
            f"the {n_ctx}-token context; shorten it or use a larger --ctx"
        )

    @staticmethod
    def size(messages: Sequence[Message]) -> int:
        """The characters of the messages' text."""
        return sum(len(c) for m in messages if isinstance(c := m.get("content"), str))

    def whole(
        self,
        messages: Sequence[Message],
        reserve: int,
        n_ctx: int,
        n_ctx_train: int,
        cancel=None,
        **render,
    ) -> list[int]:
        """The prompt's tokens, all of it or an error: for tasks that must not drop text.
        A text certainly too long (see ``longest``) is refused without tokenizing it."""
        size, room = self.size(messages), n_ctx - reserve
        tokens = None if self.beyond(size, room) else self.tokens(messages, None, cancel, **render)
        if tokens is None or len(tokens) > room:
            count = (
                f"{len(tokens)} tokens"
                if tokens is not None
                else f"over {room} tokens ({size:,} characters)"
            )
            raise ContextOverflow(
                f"the text is {count}, and with {reserve} kept for the answer "
                f"it does not fit the {n_ctx}-token context; use a larger --ctx "
                f"(this model was trained for {n_ctx_train})"
            )
        return tokens


def _drop_order(messages: Sequence[Message]) -> tuple[list[int], list[int]]:
    """The order old turns make way in (every message but system prompts and the last,
    oldest first), and how many of them are gone after each step: a user turn goes
    with the reply that answered it."""
    n = len(messages)
    order = [i for i in range(n - 1) if messages[i].get("role") != "system"]
    cuts, done = [0], 0
    while done < len(order):
        i = order[done]
        pair = (
            messages[i].get("role") == "user"
            and i + 1 < n - 1
            and messages[i + 1].get("role") == "assistant"
        )
        done += 2 if pair else 1
        cuts.append(done)
    return order, cuts


def _always(messages: Sequence[Message]) -> list[Message]:
    """What is never dropped: the system prompts and the last message."""
    return [m for m in messages[:-1] if m.get("role") == "system"] + list(messages[-1:])


def _why(exc: BaseException, name: bool = True) -> str:
    """An exception from template code, on one short line."""
    if isinstance(exc, RecursionError):
        return "it nests or recurses too deeply"
    text = " ".join(str(exc).split())[:160] or "no reason given"
    return f"{type(exc).__name__}: {text}" if name else text
