"""The ``edgechat`` command line: parse arguments, call the services, render.

Start-up must stay instant (a Raspberry Pi runs this): only the standard library is
imported here; each command imports what it needs when it runs.

Exit codes: 0 ok, 1 a problem the message explains, 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys

from edgechat import __version__

# The command modules, in the order `edgechat --help` lists their commands. Each one
# adds its own subcommands in ``register(sub)``, beside its ``cmd_*`` functions; a new
# area is one more name here. They import only the standard library at module level.
AREAS = (
    "chat",
    "summarise",
    "serve",
    "facts",
    "models",
    "lab",
    "calibrate",
    "shrink",
    "history",
    "admin",
    "completion",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="edgechat",
        description="A private assistant that runs entirely on this device. "
        "With no command it opens a chat.",
    )
    parser.add_argument("--version", action="version", version=f"edgechat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for area in AREAS:
        importlib.import_module(f"edgechat.cli.{area}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The program (``argv`` None) runs its command in a supervised child process
    (cli/supervise.py: a native crash in llama.cpp gives one line and a usable terminal);
    a caller passing ``argv`` (the tests) runs it here."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        # No command: the app (or, on a pipe, the line chat), with the model picker first.
        args = parser.parse_args(["chat", *(argv if argv is not None else sys.argv[1:])])
        args.no_command = True
    if argv is None and args.command != "completion":
        from edgechat.cli import supervise
        from edgechat.cli.chat import _wants_app

        app = args.command == "chat" and _wants_app(args)  # it stores a reply as it streams
        saved = "the chat is saved up to the crash" if app else ""
        return supervise.run(lambda: _run(args), f"edgechat {args.command}", saved)
    return _run(args)


def _run(args) -> int:
    from edgechat.errors import EdgechatError

    try:
        return args.func(args)
    except EdgechatError as exc:
        from edgechat.text import clean

        sys.stderr.write(f"edgechat: {clean(exc)}\n")  # names from files and the hub inside
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return 130
    except BrokenPipeError:
        # The reader went away (`edgechat ... | head`): not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
