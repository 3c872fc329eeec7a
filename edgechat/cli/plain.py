"""The line-mode chat: for SSH sessions, dumb terminals and scripts.

It only reads lines and renders replies; the engine does the work.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TextIO

from edgechat.errors import EdgechatError
from edgechat.llama.contract import ChatEngine
from edgechat.llama.reply import Stats
from edgechat.planning.plan import Sampling
from edgechat.tasks.conversations import Conversation, Message

HELP = """Commands:
  /reset         forget the conversation (keeps the system prompt)
  /stats         speed and context use of the last reply
  /system TEXT   set the system prompt (and start afresh)
  /help          this list
  /quit          leave (also /exit, /bye, or Ctrl-D)
Ctrl-C stops a reply. Type \"\"\" on a line of its own to start and end a multi-line message."""


def format_stats(stats: Stats | None) -> str:
    if stats is None:
        return "no reply yet"
    return (
        f"prompt {stats.prompt_eval_tokens} tok at {stats.prompt_tps:.0f} tok/s"
        f" ({stats.prompt_tokens - stats.prompt_eval_tokens} cached)"
        f" · reply {stats.gen_tokens} tok at {stats.gen_tps:.1f} tok/s"
        f" · first token {stats.ttft_s:.2f} s"
        f" · context {stats.n_ctx_used}/{stats.n_ctx}"
        f" · load {stats.load_s:.2f} s"
        + (f" · {stats.threads} thread{'s' * (stats.threads > 1)}" if stats.threads else "")
        + ("" if stats.finish == "stop" else f" · ended: {stats.finish}")
    )


class PlainChat:
    def __init__(
        self,
        engine: ChatEngine,
        sampling: Sampling,
        system: str,
        out: TextIO | None = None,
        err: TextIO | None = None,
        as_json: bool = False,
        model: str | None = None,
    ) -> None:
        self.engine = engine
        self.model = model  # the id the user gave (or the default's), for --json
        self.sampling = sampling
        self.conv = Conversation(None, "", system)  # in memory: line mode keeps no history
        self.out = out or sys.stdout  # looked up now: tests and the app swap them
        self.err = err or sys.stderr
        self.as_json = as_json
        self.last_stats: Stats | None = None
        self.stopped = False  # the last reply was cut by Ctrl-C
        self.failed = False  # a message could not be answered (piped: exit 1 at the end)
        self._hinted = False  # the hint to use fewer threads was given
        self._answered = False  # a reply was written (on a pipe, the next is set apart)

    # -- one message ---------------------------------------------------------------

    def ask(self, text: str) -> str:
        """Send one user message, stream the reply; Ctrl-C keeps what came so far."""
        turns = self.conv.messages
        turns.append(Message(None, "user", text))
        try:
            reply = self.engine.chat(self.conv.prompt(), self.sampling)
        except EdgechatError:
            turns.pop()
            raise
        if reply.dropped:
            # The engine dropped the oldest turns to fit; forget them here too.
            del turns[: reply.dropped]
            self.err.write(f"[context full: the {reply.dropped} oldest messages were dropped]\n")
        pieces = iter(reply)
        self.stopped = False
        from edgechat.text import clean

        ended = False  # an empty reply still gets its (empty) line
        try:
            for piece in pieces:
                if not self.as_json and piece:  # a model's text, not the terminal's commands
                    self.out.write(clean(piece, keep_newlines=True))
                    self.out.flush()
                    ended = piece.endswith("\n")
        except KeyboardInterrupt:
            pieces.close()
            self.stopped = True
        except EdgechatError:  # a server that broke off: the partial reply is not kept
            if not self.as_json and reply.text and not ended:
                self.out.write("\n")
            turns.pop()
            raise
        if not ended and not self.as_json:
            self.out.write("\n")  # each reply ends its line, once
        if self.stopped:
            self.err.write("[stopped]\n")
        self.last_stats = reply.stats
        self._hint_if_slow(reply.stats)
        stats = reply.stats.as_dict() if reply.stats else None
        if reply.text:
            turns.append(
                Message(None, "assistant", reply.text, model=self.model or "", stats=stats)
            )
        else:
            turns.pop()
        if self.as_json:
            record = {"model": self.model, "prompt": text, "reply": reply.text}
            record["stats"] = self.last_stats.as_dict() if self.last_stats else None
            self.out.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.out.flush()
        return reply.text

    def _hint_if_slow(self, stats: Stats | None) -> None:
        """Once a session: a reply far below the speed estimate suggests fewer threads."""
        from edgechat.planning.threads import slow_hint

        expected = getattr(self.engine, "expected_tps", None)
        if stats is None or self._hinted or not expected:
            return
        hint = slow_hint(stats.gen_tps, stats.gen_tokens, expected, stats.threads)
        if hint:
            self._hinted = True
            self.err.write(f"[{hint[0]}; try --threads {hint[1]}]\n")

    # -- commands ------------------------------------------------------------------

    def command(self, line: str) -> bool:
        """Run a /command; returns False when the user asked to leave."""
        name, _, arg = line.partition(" ")
        name = name.lower()
        if name in ("/quit", "/exit", "/bye"):
            return False
        if name == "/reset":
            self.conv.messages.clear()
            self.err.write("[conversation cleared]\n")
        elif name == "/stats":
            remote = not self.engine.is_local  # its memory is the server's
            head = f"remote model at {self.engine.where} · measured here: " if remote else ""
            threads = getattr(self.engine, "threads", None)  # how the default was chosen
            why = f" ({threads.why})" if threads and self.last_stats else ""
            self.err.write(head + format_stats(self.last_stats) + why + "\n")
        elif name == "/system":
            if arg.strip():
                self.conv.system = arg.strip()
                self.conv.messages.clear()
                self.err.write("[system prompt set; conversation cleared]\n")
            else:
                self.err.write(f"system prompt: {self.conv.system or '(none)'}\n")
        elif name in ("/help", "/?"):
            self.err.write(HELP + "\n")
        else:
            self.err.write(f"unknown command {name}; /help lists them\n")
        return True

    # -- the loop ------------------------------------------------------------------

    def run(self, read_line: Callable[[], str], interactive: bool) -> int:
        """Read and answer until EOF or /quit. ``read_line`` raises EOFError at the end."""
        while True:
            try:
                line = read_line()
            except EOFError:
                if interactive:
                    self.err.write("\n")
                return 1 if self.failed and not interactive else 0
            except KeyboardInterrupt:
                if not interactive:
                    return 130
                self.err.write("\n(Ctrl-D or /quit to leave)\n")
                continue
            if line.strip() == '"""':
                line = self._read_block(read_line)
                if line is None:
                    return 0
            text = line.strip()
            if not text:
                continue
            if text.startswith("/") and not text.startswith("//"):
                if not self.command(text):
                    return 0
                continue
            if not interactive and self._answered and not self.as_json:
                self.out.write("\n")  # a blank line between replies: where one ends is clear
            try:
                self.ask(text)
                self._answered = True
            except EdgechatError as exc:
                self.failed = True
                self.err.write(f"edgechat: {exc}\n")

    def _read_block(self, read_line: Callable[[], str]) -> str | None:
        lines = []
        while True:
            try:
                line = read_line()
            except EOFError:
                return "\n".join(lines) if lines else None
            if line.strip() == '"""':
                return "\n".join(lines)
            lines.append(line)
