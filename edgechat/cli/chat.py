"""`edgechat chat`: the app, the line chat, or one answer."""

from __future__ import annotations

import contextlib
import os
import sys

from edgechat.cli.common import _interactive, _load_engine


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

        start = "auto" if getattr(args, "no_command", False) else "chat"
        return run(LaunchOptions.from_args(args, start))
    from edgechat.service import sampling

    privacy.go_offline()
    settings = config.load()
    engine = _load_engine(args, settings)
    system = args.system if args.system is not None else settings.system_prompt
    session = PlainChat(engine, sampling(settings, args), system, as_json=args.json)
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
