"""Errors a user can act on.

Services raise these; front ends print ``str(err)`` on one line and exit 1.
Every message says what happened and what to do next.
"""


class EdgechatError(Exception):
    """Base class: an expected failure with a message meant for the user."""


class ModelNotFound(EdgechatError):
    """No model file could be found for what the user asked for."""


class ModelLoadError(EdgechatError):
    """llama.cpp could not load the file (truncated, not GGUF, unsupported)."""


class InputError(EdgechatError):
    """A document or message the user gave cannot be used as it is."""


class ContextOverflow(EdgechatError):
    """The text does not fit in the model's context window."""


class ConfigError(EdgechatError):
    """The config file or a setting in it is invalid."""
