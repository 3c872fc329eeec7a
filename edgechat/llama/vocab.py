"""A model's vocabulary through llama.cpp's C API: text to tokens and back. A token's
bytes are asked of llama.cpp once and kept, because turning tokens into text runs once
per generated token (and each C call hands the GIL over, which costs most when a server
streams to several clients)."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence


class Vocab:
    def __init__(self, lc, model) -> None:
        self._lc = lc
        self.ptr = lc.llama_model_get_vocab(model)  # what the C API calls take
        self.buf = ctypes.create_string_buffer(256)  # a token's text (grown when short)
        self._pieces: dict[int, bytes] = {}  # token -> its bytes, as they are met
        self._guide_tokens = None  # llguidance's view of it (llama/grammar.py), once needed
        self._longest: int | None = None

    @property
    def n_tokens(self) -> int:
        return self._lc.llama_vocab_n_tokens(self.ptr)

    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = False
    ) -> list[int]:
        lc = self._lc
        data = text.encode("utf-8")
        cap = len(data) + 16
        arr = (lc.llama_token * cap)()
        n = lc.llama_tokenize(self.ptr, data, len(data), arr, cap, add_special, parse_special)
        if n < 0:
            cap = -n
            arr = (lc.llama_token * cap)()
            n = lc.llama_tokenize(self.ptr, data, len(data), arr, cap, add_special, parse_special)
        return list(arr[:n])

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", "replace")

    def piece(self, token: int, special: bool = False) -> bytes:
        """The bytes a token stands for (part of a UTF-8 character, maybe)."""
        if not special:
            known = self._pieces.get(token)
            if known is None:
                known = self._pieces[token] = self._piece(token, False)
            return known
        return self._piece(token, True)

    def _piece(self, token: int, special: bool) -> bytes:
        buf = self.buf
        n = self._lc.llama_token_to_piece(self.ptr, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._lc.llama_token_to_piece(self.ptr, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def longest(self) -> int:
        """The most bytes one token stands for (special tokens' text included), found
        once: a text of more than ``n * longest()`` bytes is more than n tokens (for
        byte-pair and SentencePiece vocabularies, which drop no text). Its own buffer:
        another thread may be turning tokens into text meanwhile."""
        if self._longest is None:
            lc, buf, most = self._lc, ctypes.create_string_buffer(1024), 4
            for token in range(self.n_tokens):
                n = lc.llama_token_to_piece(self.ptr, token, buf, len(buf), 0, True)
                most = max(most, abs(n))
            self._longest = most
        return self._longest

    @property
    def keeps_text(self) -> bool:
        """Whether every byte of a text is in some token's piece (byte-pair encoding and
        SentencePiece; WordPiece and Unigram may drop or fold whitespace)."""
        return self._lc.llama_vocab_type(self.ptr) in (1, 2)  # LLAMA_VOCAB_TYPE_SPM, _BPE

    def text(self, token: int) -> str:
        """A token's own text as the vocabulary stores it ('' for none)."""
        if token < 0:
            return ""
        text = self._lc.llama_vocab_get_text(self.ptr, token)
        return text.decode("utf-8", "replace") if text else ""

    def bos_text(self) -> str:
        return self.text(self._lc.llama_vocab_bos(self.ptr))

    def eos_text(self) -> str:
        return self.text(self._lc.llama_vocab_eos(self.ptr))

    def texts(self) -> list[str]:
        """Every token's text, in id order (to tell whether two models share one)."""
        return [self.text(t) for t in range(self.n_tokens)]

    def close(self) -> None:
        """Let go of llguidance's view, which points into the model's vocabulary: the
        model is being freed (and the view holds tens of MB)."""
        self._guide_tokens = None

    def guide_tokens(self):
        """llguidance's view of this vocabulary, built when a reply first needs it."""
        if self._guide_tokens is None:
            from edgechat.llama.grammar import tokenizer

            lc = self._lc
            ends = {lc.llama_vocab_eos(self.ptr), lc.llama_vocab_eot(self.ptr)}
            self._guide_tokens = tokenizer(lc, self, sorted(t for t in ends if t >= 0))
        return self._guide_tokens
