"""`edgechat chat`: the app, the line chat, or one answer."""

from __future__ import annotations

import contextlib
import os
import sys

from edgechat.cli.common import _interactive, _load_engine, _model_id, _warn


def _wants_app(args) -> bool:
    """The full-screen app, unless asked for lines or talking to a pipe."""
    if args.plain or args.prompt or args.json or getattr(args, "schema", None):
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
    schema = _schema_args(args)
    engine = _load_engine(args, settings)
    _check_can_chat(engine, args.ctx or settings.ctx)
    system = args.system if args.system is not None else settings.system_prompt
    if schema is not None:
        return _answer_as_json(args, engine, sampling(settings, args), system, schema, settings)
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


def _schema_args(args):
    """--schema: the schema, and the one message it answers (the prompt, or stdin)."""
    if not getattr(args, "schema", None):
        return None
    from edgechat.errors import EdgechatError
    from edgechat.llama.grammar import json_grammar
    from edgechat.tasks.structured import load_schema

    schema = load_schema(args.schema)
    json_grammar(schema)  # refused before the model loads
    if not args.prompt and not sys.stdin.isatty():
        args.prompt = sys.stdin.read().strip()
    if not args.prompt:
        raise EdgechatError('--schema answers one message: give it, as in chat --schema S "..."')
    return schema


def _answer_as_json(args, engine, sampling, system, schema, settings) -> int:
    import json

    from edgechat.tasks.structured import answer

    try:
        value, text, stats = answer(engine, args.prompt, schema, sampling, system)
    except KeyboardInterrupt:
        sys.stderr.write("[stopped]\n")
        return 130
    if args.json:
        record = {"model": _model_id(args, settings), "prompt": args.prompt, "reply": value}
        record["stats"] = stats.as_dict() if stats else None
        text = json.dumps(record, ensure_ascii=False)
    sys.stdout.write(text + "\n")
    return 0


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
    chat.add_argument(
        "--schema",
        metavar="FILE|JSON",
        help="answer the one message as JSON matching this JSON schema (a file, or the "
        "schema itself), for scripts",
    )
    add_remote_options(chat)
    chat.set_defaults(func=cmd_chat)
