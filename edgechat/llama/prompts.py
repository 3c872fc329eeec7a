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
        template: str | None,
        architecture: str,
        bos_text: str,
        eos_text: str,
        tokenize: Callable[..., list[int]],
    ) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.has_template = bool(template)
        text = chat_template(template, architecture)
        self._bos_text = bos_text
        self._tokenize = tokenize
        self._formatter = Jinja2ChatFormatter(template=text, eos_token=eos_text, bos_token=bos_text)

    def format(self, messages: Sequence[Message]) -> str:
        """The prompt text, rendered with the model's own chat template."""
        from edgechat.llama.bounded import RenderTimeout, deadline

        try:
            with deadline():  # the template is the file's code: bounded (see bounded.py)
                return self._formatter(messages=list(messages)).prompt
        except RenderTimeout:
            raise EdgechatError(
                "the model's chat template ran too long (a loop in the file?) and was "
                "stopped; use another model, or a fixed copy of this one"
            ) from None
        except Exception as exc:  # jinja2 errors, raise_exception() in templates
            raise EdgechatError(
                f"the model's chat template rejected the conversation: {exc}"
            ) from None

    def tokens(self, messages: Sequence[Message]) -> list[int]:
        prompt = self.format(messages)
        # A template that writes the BOS text itself must not get a second BOS.
        has_bos = bool(self._bos_text) and prompt.startswith(self._bos_text)
        return self._tokenize(prompt, add_special=not has_bos, parse_special=True)

    def continued(self, messages: Sequence[Message], partial: str) -> list[int]:
        """The chat up to an assistant reply that ended early, then that partial reply,
        left open: generating from here writes more of it."""
        prompt = self.format(messages) + partial
        has_bos = bool(self._bos_text) and prompt.startswith(self._bos_text)
        return self._tokenize(prompt, add_special=not has_bos, parse_special=True)

    def fit(
        self, messages: Sequence[Message], reserve: int, n_ctx: int
    ) -> tuple[list[Message], int, list[int]]:
        """Drop the oldest turns (never system prompts, never the last message) until the
        prompt plus ``reserve`` tokens for the reply fits ``n_ctx``.

        Returns the kept messages, how many were dropped, and the prompt's tokens.
        """
        kept = list(messages)
        dropped = 0
        while True:
            tokens = self.tokens(kept)
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
        self, messages: Sequence[Message], reserve: int, n_ctx: int, n_ctx_train: int
    ) -> list[int]:
        """The prompt's tokens, all of it or an error: for tasks that must not drop text."""
        tokens = self.tokens(messages)
        if len(tokens) + reserve > n_ctx:
            raise ContextOverflow(
                f"the text is {len(tokens)} tokens, and with {reserve} kept for the answer "
                f"it does not fit the {n_ctx}-token context; use a larger --ctx "
                f"(this model was trained for {n_ctx_train})"
            )
        return tokens
