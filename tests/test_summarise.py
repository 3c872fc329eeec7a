"""Summarising real documents of any length on the real starter model."""

from __future__ import annotations

import json
import os
import re
import sys
import tracemalloc
from pathlib import Path

import pytest
from conftest import run_cli

from edgechat.errors import InputError
from edgechat.planning.plan import Sampling
from edgechat.tasks import documents
from edgechat.tasks.summarise import Options, Summariser, _instruction, apply_style

LICENCE = Path("/usr/share/common-licenses/GPL-3")
TEXT = (
    "The town council met on Tuesday to discuss the new library. The building will cost "
    "four million euros and open in 2027. Residents asked for longer opening hours and a "
    "children's section. The mayor promised a public consultation in the spring.\n"
)


def long_document(min_chars: int) -> str:
    """A real document when Debian's licence texts are here, else a written one."""
    if LICENCE.exists():
        text = LICENCE.read_text()
    else:
        towns = ["Arden", "Belmont", "Carrow", "Dunmore", "Elston", "Fairholm", "Glenrock"]
        text = "\n\n".join(
            f"{t} council report, item {i}. The council of {t} approved a budget of "
            f"{(i * 37) % 90 + 10} million euros for roads and schools. Work starts in "
            f"{2025 + i % 5}; residents asked for safer crossings near the market. "
            f"The mayor said the plan would be reviewed every {i % 4 + 2} months."
            for i in range(400)
            for t in towns[i % 7 : i % 7 + 1]
        )
    while len(text) < min_chars:
        text += "\n\n" + text
    return text


def test_a_document_ten_times_the_context_is_summarised(small_engine):
    text = long_document(0)
    text = text[: text.index("\n\n", 24_000)]  # about 11 contexts of 512 tokens
    n_tokens = len(small_engine.tokenize(text, add_special=False))
    assert n_tokens >= 10 * small_engine.n_ctx
    seen = []
    sampling = Sampling(temperature=0.3, seed=7)
    s = Summariser(small_engine, Options("short", "bullets"), sampling, progress=seen.append)
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    result = s.run(paragraphs, size_hint=len(text))
    assert result.text and result.chunks >= 10 and result.levels >= 1
    for line in result.text.splitlines():
        assert line.startswith("- ")
    # Every model call stayed within the context.
    assert len(result.calls) > result.chunks
    for stats in result.calls:
        assert stats.prompt_tokens + stats.gen_tokens <= small_engine.n_ctx
        assert stats.finish != "context"
    assert result.tokens_in >= n_tokens
    maps = [p for p in seen if p.stage == "map"]
    assert maps[-1].done == result.chunks and maps[-1].total == result.chunks
    assert any(p.eta_s for p in maps)


def test_chunks_respect_the_budget_even_for_monster_paragraphs(small_engine):
    words = " ".join(f"word{i}" for i in range(3000))  # one sentence, no breaks
    sentences = " ".join(f"Sentence number {i} is here." for i in range(400))
    paragraphs = ["Intro paragraph.", words, sentences, "Last one."]
    s = Summariser(small_engine)
    budget = 200
    chunks = list(s.chunks(paragraphs, budget))
    assert len(chunks) > 10
    for chunk in chunks:
        assert len(small_engine.tokenize(chunk, add_special=False)) <= budget
    joined = " ".join(chunks)
    assert "Intro paragraph." in joined and "word2999" in joined and "Last one." in joined
    assert joined.index("word100 ") < joined.index("word2000 ")


def test_short_document_is_one_call(small_engine):
    s = Summariser(small_engine, Options("short", "paragraph"), Sampling(temperature=0.3, seed=3))
    result = s.run([TEXT])
    assert result.chunks == 1 and result.levels == 0 and len(result.calls) == 1
    assert result.text and "\n" not in result.text and not result.text.startswith("- ")


def test_instructions_carry_length_style_and_focus():
    text = _instruction(Options("long", "bullets", "costs and dates"), "final")
    assert "few paragraphs" in text and "bulleted list" in text and "costs and dates" in text
    assert "costs and dates" in _instruction(Options(focus="costs and dates"), "map")


def test_apply_style():
    loopy = "The plan costs 4 million. It opens in 2027. The plan costs 4 million."
    assert apply_style(loopy, "bullets") == "- The plan costs 4 million.\n- It opens in 2027."
    assert apply_style("- one\n* two\n1. three", "bullets") == "- one\n- two\n- three"
    assert apply_style("Points:\n- one\n- two", "bullets") == "- Points:\n- one\n- two"
    assert apply_style("- one.\n- two.", "paragraph") == "one. two."


# -- documents ----------------------------------------------------------------------------


def read(path) -> str:
    return "\n\n".join(documents.open_document(str(path)).paragraphs)


def test_html_keeps_text_drops_scripts_and_styles(tmp_path):
    page = tmp_path / "page.html"
    page.write_text(
        "<!doctype html><html><head><title>T</title><style>p{color:red}</style>"
        "<script>var secret = 1;</script></head><body><h1>Library news</h1>"
        "<p>The library opens in <b>2027</b>.</p><p>Costs: 4&nbsp;million &euro;.</p>"
        "<noscript>enable js</noscript></body></html>"
    )
    text = read(page)
    assert "Library news" in text and "The library opens in 2027." in text
    assert "4\xa0million €" in text
    assert "secret" not in text and "color" not in text and "enable js" not in text


