"""The check that decides which of llama.cpp's extra CPU kernels this machine may use.

In a child process (``python -m edgechat.llama.kernelcheck``), so a kernel that dies
takes only the child: a small random llama is written with one layer of each weight type
the extra buffers take (Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K, IQ4_XS, F16), read with
plain kernels first, then with each extra buffer type alone: a 128-token prompt and a
few one-token steps, whose logits must match the plain ones (relative error under
``TOLERANCE``). The child says, one JSON line at a time, which run starts and how it
ended, so a run that kills it is known by the last one that started. The parent
(:func:`check`) reruns the child for what is left, times the sets ``auto`` would choose
between by turns in one more child (:func:`race`), and keeps the verdict
(``facts/kernels.py``). The model is ``llama/kernelmodel.py``.

``EDGECHAT_TEST_KERNEL_FAULT=NAME:crash|wrong|hang`` makes the child fail as a broken
kernel would whenever a run uses buffer type NAME: how the tests show the fallback on a
CPU whose kernels all work.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time
from datetime import date

from edgechat.facts import kernels as facts
from edgechat.llama.kernelmodel import write_model

# The logits' relative L2 error: repacked kernels differ by ~1 %, a broken one by far more.
TOLERANCE = 0.1
TIMEOUT_S = 120  # one child: a hung kernel is stopped here
PROMPT, STEPS = 128, 16
ROUNDS = 7  # the race between the sets that passed


# -- the child ---------------------------------------------------------------------------


def _say(**obj) -> None:
    print(json.dumps(obj), flush=True)


def _fault(names) -> str | None:
    spec = os.environ.get("EDGECHAT_TEST_KERNEL_FAULT", "")
    name, _, kind = spec.partition(":")
    return kind if name and name in names else None


def _load(lc, path, names, threads: int):
    """The check's model and a context, with the extra buffer types ``names`` only."""
    from edgechat.llama import cpubuffers

    cpubuffers.restrict(lc, names)
    mparams = lc.llama_model_default_params()
    mparams.use_extra_bufts = bool(names)
    no_devices = (ctypes.c_void_p * 1)(None)  # the CPU only, even on a GPU build
    mparams.devices = ctypes.cast(no_devices, ctypes.c_void_p)
    model = lc.llama_model_load_from_file(str(path).encode(), mparams)
    if not model:
        raise RuntimeError("the check's model did not load")
    cparams = lc.llama_context_default_params()
    cparams.n_ctx = 512
    cparams.n_batch = cparams.n_ubatch = PROMPT
    cparams.n_threads = cparams.n_threads_batch = threads
    return model, lc.llama_init_from_model(model, cparams)


def _pass(lc, model, ctx):
    """One prompt and ``STEPS`` steps: the logits after each, and the seconds of both."""
    import numpy as np

    n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model))
    prompt = [(i * 37 + 11) % 256 for i in range(PROMPT)]
    lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
    arr = (lc.llama_token * PROMPT)(*prompt)
    t0 = time.perf_counter()
    if lc.llama_decode(ctx, lc.llama_batch_get_one(arr, PROMPT)) != 0:
        raise RuntimeError("llama_decode failed on the prompt")
    prompt_s = time.perf_counter() - t0
    rows = [np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, -1), (n_vocab,)).copy()]
    one = (lc.llama_token * 1)()
    t0 = time.perf_counter()
    for step in range(STEPS):
        one[0] = (step * 53 + 7) % 256
        if lc.llama_decode(ctx, lc.llama_batch_get_one(one, 1)) != 0:
            raise RuntimeError("llama_decode failed on a step")
        rows.append(np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, -1), (n_vocab,)).copy())
    return rows, prompt_s, time.perf_counter() - t0


def run_once(lc, path, names, threads: int):
    """Logits at the prompt's end and after each step, and the two speeds, with the extra
    buffer types ``names`` (a tuple; empty: plain kernels)."""
    import numpy as np

    model, ctx = _load(lc, path, names, threads)
    fault = _fault(names)
    if fault == "crash":
        ctypes.string_at(0)  # what a broken kernel does: a segmentation fault
    if fault == "hang":
        time.sleep(10**6)
    try:
        # One pass: its logits are the check; its times stand only if the race (which
        # times the sets that pass, by turns) cannot run.
        rows, prompt_s, gen_s = _pass(lc, model, ctx)
        logits = np.stack(rows)
        if fault == "wrong":
            logits = logits + np.float32(1.0)
        return logits, PROMPT / prompt_s, STEPS / gen_s
    finally:
        lc.llama_free(ctx)
        lc.llama_model_free(model)


