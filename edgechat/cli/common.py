"""What several commands share: loading a model with its fit check, sampling from settings,
sizes and counters.
"""

from __future__ import annotations

import sys


def _interactive() -> bool:
    return sys.stdin.isatty()


def _open_remote(args):
    """A remote engine for --remote; says where the text will go before any is sent."""
    from edgechat.llama.remote import RemoteEngine
    from edgechat.models import credentials

    key, _ = credentials.api_key(getattr(args, "api_key", None))
    engine = RemoteEngine(args.remote, getattr(args, "remote_model", None), key)
    sys.stderr.write(
        f"remote model {engine.model} at {engine.url}: your text is sent to {engine.where} "
        "and answered there, not on this machine\n"
    )
    return engine


def _load_engine(args, settings):
    """Resolve the model, check it fits, load it, with a progress line on a terminal.
    With --remote, connect to that server instead."""
    if getattr(args, "remote", None):
        return _open_remote(args)
    from edgechat.llama import backend

    backend.load()  # before the header is read with gguf (numpy): see llama/backend.py
    from edgechat.llama.engine import Engine
    from edgechat.models import registry
    from edgechat.service import checked_plan

    plan = checked_plan(
        args.model,
        settings,
        args.ctx,
        args.threads,
        args.gpu_layers,
        args.memory,
        args.vram,
        args.force,
        kv_cache=getattr(args, "kv_cache", None),
    )
    name = plan.model_path.name
    show = sys.stderr.isatty()
    if show:
        sys.stderr.write(f"loading {name} ...")
        sys.stderr.flush()
    engine = Engine(plan, verbose=args.verbose)
    registry.touch(plan.model_path)
    if show:
        sys.stderr.write(
            f"\rloaded {name} in {engine.load_s:.1f} s · context {engine.n_ctx} tokens\n"
        )
    return engine


def _model_id(args, settings) -> str:
    """The model as the user named it (--model, else the default, else the starter's id),
    not the name written inside the file."""
    from edgechat.models import registry

    return args.model or settings.default_model or registry.STARTER_ID


def _sampling(args, settings, **overrides):
    from edgechat.planning.plan import Sampling

    values = settings.sampling_values()
    values.update(overrides)
    if getattr(args, "temperature", None) is not None:
        values["temperature"] = args.temperature
    if getattr(args, "max_tokens", None) is not None:
        values["max_tokens"] = args.max_tokens
    if getattr(args, "seed", None) is not None:
        values["seed"] = args.seed
    return Sampling(**values)


def _size(n: int | None) -> str:
    from edgechat.facts.device import format_size

    return format_size(n)


def _counter(what: str):
    """Progress ``what i/n`` on stderr: redrawn on a terminal, every tenth otherwise."""
    tty = sys.stderr.isatty()
    shown = {-1}

    def show(i: int, n: int) -> None:
        tenth = 10 * i // max(n, 1)
        if tty:
            sys.stderr.write(f"\r\033[K{what} {i}/{n}")
        elif tenth not in shown:
            shown.add(tenth)
            sys.stderr.write(f"{what} {i}/{n}\n")
        sys.stderr.flush()

    return show
