"""Generation speed: edgechat's engine against llama.cpp's own reference loops.

Side by side, interleaved, in one run, on the same models, prompt, sampler settings
and thread count:

- ``edgechat``: ``Engine.chat`` as the app uses it (streamed text, stats);
- ``c-api loop``: a bare loop over llama.cpp's C API (decode one token, sample with
  llama.cpp's own sampler chain), the reference;
- ``create_completion``: llama-cpp-python's high-level streaming API;
- ``llama-bench``: llama.cpp's own benchmark (no sampling, the ceiling), when a
  binary is given with ``--llama-bench`` or found on PATH.

Generation rate is (tokens - 1) / (time of last token - time of first token), the
same for every method; llama-bench reports its own tg rate.

    python benchmarks/generation.py [--repeat 5] [--tokens 128] [--json]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from edgechat.llama.engine import Engine
from edgechat.planning.plan import RunPlan, Sampling, physical_cores

sys.path.insert(0, str(Path(__file__).parent))
from _models import models  # noqa: E402

PROMPT = "Write a long, detailed story about a lighthouse keeper who befriends a whale."
SAMPLING = dict(temperature=0.7, top_k=40, top_p=0.95, min_p=0.05, seed=1234)


# -- the reference: a bare loop over the C API ------------------------------------------


class CApiLoop:
    def __init__(self, path: Path, n_ctx: int, threads: int, n_gpu_layers: int = 0) -> None:
        from edgechat.llama import backend, kernelcheck

        lc = backend.load()
        kernelcheck.only_checked(lc)  # the kernels the engine uses (AMX crashes on some CPUs)
        self.lc = lc
        mp = lc.llama_model_default_params()
        mp.n_gpu_layers = n_gpu_layers  # as the engine's plan (0 on a CPU build)
        self.model = lc.llama_model_load_from_file(str(path).encode(), mp)
        cp = lc.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch = n_ctx, 512, 512
        cp.n_threads = cp.n_threads_batch = threads
        cp.swa_full = False  # as edgechat's RunPlan: sliding-window layers keep their window
        self.ctx = lc.llama_init_from_model(self.model, cp)
        self.vocab = lc.llama_model_get_vocab(self.model)

    def run(self, tokens: list[int], n_predict: int) -> tuple[int, float]:
        lc = self.lc
        lc.llama_memory_clear(lc.llama_get_memory(self.ctx), True)
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(SAMPLING["top_k"]))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(SAMPLING["top_p"], 1))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_min_p(SAMPLING["min_p"], 1))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(SAMPLING["temperature"]))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(SAMPLING["seed"]))
        arr = (lc.llama_token * len(tokens))(*tokens)
        lc.llama_decode(self.ctx, lc.llama_batch_get_one(arr, len(tokens)))
        buf = ctypes.create_string_buffer(256)
        one = (lc.llama_token * 1)()
        n = 0
        t_first = t_last = 0.0
        while n < n_predict:
            tok = lc.llama_sampler_sample(chain, self.ctx, -1)
            if lc.llama_vocab_is_eog(self.vocab, tok):
                break
            lc.llama_token_to_piece(self.vocab, tok, buf, 256, 0, False)
            n += 1
            t_last = time.perf_counter()
            if n == 1:
                t_first = t_last
            one[0] = tok
            lc.llama_decode(self.ctx, lc.llama_batch_get_one(one, 1))
        lc.llama_sampler_free(chain)
        return n, t_last - t_first

    def close(self) -> None:
        self.lc.llama_free(self.ctx)
        self.lc.llama_model_free(self.model)


# -- the methods -------------------------------------------------------------------------


def rate(n: int, seconds: float) -> float:
    return (n - 1) / seconds if n > 1 and seconds > 0 else 0.0


def bench_edgechat(engine: Engine, messages, n_predict: int) -> tuple[float, int]:
    engine.clear_cache()  # start cold, as the other methods do
    reply = engine.chat(messages, Sampling(max_tokens=n_predict, **SAMPLING))
    reply.collect()
    return reply.stats.gen_tps, reply.stats.gen_tokens


def bench_capi(loop: CApiLoop, tokens, n_predict: int) -> tuple[float, int]:
    n, secs = loop.run(tokens, n_predict)
    return rate(n, secs), n


def bench_completion(llm, prompt: list[int], n_predict: int) -> tuple[float, int]:
    llm.reset()
    t_first = t_last = 0.0
    start_tokens = None
    for n_chunks, _ in enumerate(
        llm.create_completion(
            prompt,
            max_tokens=n_predict,
            stream=True,
            temperature=SAMPLING["temperature"],
            top_k=SAMPLING["top_k"],
            top_p=SAMPLING["top_p"],
            min_p=SAMPLING["min_p"],
            seed=SAMPLING["seed"],
        ),
        start=1,
    ):
        t_last = time.perf_counter()
        if n_chunks == 1:
            t_first = t_last
            start_tokens = llm.n_tokens
    n = llm.n_tokens - start_tokens + 1 if start_tokens is not None else 0
    return rate(n, t_last - t_first), n


def bench_llama_bench(binary: str, path: Path, threads: int, n_predict: int) -> tuple[float, int]:
    out = subprocess.run(
        [binary, "-m", str(path), "-p", "0", "-n", str(n_predict), "-t", str(threads)]
        + ["-r", "1", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "LD_LIBRARY_PATH": str(Path(binary).resolve().parent)},
    )
    rows = json.loads(out.stdout)
    return float(rows[0]["avg_ts"]), n_predict


def bench_model(label: str, path: Path, args) -> list[dict]:
    """Every method on one model, interleaved; medians and ratios to the C-API loop."""
    from llama_cpp import Llama

    rows = []
    plan = RunPlan(path, n_ctx=args.ctx, n_threads=args.threads)
    engine = Engine(plan)
    messages = [{"role": "user", "content": PROMPT}]
    tokens = engine.prompt_tokens(messages)
    loop = CApiLoop(path, args.ctx, args.threads)
    llm = Llama(
        str(path),
        n_ctx=args.ctx,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        swa_full=False,
        verbose=False,
    )
    methods = {
        "edgechat": lambda: bench_edgechat(engine, messages, args.tokens),
        "c-api loop": lambda: bench_capi(loop, tokens, args.tokens),
        # Tokens, not text: the same prompt with no second BOS.
        "create_completion": lambda: bench_completion(llm, tokens, args.tokens),
    }
    if args.llama_bench:
        methods["llama-bench"] = lambda: bench_llama_bench(
            args.llama_bench, path, args.threads, args.tokens
        )
    for fn in methods.values():  # warm-up: page in the weights, settle clocks
        fn()
    samples: dict[str, list[float]] = {name: [] for name in methods}
    counts: dict[str, list[int]] = {name: [] for name in methods}
    names = list(methods)
    for rep in range(args.repeat):
        order = names[rep % len(names) :] + names[: rep % len(names)]  # rotate the order
        for name in order:
            tps, n = methods[name]()
            samples[name].append(tps)
            counts[name].append(n)
    ref = statistics.median(samples["c-api loop"])
    for name in names:
        med = statistics.median(samples[name])
        # Timings drift between rounds: the ratio within each round is the fairer figure.
        paired = [a / b for a, b in zip(samples[name], samples["c-api loop"], strict=True) if b]
        rows.append(
            {
                "model": label,
                "method": name,
                "gen_tps_median": round(med, 2),
                "gen_tps_runs": [round(x, 2) for x in samples[name]],
                "tokens_median": statistics.median(counts[name]),
                "vs_c_api_loop": round(med / ref, 3) if ref else None,
                "vs_c_api_loop_paired": round(statistics.median(paired), 3) if paired else None,
            }
        )
    engine.close()
    loop.close()
    llm.close()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128, help="tokens to generate per run")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument("--llama-bench", default=shutil.which("llama-bench"), help="llama-bench binary")
    ap.add_argument("--json", action="store_true", help="print JSON only")
    args = ap.parse_args()

    results = []
    for label, path in models().items():
        results += bench_model(label, path, args)

    meta = {"threads": args.threads, "ctx": args.ctx, "repeat": args.repeat, "tokens": args.tokens}
    if args.json:
        print(json.dumps({"settings": meta, "results": results}, indent=2))
        return 0
    print(f"generation tok/s, median of {args.repeat} interleaved runs; settings {meta}")
    head = f"{'model':<20} {'method':<18} {'tok/s':>8} {'vs C-API loop':>14} {'paired':>8}"
    print(head + f" {'tokens':>7}")
    for r in results:
        print(
            f"{r['model']:<20} {r['method']:<18} {r['gen_tps_median']:>8.1f} "
            f"{r['vs_c_api_loop']:>13.1%} {r['vs_c_api_loop_paired']:>8.1%} "
            f"{r['tokens_median']:>7}"
        )
    print(json.dumps({"settings": meta, "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
