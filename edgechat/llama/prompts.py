"""Prompt templating and the context policy: messages -> prompt text -> tokens that fit.

Kept apart from the engine because it is plain text work: the model's own Jinja
chat template (or a family default when the GGUF has none), the BOS rule, and which
old turns make way when a conversation outgrows the context.
"""

from __future__ import annotations

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

    ``tokenize(text, add_special, parse_special)`` is the model's tokenizer.
    """

    def __init__(
        self,
        template: str | bytes | None,
        architecture: str,
        bos_text: str,
        eos_text: str,
        tokenize: Callable[..., list[int]],
    ) -> None:
        """``template``: the file's own, as its bytes or text. One that cannot be read,
        compiled or rendered for a new chat gives way to the family format, as
        llama.cpp's own server does; ``problem`` says what was wrong with it."""
        self.has_template = bool(template)
        self.family = "Gemma" if architecture.startswith("gemma") else "ChatML"  # a fallback
        self._bos_text, self._eos_text = bos_text, eos_text
        self._tokenize = tokenize
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

    def format(self, messages: Sequence[Message], **variables) -> str:
        """The prompt text, rendered with the model's own chat template (``variables``:
        ``tools``, ``enable_thinking`` ... for templates that take them)."""
        from edgechat.llama.bounded import RenderTimeout, deadline

        try:
            with deadline():  # the template is the file's code: bounded (see bounded.py)
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

    def tokens(self, messages: Sequence[Message], prefill: str = "", **variables) -> list[int]:
        """The prompt's tokens; ``prefill``: the start of the reply, written for it."""
        prompt = self.format(messages, **variables) + prefill
        # A template that writes the BOS text itself must not get a second BOS.
        has_bos = bool(self._bos_text) and prompt.startswith(self._bos_text)
        return self._tokenize(prompt, add_special=not has_bos, parse_special=True)

    def continued(self, messages: Sequence[Message], partial: str) -> list[int]:
        """The chat up to an assistant reply that ended early, then that partial reply,
        left open: generating from here writes more of it."""
        return self.tokens(messages, partial)

    def fit(
        self, messages: Sequence[Message], reserve: int, n_ctx: int, **render
    ) -> tuple[list[Message], int, list[int]]:
        """Drop the oldest turns (never system prompts, never the last message) until the
        prompt plus ``reserve`` tokens for the reply fits ``n_ctx``.

        Returns the kept messages, how many were dropped, and the prompt's tokens.
        ``render``: what ``tokens`` takes besides the messages.
        """
        kept = list(messages)
        dropped = 0
        while True:
            tokens = self.tokens(kept, **render)
            if len(tokens) + reserve <= n_ctx:
                return kept, dropped, tokens
            droppable = [i for i, m in enumerate(kept[:-1]) if m.get("role") != "system"]
            if not droppable:
                raise ContextOverflow(
                    f"the message is {len(tokens)} tokens, and with {reserve} kept for the reply "
                    f"it does not fit the {n_ctx}-token context; shorten it or use a larger "
                    "--ctx"
                )
            first = droppable[0]
            n = 1
            # Drop a whole exchange: a user turn and the reply that answered it.
            if (
                kept[first].get("role") == "user"
                and first + 1 < len(kept) - 1
                and kept[first + 1].get("role") == "assistant"
            ):
                n = 2
            del kept[first : first + n]
            dropped += n

    def whole(
        self, messages: Sequence[Message], reserve: int, n_ctx: int, n_ctx_train: int, **render
    ) -> list[int]:
        """The prompt's tokens, all of it or an error: for tasks that must not drop text."""
        tokens = self.tokens(messages, **render)
        if len(tokens) + reserve > n_ctx:
            raise ContextOverflow(
                f"the text is {len(tokens)} tokens, and with {reserve} kept for the answer "
                f"it does not fit the {n_ctx}-token context; use a larger --ctx "
                f"(this model was trained for {n_ctx_train})"
            )
        return tokens


def _why(exc: BaseException, name: bool = True) -> str:
    """An exception from template code, on one short line."""
    if isinstance(exc, RecursionError):
        return "it nests or recurses too deeply"
    text = " ".join(str(exc).split())[:160] or "no reason given"
    return f"{type(exc).__name__}: {text}" if name else text
