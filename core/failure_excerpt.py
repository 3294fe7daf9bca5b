"""Make a sandbox failure text safe to show a model (the reflection prompt, issue 18).

The text comes from :attr:`Verdict.excerpt <srscode.core.types.Verdict.excerpt>`: pytest's
report of the first failing test plus, at times, the candidate's own output, so a candidate
controls part of it. :func:`sanitize_excerpt` makes it

- **plain text**: ANSI/terminal escape sequences (CSI, OSC, DCS, C1) and every control or
  format character (bidi overrides, zero-width, NUL, backspace, ``\\r``) are removed; ``\\n``
  and ``\\t`` stay;
- **free of host details**: the named directories (run dir, home, temp dir, ...) become
  placeholders such as ``<run_dir>``, any other absolute path becomes ``<path>`` (a ``.py``
  file keeps its base name: ``<path>/solution.py``), and every environment value longer than
  3 characters becomes ``<env:NAME>``;
- **free of the hidden test file**: a line that contains a line of the task's test code is
  replaced by ``[hidden test line(s)]``, except one: the failing line pytest marks with ``>``
  (what the failure message shows). A candidate that prints the test file, puts it in an
  exception message or fakes ``>`` markers gets the marker, not the tests;
- **about the candidate**: traceback frames of pytest, importlib and the standard library
  (a collection error has a dozen) become one ``[... N library frames left out]`` line;
- **bounded**: at most ``max_chars``; a longer text keeps its first line, the failing ``>``
  line, pytest's ``E`` lines (the assertion or exception) and the ``file:line: Error`` lines,
  then says how much was cut.

It cannot catch a test file the candidate re-encodes (base64, reversed, ...) before printing;
the excerpt only ever shows what the candidate could already read in its sandbox.
"""
from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Mapping

DEFAULT_MAX_CHARS = 1200
MIN_MAX_CHARS = 80
STORED_MAX_CHARS = 4000  # what the ledger keeps; prompts cut further (reflect's max_excerpt_chars)
HIDDEN = "[hidden test line(s)]"
MIN_HIDDEN_LINE = 6  # shorter test lines ("pass", "])") say nothing and occur everywhere
MIN_ENV_VALUE = 4

_ESCAPES = re.compile(
    r"\x1b\][^\x07\x1b\n]*(?:\x07|\x1b\\)?"  # OSC (title, hyperlink), terminated by BEL or ST
    r"|\x1b[PX^_][^\x1b]*?(?:\x1b\\|$)"  # DCS, SOS, PM, APC strings
    r"|\x1b\[[0-?]*[ -/]*[@-~]"  # CSI (colours, cursor, clear screen)
    r"|\x9b[0-?]*[ -/]*[@-~]"  # the same with the 8-bit C1 introducer
    r"|\x1b[ -/]*[0-~]?"  # other escapes (ESC c: reset, ESC 7, ...) and a lone ESC
)
# an absolute POSIX path of at least two components (/a/b), not part of a word or of 1/2/3
_PATH = re.compile(r"(?<![\w./<>~-])/(?:[^\s/\"'`:,;()\[\]{}<>|=]+/)+[^\s/\"'`:,;()\[\]{}<>|=]*")
_LOCATION = re.compile(r"^\S+:\d+: \w")


def strip_controls(text: str) -> str:
    """``text`` without escape sequences and control/format characters (``\\n``, ``\\t`` kept;
    ``\\r`` becomes a line break, other separators a space)."""
    text = _ESCAPES.sub("", text.replace("\r\n", "\n"))
    out = []
    for ch in text:
        if ch in "\n\t" or (ch.isprintable() and ch != "\x9b"):
            out.append(ch)
            continue
        cat = unicodedata.category(ch)
        if ch == "\r" or cat in ("Zl", "Zp"):
            out.append("\n")
        elif cat == "Zs":
            out.append(" ")
        # Cc, Cf (bidi, zero-width), Co, Cs, Cn: dropped
    return "".join(out)


def _cut(text: str, max_chars: int, kept_from: int | None = None) -> str:
    total = len(text) if kept_from is None else kept_from
    if len(text) <= max_chars and kept_from is None:
        return text
    marker = f"\n[... truncated, {total} chars in all]"
    return text[: max(0, max_chars - len(marker))].rstrip() + marker


def _check_limit(max_chars: int) -> None:
    if not isinstance(max_chars, int) or max_chars < MIN_MAX_CHARS:
        raise ValueError(f"max_chars must be an integer of at least {MIN_MAX_CHARS}, got {max_chars!r}")


def sanitize_code(code: str, max_chars: int = 4000) -> str:
    """A candidate's code for a prompt: plain text, at most ``max_chars`` (head kept)."""
    _check_limit(max_chars)
    return _cut(strip_controls(code), max_chars)


