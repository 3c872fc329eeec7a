"""Run a model's chat template with a deadline, so a hostile one cannot hang a chat.

A chat template is code from the GGUF file. Jinja's sandbox stops it escaping, but
not looping: ``{% for i in range(99999) %}{% for j in range(99999) %}`` runs for
hours, and a thread cannot be killed from outside. So while a template renders, a
trace function on the rendering thread watches the template's own frames (Jinja
compiles templates to Python code named ``<template>``) and stops it when the
deadline passes or the caller cancels: the render raises, and the app stays free.
Only template frames are traced, so the cost is confined to the render itself.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time

RENDER_S = 5.0  # a real template renders in milliseconds


class RenderTimeout(Exception):
    """The template ran past its deadline (or was cancelled)."""


@contextlib.contextmanager
def deadline(seconds: float | None = None, cancel: threading.Event | None = None):
    """Raise RenderTimeout inside template code running past ``seconds`` in this block."""
    end = time.monotonic() + (RENDER_S if seconds is None else seconds)
    ticks = 0

    def local(frame, event, arg):
        nonlocal ticks
        ticks += 1
        if ticks % 512 == 0 and (
            time.monotonic() > end or (cancel is not None and cancel.is_set())
        ):
            raise RenderTimeout
        return local

    def global_(frame, event, arg):
        if frame.f_code.co_filename.startswith("<template"):
            return local
        return None

    previous = sys.gettrace()
    sys.settrace(global_)
    try:
        yield
    finally:
        sys.settrace(previous)
