"""KV snapshots on the real starter model: a restored conversation answers exactly as
the context kept in memory does, evaluating only what is new; stale, missing and
damaged snapshots fall back to re-reading; the folder keeps under its cap."""

from __future__ import annotations

import json
import zlib

from support import GREEDY

from edgechat.llama.state import Snapshots

HISTORY = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Describe the harbour at dawn, its boats and the market. " * 25},
    {"role": "assistant", "content": "Boats come in with the tide and the market opens."},
]
NEXT = {"role": "user", "content": "And at night?"}


def _primed(engine) -> None:
    engine.clear_cache()
    engine.chat(HISTORY, GREEDY).collect()  # the context now holds the conversation


def test_a_restored_snapshot_answers_as_the_kept_context_does(engine, tmp_path):
    """Restored from disk, the context is the one the app had in memory: the same next
    reply (greedy), from the same few newly evaluated tokens."""
    snaps = Snapshots(tmp_path)
    _primed(engine)
    assert snaps.save(engine, 7) > 0
    kept = engine.chat([*HISTORY, NEXT], GREEDY).collect()  # the context still in memory
    kept_evaluated = engine.last_stats.prompt_eval_tokens
    engine.clear_cache()
    restored = snaps.restore(engine, 7)
    assert restored.why == "restored" and restored.tokens > 256
    again = engine.chat([*HISTORY, NEXT], GREEDY).collect()
    assert again == kept
    assert engine.last_stats.prompt_eval_tokens == kept_evaluated < restored.tokens / 4


def test_stale_missing_and_damaged_snapshots_fall_back(engine, small_engine, tmp_path):
    snaps = Snapshots(tmp_path)
    assert snaps.restore(engine, 1).why == "none"
    _primed(engine)
    snaps.save(engine, 1)
    snaps.save(engine, 2)
    assert snaps.restore(small_engine, 1).why == "stale"  # another plan (context size)
    data = tmp_path / "1.kv"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    held = engine.n_ctx_used
    assert snaps.restore(engine, 1).why == "damaged"  # the checksum: the context untouched
    assert not data.exists() and engine.n_ctx_used == held
    # Bytes that match their checksum but that llama.cpp rejects.
    junk = b"not a llama.cpp state file"
    meta = json.loads((tmp_path / "2.json").read_text())
    meta.update(bytes=len(junk), crc32=zlib.crc32(junk))
    (tmp_path / "2.kv").write_bytes(junk)
    (tmp_path / "2.json").write_text(json.dumps(meta))
    _primed(engine)
    assert snaps.restore(engine, 2).why == "damaged"
    assert engine.n_ctx_used == 0  # llama.cpp refused it: cleared, nothing half-loaded
    assert engine.chat([*HISTORY, NEXT], GREEDY).collect()  # reading it again works


def test_the_folder_keeps_under_its_cap_oldest_dropped(engine, tmp_path):
    _primed(engine)
    size = Snapshots(tmp_path / "probe").save(engine, 1)
    snaps = Snapshots(tmp_path / "kv", cap_bytes=int(size * 2.5))
    for conversation in (1, 2, 3):
        snaps.save(engine, conversation)
    kept = sorted(p.stem for p in (tmp_path / "kv").glob("*.kv"))
    assert kept == ["2", "3"]
    assert snaps.restore(engine, 2).why == "restored"  # 2 is now the most recently used
    snaps.save(engine, 4)
    assert sorted(p.stem for p in (tmp_path / "kv").glob("*.kv")) == ["2", "4"]
    assert Snapshots(tmp_path / "off", cap_bytes=0).save(engine, 5) == 0
