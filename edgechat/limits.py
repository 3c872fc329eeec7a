"""The allowed range of every setting and flag, checked where a value enters.

One table for ``config set``, the config file and the command-line flags, so that
``--ctx 0`` and ``ctx = 0`` are refused with the same words. Standard library only:
the parser imports it at start-up.
"""

from __future__ import annotations

import math
import os

MIN_CTX = 512
MAX_CTX = 1 << 20  # 1M tokens: beyond every model in the catalog


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
}


def allowed(name: str, here: bool = True) -> str:
    """The range in words, for messages: '512 to 1048576'."""
    kind, low, high, low_in, _ = RANGES[name]
    if name == "threads" and here:
        high = max_threads()
    if name == "top_p":
        return "more than 0 and at most 1"
    if high is None:
        return f"{low} or more"
    return f"{low} to {high}" if low_in else f"more than {low} and at most {high}"


def check(name: str, value, here: bool = True):
    """``value`` (already a number) if it lies in ``name``'s range, else ValueError(words).

    ``here``: bound what depends on this machine (threads: twice its CPUs) too; a
    config file written on a bigger machine is not refused for that.
    """
    kind, low, high, low_in, what = RANGES[name]
    if name == "threads" and here:
        high = max_threads()
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


def parse(name: str, text: str):
    """A number from the command line or ``config set``, checked; ValueError(words) if not."""
    kind = RANGES[name][0]
    what = RANGES[name][4]
    try:
        value = int(text) if kind == "int" else float(text)
    except (TypeError, ValueError, OverflowError):
        whole = "a whole number" if kind == "int" else "a number"
        raise ValueError(f"{what} must be {whole} ({allowed(name)}), got {text!r}") from None
    return check(name, value)


def flag(name: str):
    """An argparse ``type=`` for the flag of setting ``name``."""
    import argparse

    def convert(text: str):
        try:
            return parse(name, text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = name  # argparse names the type in its messages
    return convert
