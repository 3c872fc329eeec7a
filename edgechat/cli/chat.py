"""`edgechat chat`: the app, the line chat, or one answer."""

from __future__ import annotations

import contextlib
import os
import sys

from edgechat.cli.common import _interactive, _load_engine, _model_id, _warn


def _wants_app(args) -> bool:
    """The full-screen app, unless asked for lines or talking to a pipe."""
    if args.plain or args.prompt or args.json:
        return False
    return sys.stdin.isatty() and sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


def _check_can_chat(engine, wanted_ctx: int) -> None:
    """Refuse a base model with the reason; say when the context was capped."""
    from edgechat.errors import EdgechatError
    from edgechat.service import chat_check

    check = chat_check(engine, wanted_ctx)
    if check.refusal:
        raise EdgechatError(check.refusal)
    for line in check.warnings:
        _warn(line)


def cmd_chat(args) -> int:
    from edgechat import config, privacy
    from edgechat.cli.plain import PlainChat

    if _wants_app(args):
        from edgechat.tui.app import LaunchOptions, run

        start = "auto" if getattr(args, "no_command", False) else "chat"
        return run(LaunchOptions.from_args(args, start))
    from edgechat.service import sampling

    privacy.go_offline()
    settings = config.load()
    engine = _load_engine(args, settings)
    _check_can_chat(engine, args.ctx or settings.ctx)
    system = args.system if args.system is not None else settings.system_prompt
    session = PlainChat(
        engine,
        sampling(settings, args),
        system,
        as_json=args.json,
        model=_model_id(args, settings),
    )
    if args.prompt:
        session.ask(args.prompt)
        return 130 if session.stopped else 0
    interactive = _interactive()
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401 - line editing and history for input()
        sys.stderr.write("Type a message; /help for commands, Ctrl-D to leave.\n")
        return session.run(lambda: input(">>> "), interactive=True)

    def read_line() -> str:
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")

    return session.run(read_line, interactive=False)


def register(sub) -> None:
    from edgechat.cli.options import add_model_options, add_remote_options, add_sampling_options

    chat = sub.add_parser(
        "chat", help="chat with a model, offline (full-screen; --plain for lines)"
    )
    add_model_options(chat)
    chat.add_argument("prompt", nargs="?", help="answer this one message and exit")
    chat.add_argument(
        "--plain",
        action="store_true",
        help="line mode, for SSH and scripts (piped: a blank line between replies)",
    )
    chat.add_argument("--system", metavar="TEXT", help="system prompt for this session")
    add_sampling_options(chat, "temperature", "seed", "max_tokens")
    chat.add_argument(
        "--json", action="store_true", help="print each reply as one JSON line (for scripts)"
    )
    add_remote_options(chat)
    chat.set_defaults(func=cmd_chat)
