"""The one schema of every setting and flag: the allowed range of each number and the
allowed values of each choice, checked where a value enters.

Everything that takes a value derives its checks from here: the command-line flags
(``flag``, ``choices``), ``config set`` and the config file (config.py), the app's
settings dialog and the server's request validation (``field``). So ``--ctx 0``,
``ctx = 0`` in the file and ``0`` in the dialog are refused with the same words.
Standard library only: the parser imports it at start-up.
"""

from __future__ import annotations

import math
import os

MIN_CTX = 512
MAX_CTX = 1 << 20  # 1M tokens: beyond every model in the catalog
RANDOM_SEED = 0xFFFFFFFF  # llama.cpp's LLAMA_DEFAULT_SEED: a new random seed; -1 to the user


def max_threads() -> int:
    return max(2, 2 * (os.cpu_count() or 1))


# name -> (kind, low, high, low inclusive, what it means); None: no bound on that side.
RANGES: dict[str, tuple[str, float | None, float | None, bool, str]] = {
    "ctx": ("int", MIN_CTX, MAX_CTX, True, "context size in tokens"),
    "threads": ("int", 0, 1024, True, "CPU threads (0: one per physical core)"),
    "gpu_layers": ("int", -1, 100_000, True, "layers on the GPU (-1: all that fit)"),
    "temperature": ("float", 0.0, 2.0, True, "sampling temperature"),
    "top_k": ("int", 0, 1000, True, "top-k (0: off)"),
    "top_p": ("float", 0.0, 1.0, False, "top-p"),
    "min_p": ("float", 0.0, 1.0, True, "min-p"),
    "repeat_penalty": ("float", 1.0, 2.0, True, "repeat penalty (1: off)"),
    "max_tokens": ("int", 1, 131072, True, "longest reply in tokens"),
    "seed": ("int", -1, 2**32 - 2, True, "sampling seed (-1: random)"),
    "snapshot_cap_mb": ("int", 0, 1 << 20, True, "KV snapshot space in MB (0: off)"),
    "chunk": ("int", 64, MAX_CTX, True, "chunk size in tokens"),
    "repeat": ("int", 1, 1000, True, "runs per model"),
    "tokens": ("int", 1, MAX_CTX, True, "tokens to generate"),
    "limit": ("int", 1, 10_000, True, "how many to show"),
    "port": ("int", 0, 65535, True, "port (0: any free one)"),
    "parallel": ("int", 1, 256, True, "requests generated at once"),
    "queue": ("int", 1, 100_000, True, "requests that may wait"),
}

# name -> (the allowed values, what it means)
CHOICES: dict[str, tuple[tuple[str, ...], str]] = {
    "kv_cache": (("f16", "q8_0", "q4_0"), "KV cache type"),
    "task": (("chat", "code", "math", "summarise"), "what the model is for"),
    "length": (("short", "medium", "long"), "summary length"),
    "style": (("paragraph", "bullets"), "summary style"),
    "recipe": (("uniform", "mixed"), "quantisation recipe"),
}


def _bounds(name: str, here: bool) -> tuple[str, float | None, float | None, bool, str]:
    kind, low, high, low_in, what = RANGES[name]
    if name == "threads" and here:
        high = max_threads()
    return kind, low, high, low_in, what


def allowed(name: str, here: bool = True) -> str:
    """The range in words, for messages: '512 to 1048576'."""
    _, low, high, low_in, _ = _bounds(name, here)
    if high is None:
        return f"{low} or more" if low_in else f"more than {low}"
    return f"{low} to {high}" if low_in else f"more than {low} and at most {high}"


def check(name: str, value, here: bool = True):
    """``value`` (already a number) if it lies in ``name``'s range, else ValueError(words).

    ``here``: bound what depends on this machine (threads: twice its CPUs) too; a
    config file written on a bigger machine is not refused for that.
    """
    kind, low, high, low_in, what = _bounds(name, here)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number ({allowed(name, here)}), got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number ({allowed(name, here)}), got {value}")
    if kind == "int" and value != int(value):
        raise ValueError(f"{what} must be a whole number ({allowed(name, here)}), got {value}")
    too_low = low is not None and (value < low if low_in else value <= low)
    if too_low or (high is not None and value > high):
        raise ValueError(f"{what} must be {allowed(name, here)}, got {value}")
    return int(value) if kind == "int" else float(value)


def parse(name: str, text: str, here: bool = True):
    """A number typed by the user (a flag, ``config set``, the app's dialog), checked;
    ValueError(words) if it is not one or is out of range."""
    if name in CHOICES:
        return check_choice(name, text)
    kind, what = RANGES[name][0], RANGES[name][4]
    try:
        value = int(text) if kind == "int" else float(text)
    except (TypeError, ValueError, OverflowError):
        whole = "a whole number" if kind == "int" else "a number"
        raise ValueError(
            f"{what} must be {whole} ({allowed(name, here)}), got {text!r}"
        ) from None
    return check(name, value, here)


def choices(name: str) -> tuple[str, ...]:
    """The allowed values of choice ``name``."""
    return CHOICES[name][0]


def check_choice(name: str, value) -> str:
    options, what = CHOICES[name]
    if value not in options:
        raise ValueError(f"{what} must be one of {', '.join(options)}, got {value!r}")
    return value


def flag(name: str):
    """An argparse ``type=`` for the flag of setting ``name`` (a number)."""
    import argparse

    def convert(text: str):
        try:
            return parse(name, text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = name  # argparse names the type in its messages
    return convert


def field(name: str) -> dict:
    """``name``'s bounds as pydantic ``Field`` keywords (ge/gt/le), for request models."""
    _, low, high, low_in, _ = _bounds(name, here=False)
    out: dict = {}
    if low is not None:
        out["ge" if low_in else "gt"] = low
    if high is not None:
        out["le"] = high
    return out
