"""Read documents to summarise, as a stream of paragraphs, refusing what is not text.

Plain text and Markdown are decoded incrementally in the encoding charset-normalizer
detects from the first megabyte, so a multi-gigabyte file is never held in memory.
HTML goes through the standard library's incremental parser (text only: no scripts,
styles or markup). PDF (text layer, page by page) and DOCX need the optional
``pdf`` / ``docx`` extras (pypdf, python-docx); a missing one is named.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import BinaryIO

from edgechat.errors import InputError
from edgechat.paths import open_user_file, user_file

Warn = Callable[[str], None]

SAMPLE = 1024 * 1024  # bytes read to sniff the format and the encoding
_READ = 1024 * 1024
_COMMON = ("cp1252", "latin_1", "iso8859_15", "cp1251", "shift_jis", "gb18030", "euc_kr")
_BLANK_LINES = re.compile(r"\n[ \t]*\n+")
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


@dataclass
class Document:
    name: str
    kind: str  # text | html | pdf | docx
    size: int | None  # bytes, when known (for progress)
    paragraphs: Iterator[str]
    encoding: str | None = None  # plain text: the encoding it was read in
    closer: Callable[[], None] | None = None  # closes the file being read

    def close(self) -> None:
        """Close the file now (reading to the end closes it too)."""
        _close(self.paragraphs)
        if self.closer:
            self.closer()

    def __enter__(self) -> Document:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _encoding(sample: bytes, name: str) -> str:
    for bom, enc in _BOMS:
        if sample.startswith(bom):
            return enc
    if b"\x00" in sample[:8192]:
        raise InputError(f"{name} looks like a binary file, not text")
    try:
        sample.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as e:
        if e.start >= len(sample) - 4:  # a character cut at the end of the sample
            return "utf-8"
    from charset_normalizer import from_bytes

    results = from_bytes(sample)
    best = results.best()
    if best is None:
        raise InputError(
            f"{name} is not text in any encoding edgechat recognises; convert it to UTF-8 first"
        )
    # Single-byte encodings often tie; then the commonest wins (Windows-1252 is what
    # "Latin-1" text usually is).
    tied = [m.encoding for m in results if (m.chaos, m.coherence) == (best.chaos, best.coherence)]
    return next((e for e in _COMMON if e in tied), best.encoding)


def _decoded(stream: BinaryIO, sample: bytes, encoding: str) -> Iterator[str]:
    """The text, a megabyte at a time; the file is closed when it ends or is dropped."""
    try:
        decoder = codecs.getincrementaldecoder(encoding)("replace")
        data = sample
        while data:
            text = decoder.decode(data)
            if text:
                yield text
            data = stream.read(_READ)
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def paragraphs_of(pieces: Iterator[str]) -> Iterator[str]:
    """Split a stream of text into paragraphs at blank lines, holding one at a time."""
    try:
        yield from _paragraphs(pieces)
    finally:
        _close(pieces)  # closing the paragraphs closes the file, read to the end or not


def _close(pieces) -> None:
    close = getattr(pieces, "close", None)
    if close:
        close()


def _paragraphs(pieces: Iterator[str]) -> Iterator[str]:
    buf = ""
    for piece in pieces:
        buf += piece.replace("\r\n", "\n").replace("\r", "\n")
        parts = _BLANK_LINES.split(buf)
        buf = parts.pop()
        for p in parts:
            if p.strip():
                yield p.strip()
        if len(buf) > 64 * SAMPLE:  # one endless paragraph: hand it over in slices
            cut = buf.rfind("\n", 0, 32 * SAMPLE)
            cut = cut if cut > 0 else 32 * SAMPLE
            yield buf[:cut].strip()
            buf = buf[cut:]
    if buf.strip():
        yield buf.strip()


class _HTMLText(HTMLParser):
    """Visible text of an HTML page, with block elements as paragraph breaks."""

    SKIP = {"script", "style", "noscript", "template", "svg", "head"}
    BLOCK = {
        "p",
        "div",
        "br",
        "li",
        "tr",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "section",
        "article",
        "blockquote",
        "pre",
        "table",
        "ul",
        "ol",
        "title",
        "header",
        "footer",
    }

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.skip = 0
        self.out: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
        elif tag in self.BLOCK:
            self.out.append("\n\n")

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCK:
            self.out.append("\n\n")

    def handle_data(self, data):
        if not self.skip:
            self.out.append(re.sub(r"[ \t\n]+", " ", data))

    def take(self) -> str:
        text, self.out = "".join(self.out), []
        return text


def _html(chunks: Iterator[str]) -> Iterator[str]:
    parser = _HTMLText()
    for chunk in chunks:
        parser.feed(chunk)
        yield parser.take()
    parser.close()
    yield parser.take()


def _pdf(path: Path, name: str, warn: Warn) -> Iterator[str]:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError:
        raise InputError(
            f"reading PDF needs the pdf extra: pip install 'edgechat[pdf]' ({name})"
        ) from None
    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            raise InputError(f"{name} is password-protected; remove the password first")
        pages = reader.pages
        n_pages = len(pages)
    except PdfReadError as e:
        raise InputError(f"{name} is not a readable PDF ({e})") from None
    found_text = False
    for i in range(n_pages):
        try:
            text = pages[i].extract_text() or ""
        except Exception as e:  # a broken page must not lose the rest
            text = ""
            warn(f"skipped page {i + 1} of {name}: {e}")
        if text.strip():
            found_text = True
            yield text + "\n\n"
    if not found_text:
        raise InputError(
            f"{name} has no text layer (scanned images?); run OCR first, for example "
            f"`ocrmypdf {name} out.pdf`"
        )


def _docx(path: Path, name: str) -> Iterator[str]:
    try:
        import docx
    except ImportError:
        raise InputError(
            f"reading DOCX needs the docx extra: pip install 'edgechat[docx]' ({name})"
        ) from None
    try:
        document = docx.Document(str(path))
    except Exception as e:  # python-docx raises several kinds for non-DOCX input
        raise InputError(
            f"{name} is not a readable DOCX (password-protected, or another format?): "
            f"{type(e).__name__}"
        ) from None
    for para in document.paragraphs:
        if para.text.strip():
            yield para.text + "\n\n"


def _sniff(name: str, sample: bytes) -> str:
    lower = name.lower()
    if lower.endswith(".pdf") or sample.startswith(b"%PDF-"):
        return "pdf"
    if lower.endswith(".docx") or (sample.startswith(b"PK\x03\x04") and b"word/" in sample):
        return "docx"
    if lower.endswith((".html", ".htm", ".xhtml")):
        return "html"
    head = sample[:2048].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "html"
    return "text"


def open_document(source: str, purpose: str = "summarise", warn: Warn | None = None) -> Document:
    """A document from a path or ``-``; format and encoding problems are found here,
    before any model is loaded, from the first megabyte. ``warn`` hears of what is
    skipped while reading (a broken PDF page)."""
    warn = warn or (lambda line: None)
    if source == "-":
        stream: BinaryIO = sys.stdin.buffer
        name, size, path = "stdin", None, None
    else:
        path = Path(source).expanduser()
        name = str(path)
        # A named pipe nobody writes to, or /dev/zero, would block or never end; process
        # substitution (<(command), a /dev/fd path) is what pipes are for.
        if not name.startswith(("/dev/fd/", "/proc/self/fd/")):
            user_file(path)  # missing, a loop, a folder, permissions ...: one line
        stream = open_user_file(path)
        st = os.fstat(stream.fileno())
        size = st.st_size if stat.S_ISREG(st.st_mode) else None  # a pipe's is unknown
    try:
        sample = stream.read(SAMPLE)
        kind = _sniff(name, sample)
        if kind in ("pdf", "docx") and path is None:
            raise InputError(f"{kind.upper()} cannot come from standard input; pass the file")
        if kind == "text" or kind == "html":
            if not sample.strip():
                raise InputError(f"{name} is empty: there is nothing to {purpose}")
            encoding = _encoding(sample, name)
    except BaseException:
        if path is not None:
            stream.close()
        raise
    if kind in ("pdf", "docx"):
        stream.close()
        pieces = _pdf(path, name, warn) if kind == "pdf" else _docx(path, name)
        first = _first_text(pieces, name, purpose)
        return Document(name, kind, size, paragraphs_of(_chain(first, pieces)))
    pieces = _decoded(stream, sample, encoding)
    if kind == "html":
        pieces = _html(pieces)
    first = _first_text(pieces, name, purpose)
    closer = stream.close if path is not None else None
    return Document(name, kind, size, paragraphs_of(_chain(first, pieces)), encoding, closer)


def _first_text(pieces: Iterator[str], name: str, purpose: str = "summarise") -> str:
    """Pull text until some is not blank, so an empty document fails before the model loads."""
    seen = []
    for piece in pieces:
        seen.append(piece)
        if piece.strip():
            return "".join(seen)
        if sum(map(len, seen)) > 8 * SAMPLE:
            break
    _close(pieces)
    raise InputError(f"{name} has no text: there is nothing to {purpose}")


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    try:
        yield first
        yield from rest
    finally:
        _close(rest)


def read_text(source: str, exact: bool = False, purpose: str = "summarise") -> tuple[str, str]:
    """The whole text of a (small) document: name and text. ``exact`` keeps a plain text
    file's characters as they are (perplexity must see what llama-perplexity sees)."""
    with open_document(source, purpose) as doc:
        if exact and doc.kind == "text" and source != "-":
            return doc.name, Path(source).expanduser().read_text(encoding=doc.encoding)
        return doc.name, "\n\n".join(doc.paragraphs)
