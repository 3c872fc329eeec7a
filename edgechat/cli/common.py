"""What several commands share: loading a model through the service with a progress
line, how warnings and counters look on stderr, sizes.
"""

from __future__ import annotations

import sys


def _interactive() -> bool:
    return sys.stdin.isatty()


def _warn(line: str) -> None:
    sys.stderr.write(f"edgechat: {line}\n")


def _request(args, settings, **changes):
    """The ModelRequest for this command's options (every model-loading command has them)."""
    from dataclasses import replace

    from edgechat.service import ModelRequest

    return replace(ModelRequest.from_args(args, settings), **changes)


def _load_engine(args, settings, **changes):
    """Resolve the model, check it fits, load it, with a progress line on a terminal;
    with --remote, connect to that server instead (saying where the text will go)."""
    from edgechat.service import open_model

    show = sys.stderr.isatty()

    def loading(name: str) -> None:
        if show:
            sys.stderr.write(f"loading {name} ...")
            sys.stderr.flush()

    engine = open_model(_request(args, settings, **changes), say=_warn, loading=loading).engine
    if show and engine.is_local:
        sys.stderr.write(
            f"\rloaded {engine.plan.model_path.name} in {engine.load_s:.1f} s · "
            f"context {engine.n_ctx} tokens\n"
        )
    return engine


def _model_id(args, settings) -> str:
    """The model as the user named it (--model, else the default, else the starter's id),
    not the name written inside the file."""
    from edgechat.models import registry

    return args.model or settings.default_model or registry.STARTER_ID


def _size(n: int | None) -> str:
    from edgechat.facts.device import format_size

    return format_size(n)


def _counter(what: str):
    """Progress ``what i/n`` (and the time left, when known) through the CLI's one
    renderer (cli/progress.py)."""
    from edgechat.cli.progress import counter

    return counter(what)


def _clear_line() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
