"""What several test modules share: fakes for what a test's subject is not, servers
that stand in for what cannot exist here (the hub), helpers to run the CLI. Tests
import from here (``from support.cli import run_main``), never from each other or
from ``conftest``, which holds only fixtures."""

from __future__ import annotations

from edgechat.planning.plan import Sampling

GREEDY = Sampling(temperature=0.0, max_tokens=24)  # the same reply every run