def race(lc, path, sets, threads: int) -> dict[str, tuple[float, float]]:
    """Each set's prompt and step speeds, the best of ``ROUNDS`` rounds, the sets taking
    turns within each round (the order rotating): a machine that gets busier meanwhile
    slows each alike. Timed one after another, a busy moment once made plain kernels
    look 5 % faster than repacked ones on a CI runner, and the choice stuck."""
    loaded = [(names, *_load(lc, path, names, threads)) for names in sets]
    best = {"+".join(n): [float("inf"), float("inf")] for n in sets}
    try:
        for r in range(ROUNDS):
            for names, model, ctx in loaded[r % len(loaded) :] + loaded[: r % len(loaded)]:
                _, p_s, g_s = _pass(lc, model, ctx)
                b = best["+".join(names)]
                b[0], b[1] = min(b[0], p_s), min(b[1], g_s)
    finally:
        for _, model, ctx in loaded:
            lc.llama_free(ctx)
            lc.llama_model_free(model)
    return {k: (PROMPT / p, STEPS / g) for k, (p, g) in best.items()}


def child(runs: list[list[str]], racing: bool = False) -> None:
    """Run plain kernels, then each of ``runs``; one JSON line per start and end.
    ``racing``: time plain kernels and ``runs`` (sets that passed) by turns instead."""
    import tempfile

    import numpy as np

    from edgechat.llama import backend

    lc = backend.load()  # before numpy's own libraries (llama/backend.py says why)
    threads = max(
        1,
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
    )
    from edgechat.llama import cpubuffers

    _say(available=list(cpubuffers.names(lc)))
    with tempfile.TemporaryDirectory(prefix="edgechat-kernelcheck-") as tmp:
        path = os.path.join(tmp, "check.gguf")
        write_model(lc, path)
        if racing:
            for key, (p_tps, g_tps) in race(lc, path, [(), *map(tuple, runs)], threads).items():
                _say(raced=key, prompt_tps=p_tps, gen_tps=g_tps)
            return
        _say(start="")
        ref, p_tps, g_tps = run_once(lc, path, (), threads)
        _say(done="", error=0.0, prompt_tps=p_tps, gen_tps=g_tps)
        for names in runs:
            key = "+".join(names)
            _say(start=key)
            logits, p_tps, g_tps = run_once(lc, path, tuple(names), threads)
            err = float(np.linalg.norm(logits - ref) / max(np.linalg.norm(ref), 1e-9))
            if not np.isfinite(err):
                err = float("inf")
            _say(done=key, error=err, prompt_tps=p_tps, gen_tps=g_tps)


# -- the parent --------------------------------------------------------------------------


def _signal_name(code: int) -> str:
    import signal

    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _run_child(runs: list[tuple[str, ...]], racing: bool = False) -> tuple[list[dict], str | None]:
    """The child's lines, and how it died if it did not finish ('crashed (SIGSEGV)')."""
    cmd = [sys.executable, "-m", "edgechat.llama.kernelcheck", json.dumps([list(r) for r in runs])]
    cmd += ["--race"] if racing else []
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
        out, died = proc.stdout, None
        if proc.returncode < 0:
            died = f"crashed ({_signal_name(proc.returncode)})"
        elif proc.returncode != 0:
            tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["?"]
            died = f"failed ({tail[0][:160]})"
    except subprocess.TimeoutExpired as exc:
        out, died = exc.stdout or b"", f"hung (no answer in {TIMEOUT_S} s)"
    except OSError as exc:
        return [], f"could not start ({exc.strerror or exc})"
    lines = []
    for raw in out.decode("utf-8", "replace").splitlines():
        try:
            obj = json.loads(raw)
        except ValueError:
            continue
        if isinstance(obj, dict):
            lines.append(obj)
    return lines, died


