"""The one schema of every setting and flag: the allowed range of each number and the
allowed values of each choice, checked where a value enters.

Everything that takes a value derives its checks from here: the command-line flags
(``flag``, ``choices``), ``config set`` and the config file (config.py), the app's
settings dialog and the server's request validation (``field``). So ``--ctx 0``,
``ctx = 0`` in the file and ``0`` in the dialog are refused with the same words.
The model catalog (models.toml, shipped and the user's) is checked from here too
(``CATALOG``, ``ARCH``, ``check_value``), so a number in a file is held to the same
words as one typed at a flag. Standard library only: the parser imports it at start-up.
"""

from __future__ import annotations

import math
import os
import re

MIN_CTX = 512
MAX_CTX = 1 << 20  # 1M tokens: beyond every model in the catalog
RANDOM_SEED = 0xFFFFFFFF  # llama.cpp's LLAMA_DEFAULT_SEED: a new random seed; -1 to the user


def max_threads() -> int:
    return max(2, 2 * (os.cpu_count() or 1))


# name -> (kind, low, high, low inclusive, what it means); None: no bound on that side.
RANGES: dict[str, tuple[str, float | None, float | None, bool, str]] = {
    "ctx": ("int", MIN_CTX, MAX_CTX, True, "context size in tokens"),
    "threads": ("int", 0, 1024, True, "CPU threads (0: the free cores, chosen at load)"),
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
    "chunks": ("int", 1, None, True, "chunks of text"),
    "repeat": ("int", 1, 1000, True, "runs per model"),
    "tokens": ("int", 1, MAX_CTX, True, "tokens to generate"),
    "limit": ("int", 1, 10_000, True, "how many to show"),
    "port": ("int", 0, 65535, True, "port (0: any free one)"),
    "parallel": ("int", 1, 64, True, "replies generated at once"),
    "queue": ("int", 1, 100_000, True, "requests that may wait"),
    # What a client of `serve` may ask for in one request (OpenAI's and Ollama's fields);
    # the cost of each is bounded, so no request can take the server's memory or time.
    "api_seed": ("int", -(2**63), 2**64 - 1, True, "sampling seed"),
    "stops": ("int", 0, 16, True, "stop strings"),
    "stop_chars": ("int", 1, 256, True, "characters in a stop string"),
    "repeat_last_n": ("int", -1, MAX_CTX, True, "repeat window in tokens (-1: the context)"),
    "num_predict": ("int", -2, 131072, True, "longest reply in tokens (-1, -2: the context)"),
    "num_ctx": ("int", 1, MAX_CTX, True, "context in tokens"),
    "cache_key": ("int", 1, 1024, True, "characters in a cache key"),
    # The catalog's numbers (models.toml): an entry's, then its arch table's.
    "catalog_params_b": ("float", 0.0, 10_000.0, False, "parameters in billions"),
    "catalog_context": ("int", MIN_CTX, MAX_CTX, True, "trained context in tokens"),
    "arch_layers": ("int", 1, 1024, True, "number of layers"),
    "arch_embd": ("int", 1, 1 << 17, True, "hidden size"),
    "arch_ff": ("int", 1, 1 << 20, True, "feed-forward size"),
    "arch_vocab": ("int", 1, 1 << 22, True, "vocabulary size"),
    "arch_heads": ("int", 1, 1024, True, "attention heads"),
    "arch_kv_heads": ("int", 1, 1024, True, "key/value heads"),
    "arch_head_dim": ("int", 1, 4096, True, "size of one attention head"),
    "arch_sliding_window": ("int", 1, MAX_CTX, True, "sliding window in tokens"),
    "arch_swa_every": ("int", 1, 1024, True, "layers per full-context layer"),
}

# name -> (the allowed values, what it means)
CHOICES: dict[str, tuple[tuple[str, ...], str]] = {
    "kv_cache": (("f16", "q8_0", "q4_0"), "KV cache type"),
    # llama.cpp's CPU kernels (facts/kernels.py): auto uses what a check found safe and fast.
    "cpu_kernels": (("auto", "amx", "repack", "plain"), "CPU kernels"),
    "task": (("chat", "code", "math", "summarise"), "what the model is for"),
    "length": (("short", "medium", "long"), "summary length"),
    "style": (("paragraph", "bullets"), "summary style"),
    "recipe": (("uniform", "mixed"), "quantisation recipe"),
    # The quant types the memory estimate knows (planning.memory.QUANT_BITS; a test
    # holds the two to the same names).
    "quant": (
        ("F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_0", "Q4_K_M", "Q4_K_S")
        + ("Q4_1", "Q4_0", "IQ4_XS", "IQ4_NL", "Q3_K_XL", "Q3_K_L", "Q3_K_M", "Q3_K_S")
        + ("IQ3_M", "IQ3_XXS", "Q2_K", "IQ2_M", "IQ2_XS", "IQ2_XXS", "IQ1_M"),
        "quant type",
    ),
}