def test_encodings_are_detected(tmp_path):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes(("Café crème et pâtisserie. " * 40).encode("latin-1"))
    assert read(latin).startswith("Café crème et pâtisserie.")
    utf16 = tmp_path / "utf16.txt"
    utf16.write_text("Grüße aus Köln.\n\nZweiter Absatz.", encoding="utf-16")
    assert read(utf16) == "Grüße aus Köln.\n\nZweiter Absatz."


def _pdf(text: str | None) -> bytes:
    """A one-page PDF with ``text`` in Helvetica, or a page with no text at all."""
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode() if text else b""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def test_pdf_text_layer_password_and_image_only(tmp_path, monkeypatch):
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(_pdf("The library opens in 2027."))
    assert "The library opens in 2027." in read(pdf)

    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(str(pdf)))
    writer.encrypt("secret", algorithm="RC4-128")
    locked = tmp_path / "locked.pdf"
    with locked.open("wb") as fh:
        writer.write(fh)
    with pytest.raises(InputError, match="password-protected"):
        read(locked)

    scanned = tmp_path / "scan.pdf"
    scanned.write_bytes(_pdf(None))
    with pytest.raises(InputError, match="no text layer.*OCR"):
        documents.open_document(str(scanned))

    monkeypatch.setitem(sys.modules, "pypdf", None)  # as if the extra were not installed
    with pytest.raises(InputError, match=r"pip install 'edgechat\[pdf\]'"):
        documents.open_document(str(pdf))


def test_docx(tmp_path):
    import docx

    d = docx.Document()
    d.add_heading("Council minutes", 1)
    d.add_paragraph("The library will cost four million euros.")
    path = tmp_path / "minutes.docx"
    d.save(str(path))
    assert read(path) == "Council minutes\n\nThe library will cost four million euros."
    fake = tmp_path / "protected.docx"
    fake.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600)  # an OLE container
    with pytest.raises(InputError, match="not a readable DOCX"):
        documents.open_document(str(fake))


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.txt", b"", "is empty"),
        ("blank.txt", b"  \n\n ", "is empty"),
        ("image.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
        ("only-script.html", b"<html><script>x=1</script></html>", "has no text"),
    ],
)
def test_unusable_input_is_one_line_before_any_model_loads(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    result = run_cli("summarise", str(path), "--model", "/nonexistent.gguf")
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_missing_devnull_and_folder(tmp_path):
    for target, message in [
        (str(tmp_path / "nope.txt"), "no such file"),
        (os.devnull, "is empty"),
        (str(tmp_path), "is a folder"),
    ]:
        result = run_cli("summarise", target)
        assert result.returncode == 1 and message in result.stderr, result.stderr


def test_a_huge_input_is_streamed_not_read_whole(tmp_path):
    big = tmp_path / "big.txt"
    para = ("All work and no play makes a long log file. " * 20 + "\n\n").encode()
    with big.open("wb") as fh:
        for _ in range(100 * 2**20 // len(para)):
            fh.write(para)
    tracemalloc.start()
    doc = documents.open_document(str(big))
    n = sum(1 for _ in doc.paragraphs)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n > 100_000 and doc.size > 99 * 2**20
    assert peak < 24 * 2**20, f"peak {peak / 2**20:.0f} MiB for a 100 MiB file"


def test_paragraphs_of_a_stream():
    pieces = iter(["First para", "graph.\n\nSecond\r\n", "\r\nThird.\n \n"])
    assert list(documents.paragraphs_of(pieces)) == ["First paragraph.", "Second", "Third."]


# -- the command ---------------------------------------------------------------------------


def test_summarise_stdin_json():
    result = run_cli("summarize", "-", "--json", "--length", "short", input=TEXT)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["summary"] and data["sources"] == ["stdin"]
    assert data["chunks"] == 1 and data["calls"] == 1
    assert data["tokens_in"] > 40 and data["tokens_out"] > 0
    assert data["seconds"] >= data["engine_seconds"] > 0


def test_summarise_files_to_out_with_progress(tmp_path):
    a, b = tmp_path / "a.md", tmp_path / "b.html"
    a.write_text(long_document(0)[:6000])
    b.write_text("<html><body><p>" + TEXT + "</p></body></html>")
    out = tmp_path / "summary.md"
    result = run_cli(
        "summarise", str(a), str(b), "--ctx", "1024", "--style", "bullets", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # the summary went to the file; progress to stderr
    assert re.search(r"reading: 1/\d+", result.stderr) and "writing the summary" in result.stderr
    written = out.read_text()
    assert written.strip() and all(ln.startswith("- ") for ln in written.strip().splitlines())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".summary.md")]


def test_an_unwritable_out_loses_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_cli("summarise", "-", "--out", str(blocker / "summary.md"), input=TEXT)
    assert result.returncode == 1 and "cannot write" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout.strip()  # the summary is printed


def test_stopping_a_summary_stops_all_of_it(small_engine):
    """Esc in the app: the chunk being read stops, and no later chunk starts (the
    engine forgets a cancel at its next call, so the summariser keeps its own)."""
    from edgechat.tasks.summarise import Cancelled

    text = long_document(0)
    paragraphs = [p for p in re.split(r"\n\s*\n", text[:12_000]) if p.strip()]

    def progress(p) -> None:
        if p.stage == "map" and p.done == 1:
            s.cancel()

    s = Summariser(small_engine, sampling=Sampling(temperature=0.3, seed=1), progress=progress)
    with pytest.raises(Cancelled):
        s.run(paragraphs)
    assert len(s.calls) == 1  # the first chunk only
    # The engine itself is usable afterwards: a new summariser starts afresh.
    assert Summariser(small_engine).run([TEXT]).text
