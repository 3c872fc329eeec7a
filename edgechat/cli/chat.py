"""`edgechat chat`: the app, the line chat, or one answer."""

from __future__ import annotations

import contextlib
import os
import sys

from edgechat.cli.common import _interactive, _load_engine, _model_id, _sampling


def _wants_app(args) -> bool:
    """The full-screen app, unless asked for lines or talking to a pipe."""
    if args.plain or args.prompt or args.json:
        return False
    return sys.stdin.isatty() and sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


def cmd_chat(args) -> int:
    from edgechat import config, privacy
    from edgechat.cli.plain import PlainChat

    if _wants_app(args):
        from edgechat.tui.app import LaunchOptions, run

        return run(
            LaunchOptions(
                args.model,
                args.ctx,
                args.threads,
                args.gpu_layers,
                args.memory,
                args.vram,
                args.force,
                start="auto" if getattr(args, "no_command", False) else "chat",
                remote=args.remote,
                remote_model=args.remote_model,
                api_key=args.api_key,
            )
        )
    privacy.go_offline()
    settings = config.load()
    engine = _load_engine(args, settings)
    system = args.system if args.system is not None else settings.system_prompt
    session = PlainChat(
        engine,
        _sampling(args, settings),
        system,
        as_json=args.json,
        model=_model_id(args, settings),
    )
    if args.prompt:
        session.ask(args.prompt)
        return 0
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