# name -> (longest, the pattern the whole text matches, what it is): text read from files.
TEXTS: dict[str, tuple[int, str, str]] = {
    "catalog_id": (96, r"[a-z0-9][a-z0-9._-]*", "catalog id (a-z, 0-9, '.', '_', '-')"),
    "catalog_name": (100, r"[^\x00-\x1f\x7f-\x9f]+", "model name (no control characters)"),
    "catalog_license": (64, r"[A-Za-z0-9][A-Za-z0-9.+_-]*", "licence id (like apache-2.0)"),
    "catalog_repo": (
        193,
        r"(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}",
        "hub repo (owner/name)",
    ),
    "arch_architecture": (64, r"[a-z0-9][a-z0-9._-]*", "llama.cpp architecture (like llama)"),
}

# The catalog's schema: each key of an entry, and of its arch table, -> (required, rule).
# A rule is a RANGES row (a number), a TEXTS row (text), a CHOICES row (one of its values;
# "[row]": a non-empty list of them), "flag" (true or false) or "table" (the ARCH table).
CATALOG: dict[str, tuple[bool, str]] = {
    "name": (True, "catalog_name"),
    "repo": (True, "catalog_repo"),
    "license": (True, "catalog_license"),
    "gated": (True, "flag"),
    "params_b": (True, "catalog_params_b"),
    "context": (True, "catalog_context"),
    "tasks": (True, "[task]"),
    "quants": (True, "[quant]"),
    "arch": (True, "table"),
}
ARCH: dict[str, tuple[bool, str]] = {
    "architecture": (False, "arch_architecture"),
    "layers": (True, "arch_layers"),
    "embd": (True, "arch_embd"),
    "ff": (True, "arch_ff"),
    "vocab": (True, "arch_vocab"),
    "heads": (True, "arch_heads"),
    "kv_heads": (True, "arch_kv_heads"),
    "head_dim": (False, "arch_head_dim"),
    "tied": (False, "flag"),
    "embd_type": (False, "quant"),  # the embeddings' type, where a file keeps its own
    "sliding_window": (False, "arch_sliding_window"),
    "swa_every": (False, "arch_swa_every"),
}


def brief(value) -> str:
    """``value`` as a message shows what was found: its repr, cut short."""
    text = repr(value)
    if len(text) <= 40:
        return text
    size = f" ({len(value):,} characters)" if isinstance(value, str) else ""
    return text[:32] + "..." + size


def _bounds(name: str, here: bool) -> tuple[str, float | None, float | None, bool, str]:
    kind, low, high, low_in, what = RANGES[name]
    if name == "threads" and here:
        high = max_threads()
    return kind, low, high, low_in, what


def allowed(name: str, here: bool = True) -> str:
    """The range in words, for messages: '512 to 1048576'."""
    _, low, high, low_in, _ = _bounds(name, here)
    if high is None:
        return f"{low} or more" if low_in else f"more than {low:g}"
    return f"{low} to {high}" if low_in else f"more than {low:g} and at most {high:g}"


def check(name: str, value, here: bool = True):
    """``value`` (already a number) if it lies in ``name``'s range, else ValueError(words).

    ``here``: bound what depends on this machine (threads: twice its CPUs) too; a
    config file written on a bigger machine is not refused for that.
    """
    kind, low, high, low_in, what = _bounds(name, here)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number ({allowed(name, here)}), got {brief(value)}")
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
            f"{what} must be {whole} ({allowed(name, here)}), got {brief(text)}"
        ) from None
    return check(name, value, here)


def choices(name: str) -> tuple[str, ...]:
    """The allowed values of choice ``name``."""
    return CHOICES[name][0]


def check_choice(name: str, value) -> str:
    options, what = CHOICES[name]
    if value not in options:
        raise ValueError(f"{what} must be one of {', '.join(options)}, got {brief(value)}")
    return value


def check_text(name: str, value) -> str:
    """``value`` if it is text that TEXTS row ``name`` allows, else ValueError(words)."""
    longest, pattern, what = TEXTS[name]
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text, got {brief(value)}")
    if len(value) > longest:
        raise ValueError(f"{what} must be at most {longest} characters, got {brief(value)}")
    if not re.fullmatch(pattern, value):
        raise ValueError(f"{what} is not valid here, got {brief(value)}")
    return value


def check_value(rule: str, value):
    """``value`` checked by a schema ``rule`` (see CATALOG): a RANGES, TEXTS or CHOICES
    row, "[row]" for a non-empty list of a choice, or "flag"; ValueError(words) if not."""
    if rule == "flag":
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, got {brief(value)}")
        return value
    if rule.startswith("["):
        row = rule.strip("[]")
        if not isinstance(value, list) or not value:
            options = ", ".join(choices(row))
            raise ValueError(f"must be a non-empty list of: {options}; got {brief(value)}")
        return [check_choice(row, item) for item in value]
    if rule in RANGES:
        return check(rule, value, here=False)
    if rule in TEXTS:
        return check_text(rule, value)
    return check_choice(rule, value)


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
