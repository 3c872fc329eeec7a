"""edgechat: a private, on-device assistant for the terminal."""

__version__ = "0.1.0"
