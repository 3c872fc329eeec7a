"""Every entry point that loads a model loads llama.cpp's libraries before numpy.

On a CUDA build, numpy imported first made ``llama_model_load_from_file`` segfault
(see edgechat/llama/backend.py). Each case runs in a fresh process with nothing
imported first: the entry point itself must have loaded the backend while numpy was
still unimported (``backend.state()["numpy_first"]`` is False). And one fresh process
imports numpy first, then runs every entry point: each must work (on a CPU build this
cannot crash; it pins the contract).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from support.cli import REPO, child_env

pytestmark = pytest.mark.subprocess  # each case is a fresh process: import order is per process

# Each snippet runs with P (SmolLM2's path) and TMP (a scratch folder) defined, and
# ends with the process's backend state printed by the harness.
CASES = {
    "chat": """
        from edgechat.cli import main
        rc = main(["chat", "--plain", "-m", P, "--ctx", "512", "--max-tokens", "3",
                   "--temperature", "0", "hi"])
        assert rc == 0, rc
    """,
    "app": """
        import asyncio
        from edgechat.tui.app import EdgechatApp, LaunchOptions
        from support.devices import simulated_device

        async def go():
            app = EdgechatApp(LaunchOptions(model=P, ctx=512, start="chat"),
                              device=simulated_device())
            async with app.run_test(size=(80, 24)) as pilot:
                for _ in range(1200):
                    if app.engine is not None:
                        break
                    await pilot.pause(0.05)
                assert app.engine is not None, "the app did not load the model"

        asyncio.run(go())
    """,
    "summarise": """
        from pathlib import Path
        from edgechat.cli import main
        doc = Path(TMP) / "doc.txt"
        doc.write_text("The lighthouse keeper counted ships. " * 4)
        rc = main(["summarise", str(doc), "-m", P, "--ctx", "1024", "--length", "short"])
        assert rc == 0, rc
    """,
    "quality": """
        from pathlib import Path
        from edgechat.cli import main
        text = Path(TMP) / "t.txt"
        text.write_text("The quick brown fox jumps over the lazy dog. " * 16)
        rc = main(["quality", P, "--ref", P, "--text", str(text), "--ctx", "128"])
        assert rc == 0, rc
    """,
    "quantize": """
        from pathlib import Path
        from edgechat.cli import main
        rc = main(["quantize", P, str(Path(TMP) / "q.gguf"), "--type", "Q8_0",
                   "--allow-requantize"])
        assert rc == 0, rc
    """,
    "measure child": """
        import runpy, json as j
        sys.argv = ["measure", j.dumps({"model_path": P, "n_ctx": 256, "fill": 0.5, "gen": 2})]
        runpy.run_module("edgechat.lab.measure", run_name="__main__")
    """,
    "library": """
        from pathlib import Path
        from edgechat.service import ModelRequest, open_model
        open_model(ModelRequest(model=P, ctx=512, gpu_layers=99)).engine.close()
    """,
}

HARNESS = """
import sys, json
if sys.argv[1] == "numpy":
    import numpy  # noqa: F401
P, TMP = sys.argv[2], sys.argv[3]
{body}
from edgechat.llama import backend
print("BACKEND " + json.dumps(backend.state()))
"""


def run_case(names: list[str], first: str, starter_path, tmp_path) -> dict:
    """The entry points ``names``, one after another, in one fresh process."""
    body = "\n".join(f"print('CASE {n}')\n" + textwrap.dedent(CASES[n]) for n in names)
    script = HARNESS.format(body=body)
    env = child_env()
    out = subprocess.run(
        [sys.executable, "-c", script, first, str(starter_path), str(tmp_path)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    where = out.stdout.rsplit("CASE ", 1)[-1].split("\n", 1)[0]
    assert out.returncode == 0, f"{where} ({first} first) failed:\n{out.stderr[-2000:]}"
    line = next(x for x in out.stdout.splitlines()[::-1] if x.startswith("BACKEND "))
    return json.loads(line.removeprefix("BACKEND "))


def test_numpy_first_then_every_entry_point_loads(starter_path, tmp_path):
    """Whether numpy came first is settled by the first load in a process, whichever entry
    point makes it: one process with numpy imported first runs them all."""
    state = run_case(list(CASES), "numpy", starter_path, tmp_path)
    assert state == {"loaded": True, "numpy_first": True}


@pytest.mark.parametrize("name", list(CASES))
def test_entry_point_loads_llama_before_numpy(name, starter_path, tmp_path):
    """The order each entry point guarantees by itself, whatever it imports later."""
    state = run_case([name], "nothing", starter_path, tmp_path)
    assert state == {"loaded": True, "numpy_first": False}
