"""The options several commands share, each defined once: a model to load (one
ModelRequest, one fit check), a remote server, an assumed device, ``--json``.
Numbers and choices take their checks from the settings' schema (limits.py)."""

from __future__ import annotations

import argparse

from edgechat.limits import choices, flag


def add_json(p: argparse.ArgumentParser, what: str = "print it as JSON") -> None:
    p.add_argument("--json", action="store_true", help=what)


def add_kv_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--kv-cache",
        choices=choices("kv_cache"),
        help="KV cache type: q8_0 halves its memory, q4_0 quarters it (default f16)",
    )


def add_model_options(
    p: argparse.ArgumentParser,
    model_flag: bool = True,
    ctx_default: int | None = None,
    ctx_flag: str = "ctx",
) -> None:
    """The options of every command that loads a model: one ModelRequest, one fit check."""
    if model_flag:
        p.add_argument("-m", "--model", help="a GGUF file path or an installed model id")
    p.add_argument(
        "--ctx",
        type=flag(ctx_flag),
        default=ctx_default,
        metavar="N",
        help=f"context size in tokens (default {ctx_default or 'the ctx setting, 4096'})",
    )
    p.add_argument(
        "--threads", type=flag("threads"), metavar="N", help="CPU threads (default: the free cores)"
    )
    p.add_argument(
        "--gpu-layers",
        type=flag("gpu_layers"),
        metavar="N",
        help="layers to offload to the GPU (default: all that fit)",
    )
    add_kv_cache(p)
    p.add_argument(
        "--cpu-kernels",
        choices=choices("cpu_kernels"),
        help="llama.cpp's CPU kernels (default auto: those a check found safe and fast here)",
    )
    p.add_argument("--verbose", action="store_true", help="show llama.cpp's own log")
    p.add_argument(
        "--force", action="store_true", help="load even when the memory estimate says it won't fit"
    )
    add_device_options(p)


def add_sampling_options(p: argparse.ArgumentParser, *names: str) -> None:
    """--temperature, --seed, --max-tokens: checked like the settings of the same names."""
    helps = {
        "temperature": ("T", "sampling temperature"),
        "seed": ("N", "sampling seed, for repeatable replies"),
        "max_tokens": ("N", "longest reply in tokens"),
    }
    for name in names:
        metavar, what = helps[name]
        p.add_argument("--" + name.replace("_", "-"), type=flag(name), metavar=metavar, help=what)


def _server_address(text: str) -> str:
    """--remote is checked as it is parsed: an address that is not one is a usage error."""
    from edgechat.errors import EdgechatError
    from edgechat.llama.remote_http import check_url

    try:
        check_url(text)
    except EdgechatError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.strip()


def add_remote_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--remote",
        type=_server_address,
        metavar="URL",
        help="run on another machine's server instead: OpenAI-compatible (like "
        "http://HOST:8080/v1) or Ollama (like http://HOST:11434); the text is sent there",
    )
    p.add_argument("--remote-model", metavar="NAME", help="the server's model (default: its first)")
    p.add_argument(
        "--api-key", metavar="KEY", help="the server's API key (default: EDGECHAT_API_KEY, keyring)"
    )


def add_device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--memory", metavar="SIZE", help="assume this much RAM (like 8G)")
    p.add_argument("--vram", metavar="SIZE", help="assume this much GPU memory (like 6G)")


def add_gpu_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gpu",
        metavar="BACKEND:SIZE",
        help="plan for this GPU: cuda, rocm, vulkan or metal and its memory (like cuda:24G)",
    )