def _hide_test_lines(text: str, test_code: str) -> str:
    hidden = {ln.strip() for ln in test_code.splitlines() if len(ln.strip()) >= MIN_HIDDEN_LINE}
    if not hidden:
        return text
    out: list[str] = []
    allowed_used = False
    for line in text.split("\n"):
        if any(h in line for h in hidden):
            if not allowed_used and line.startswith(">"):
                allowed_used = True  # the failing line pytest printed: the message shows it
                out.append(line)
            elif not out or out[-1] != HIDDEN:
                out.append(HIDDEN)
            continue
        out.append(line)
    return "\n".join(out)


def _redact(text: str, paths: Mapping[str, str], env: Mapping[str, str]) -> str:
    for path, name in sorted(paths.items(), key=lambda kv: -len(kv[0])):
        path = str(path).rstrip("/")
        if len(path) > 1:
            text = text.replace(path, name)
    values = sorted(((v, k) for k, v in env.items() if isinstance(v, str) and len(v) >= MIN_ENV_VALUE),
                    key=lambda vk: -len(vk[0]))
    for value, key in values:
        if value in text:
            text = text.replace(value, f"<env:{key}>")

    def path_repl(m: re.Match[str]) -> str:
        base = m.group(0).rstrip("/").rpartition("/")[2]
        return f"<path>/{base}" if base.endswith(".py") else "<path>"

    return _PATH.sub(path_repl, text)


# a traceback frame's header in pytest's report: "file:line: in function"
_FRAME = re.compile(r"^(?P<file>\S.*?):\d+: in \S+$")
_CANDIDATE_FILES = ("solution.py", "test_solution.py")


def _library_frame(header: re.Match[str]) -> bool:
    """A frame of pytest, importlib or the standard library rather than of the candidate or
    its test file: after redaction those paths are absolute or placeholders (``<tmp>/...``,
    ``<frozen importlib._bootstrap>``); the sandbox's own files are relative."""
    file = header.group("file")
    if file.rpartition("/")[2] in _CANDIDATE_FILES:
        return False
    return file.startswith(("<", "/"))


def _drop_library_frames(text: str) -> str:
    """Pytest's traceback without the frames of pytest, importlib and the standard library:
    a collection error shows a dozen of them before the candidate's line, and they are noise
    to a model repairing its code (and spend the excerpt's budget). A run of them becomes one
    ``[... N library frame(s) left out]`` line; the error lines (``E``) and the candidate's
    and test file's frames stay."""
    lines = text.split("\n")
    out: list[str] = []
    dropped = 0
    i = 0
    while i < len(lines):
        m = _FRAME.match(lines[i])
        if m and _library_frame(m):
            i += 1
            # its body: indented source lines, pytest's "???" for frozen code, caret lines
            while i < len(lines) and not _FRAME.match(lines[i]) and (
                    lines[i].startswith((" ", "\t")) or lines[i].strip() in ("???", "")):
                i += 1
            dropped += 1
            continue
        if dropped:
            out.append(f"[... {dropped} library frame{'s' if dropped > 1 else ''} left out]")
            dropped = 0
        out.append(lines[i])
        i += 1
    if dropped:
        out.append(f"[... {dropped} library frame{'s' if dropped > 1 else ''} left out]")
    return "\n".join(out)


def _key_lines(text: str) -> str:
    """The first line, the failing ``>`` line, pytest's ``E`` lines and ``file:line: Error``."""
    lines = text.split("\n")
    keep = [lines[0]]
    arrow = next((ln for ln in lines[1:] if ln.startswith(">")), None)
    if arrow is not None:
        keep.append(arrow)
    keep += [ln for ln in lines[1:] if ln.startswith("E ") or _LOCATION.match(ln)][:24]
    return "\n".join(ln if len(ln) <= 400 else ln[:400] + " [...]" for ln in keep)


def sanitize_excerpt(
    text: str,
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    test_code: str = "",
    paths: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """``text`` made safe to show a model (see the module doc).

    ``test_code``: the task's hidden test file; ``paths``: directory -> placeholder (the run
    dir, home, ...); ``env``: the environment whose values are redacted (default ``os.environ``).
    """
    _check_limit(max_chars)
    text = strip_controls(text)
    text = _redact(text, paths or {}, os.environ if env is None else env)
    if test_code:
        text = _hide_test_lines(text, test_code)
    text = _drop_library_frames("\n".join(ln.rstrip() for ln in text.split("\n")).strip("\n"))
    if len(text) <= max_chars:
        return text
    key = _key_lines(text)
    if key.count("\n") == 0:  # nothing but a first line to go by: keep the head
        return _cut(text, max_chars)
    return _cut(key, max_chars, kept_from=len(text))


def default_paths(run_dir: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """The host directories worth naming in an excerpt: the run dir, the working directory,
    the temp dir and home."""
    import tempfile

    out: dict[str, str] = {}
    for path, name in ((os.path.expanduser("~"), "<home>"), (tempfile.gettempdir(), "<tmp>"),
                       (os.getcwd(), "<cwd>"), (run_dir, "<run_dir>")):
        if path and len(str(path)) > 1:
            out[os.path.realpath(str(path))] = name
            out[str(path)] = name
    return out
