"""Private by construction: once a model is on disk, nothing talks to the network."""

from __future__ import annotations

import os

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",  # huggingface_hub: never call the hub
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "DO_NOT_TRACK": "1",
}


def go_offline() -> None:
    """Switch off every library's network access for the rest of this process."""
    os.environ.update(OFFLINE_ENV)
