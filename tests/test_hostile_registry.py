"""models.json under contention: every concurrent register lands, none is lost.

Ten processes register at once, as ten `models import` would (without each asking
llama.cpp first, which is what makes the real command slow); a damaged file is never
overwritten by a register.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edgechat.errors import EdgechatError
from edgechat.models import registry
from edgechat.paths import paths

REGISTER = """
import sys, time
from edgechat.models import registry
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
for k in range(5):
    registry.register(f"{sys.argv[1]}-{k}:Q4_0", {"path": "/x", "files": [], "sha256": []})
    registry.touch(__import__("pathlib").Path("/x"))
"""


@pytest.mark.subprocess
def test_ten_writers_at_once_lose_nothing():
    import time

    start = str(time.time() + 2.0)  # all start together, after their imports
    procs = [
        subprocess.Popen([sys.executable, "-c", REGISTER, f"m{i}", start], env=os.environ.copy())
        for i in range(10)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * 10
    got = registry.records()
    assert sorted(got) == sorted(f"m{i}-{k}:Q4_0" for i in range(10) for k in range(5))
    assert any(r.get("last_used") for r in got.values())  # touch ran under the lock too


@pytest.mark.parametrize("content", [b"[1, 2]", b'{"a": 3}', b"{"])
def test_a_damaged_registry_is_not_overwritten(content):
    file = paths().data_dir / "models.json"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(content)
    with pytest.raises(EdgechatError, match="damaged"):
        registry.register("x:Q4_0", {"path": "/x"})
    assert file.read_bytes() == content
    json.dumps(content.decode())  # still the user's bytes, for them to look at