def _measure(runs: list[tuple[str, ...]], results: dict) -> tuple[str, ...] | None:
    """Run ``runs`` in children until each has a result; the build's extra types, or
    None when the check could not run at all."""
    available = None
    todo = list(runs)
    for _ in range(len(runs) + 2):  # each death settles one run
        lines, died = _run_child(todo)
        started = None
        for obj in lines:
            if "available" in obj:
                available = tuple(str(n) for n in obj["available"])
            elif "start" in obj:
                started = str(obj["start"])
            elif "done" in obj:
                name, started = str(obj["done"]), None
                ok = float(obj.get("error", 1.0)) <= TOLERANCE
                results[name] = facts.Result(
                    ok,
                    "" if ok else f"computed wrong numbers (off by {obj['error']:.0%})",
                    obj.get("prompt_tps"),
                    obj.get("gen_tps"),
                )
        if died and started is None:  # between two runs, or before the first
            if not results:
                return None  # nothing ran: unknown, the caller falls back
            for run in todo:
                results.setdefault("+".join(run), facts.Result(False, died))
            return available
        if died:
            results[started] = facts.Result(False, died)
            if started == "":  # the plain kernels themselves: nothing else can be judged
                return available
        todo = [r for r in todo if "+".join(r) not in results]
        if not todo:
            return available
    return available


def check(available: tuple[str, ...]) -> facts.Verdict | None:
    """Check each extra buffer type alone, then time the sets ``auto`` chooses between;
    None when the child could not run (the caller falls back to the common path)."""
    results: dict[str, facts.Result] = {}
    found = _measure([(n,) for n in available], results)
    if found is None:
        return None
    verdict = facts.Verdict(facts.key(), date.today().isoformat(), found, results)
    passed = verdict.passed(found)
    sets = [passed, *(tuple(n for n in passed if n != x) for x in passed)]
    more = [s for s in dict.fromkeys(sets) if s and verdict.result(s) is None]
    if more:
        _measure(more, results)
    _race([s for s in dict.fromkeys(sets) if s and results["+".join(s)].ok], results)
    return facts.Verdict(verdict.key, verdict.checked, found, results)


def _race(sets: list[tuple[str, ...]], results: dict) -> None:
    """Time ``sets`` and plain kernels again by turns (``race``), for the figures ``auto``
    chooses by; where that child fails, the figures of the runs above stand."""
    if not sets or not results.get("", facts.Result(False)).ok:
        return
    lines, died = _run_child(sets, racing=True)
    raced = {str(o["raced"]): o for o in lines if "raced" in o}
    if died or len(raced) != len(sets) + 1:
        return
    for key, o in raced.items():
        results[key] = facts.Result(True, "", o.get("prompt_tps"), o.get("gen_tps"))


def kernels_for(lc, setting: str, say=None) -> facts.Kernels:
    """The extra CPU buffer types a load uses for ``setting``; with ``auto`` and no
    verdict yet for this build and CPU, the check runs first (a few seconds, once)."""
    from edgechat.llama import cpubuffers

    available = cpubuffers.names(lc)
    verdict = facts.remembered() if available else None
    if verdict is None and available and setting == "auto":
        verdict = _check_once(available, say)
    kernels = facts.choose(setting, available, verdict)
    if kernels.warning and say:
        say(kernels.warning)
    return kernels


def only_checked(lc) -> facts.Kernels:
    """Hold every later load in this process to the kernels ``auto`` uses, loads that do
    not go through the Engine included (llama-cpp-python's ``Llama``, a bare C-API loop):
    what benchmarks and peers beside edgechat need on a CPU whose AMX path crashes."""
    from edgechat.llama import cpubuffers

    chosen = kernels_for(lc, "auto")
    cpubuffers.restrict(lc, chosen.names)
    return chosen


def _check_once(available: tuple[str, ...], say) -> facts.Verdict | None:
    """Check under a lock, so processes starting together check once between them."""
    import contextlib

    lock = None
    with contextlib.suppress(OSError, ImportError):
        import fcntl

        from edgechat.paths import ensure_private_dir

        folder = ensure_private_dir(facts.store_path().parent)
        lock = open(folder / "cpu-kernels.lock", "w")  # noqa: SIM115 - held to the end
        fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        verdict = facts.remembered()  # made by another process while this one waited
        if verdict is not None:
            return verdict
        verdict = check(available)
        if verdict is None:
            return None
        facts.remember(verdict)
        chosen = verdict.fastest(verdict.available)
        bad = [n for n in verdict.available if not (r := verdict.result((n,))) or not r.ok]
        if bad and say:
            r = verdict.result((bad[0],))
            say(
                f"llama.cpp's {facts.title(bad[:1])} kernels {r.why} in a check on this CPU; "
                f"using {facts.title(chosen)} instead (`edgechat doctor` says more)"
            )
        return verdict
    finally:
        if lock is not None:
            lock.close()


if __name__ == "__main__":
    child([list(r) for r in json.loads(sys.argv[1])], racing="--race" in sys.argv[2:])
