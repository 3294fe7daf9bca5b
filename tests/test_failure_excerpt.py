"""Safety of the failure excerpt a reflection prompt shows (issue 18, part 3).

Each attack is a candidate's output or traceback as the sandbox reports it; whatever the
attack smuggles in (environment values, the hidden test file, terminal control sequences,
host paths, a flood of output) must be absent from the excerpt.
"""
from __future__ import annotations

import os

import pytest

from srscode.core.failure_excerpt import sanitize_code, sanitize_excerpt

TEST_CODE = (
    "from solution import running_max\n"
    "\n"
    "SECRET_CASES = [([5, 1, 7], [5, 5, 7]), ([9, 8], [9, 9])]\n"
    "\n"
    "def test_basic():\n"
    "    assert running_max([1, 3, 2]) == [1, 3, 3]\n"
    "\n"
    "def test_hidden_cases():\n"
    "    for xs, want in SECRET_CASES:\n"
    "        assert running_max(xs) == want\n"
)

# the shape of pytest's longrepr for a failing assertion, as the sandbox reports it
FAILURE = (
    "test_solution.py::test_basic failed:\n"
    "def test_basic():\n"
    ">       assert running_max([1, 3, 2]) == [1, 3, 3]\n"
    "E       assert [1, 3, 2] == [1, 3, 3]\n"
    "E         At index 2 diff: 2 != 3\n"
    "\n"
    "test_solution.py:6: AssertionError"
)


def clean(text: str, **kw) -> str:
    kw.setdefault("test_code", TEST_CODE)
    kw.setdefault("env", {})
    return sanitize_excerpt(text, **kw)


def test_keeps_the_failing_assertion_and_error():
    out = clean(FAILURE)
    assert ">       assert running_max([1, 3, 2]) == [1, 3, 3]" in out
    assert "E       assert [1, 3, 2] == [1, 3, 3]" in out
    assert "test_solution.py:6: AssertionError" in out


# --------------------------------------------------------------------------- attacks


def test_attack_printing_os_environ_redacts_every_value():
    env = {"MY_API_TOKEN": "sk-live-0123456789abcdef", "HOME": "/home/alice", "SHORT": "ab"}
    leaked = f"environ({env!r})"
    out = clean(FAILURE + "\n----- Captured stdout call -----\n" + leaked, env=env)
    assert "sk-live-0123456789abcdef" not in out
    assert "/home/alice" not in out and "alice" not in out
    assert "<env:MY_API_TOKEN>" in out


def test_attack_secret_env_var_inside_an_exception_message():
    env = {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
    text = ("test_solution.py::test_basic failed:\n"
            "E       ValueError: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"
            "solution.py:2: ValueError")
    out = clean(text, env=env)
    assert "wJalrXUtnFEMI" not in out and "EXAMPLEKEY" not in out
    assert "ValueError" in out


def test_the_real_environment_is_the_default():
    key = "SRSCODE_TEST_EXCERPT_SECRET"
    os.environ[key] = "hunter2-very-secret"
    try:
        out = sanitize_excerpt("E   RuntimeError: hunter2-very-secret\n", test_code=TEST_CODE)
    finally:
        del os.environ[key]
    assert "hunter2" not in out and f"<env:{key}>" in out


def test_attack_printing_the_test_file_hides_it():
    # the candidate did print(open('test_solution.py').read()) before failing
    text = FAILURE + "\n----- Captured stdout call -----\n" + TEST_CODE
    out = clean(text)
    assert "SECRET_CASES" not in out
    assert "([5, 1, 7], [5, 5, 7])" not in out
    assert "assert running_max(xs) == want" not in out
    assert "def test_hidden_cases" not in out
    # the assertion pytest printed for the failure stays, once
    assert out.count("assert running_max([1, 3, 2]) == [1, 3, 3]") == 1


def test_attack_test_file_in_an_exception_message_and_with_prefixes():
    # raise AssertionError(open(__file__.replace('solution', 'test_solution')).read())
    leaked = "\n".join(f"E       >>> {ln}" for ln in TEST_CODE.splitlines() if ln.strip())
    text = "test_solution.py::test_basic failed:\n" + leaked + "\nsolution.py:3: AssertionError"
    out = clean(text)
    assert "SECRET_CASES" not in out and "[9, 8]" not in out and "def test_hidden_cases" not in out


def test_attack_fake_failing_line_markers_cannot_show_more_test_lines():
    # pytest's ">" marks the one failing line; printing "> " + every test line must not pass
    fake = "\n".join(f">   {ln}" for ln in TEST_CODE.splitlines() if ln.strip())
    out = clean(FAILURE + "\n----- Captured stdout call -----\n" + fake)
    assert "SECRET_CASES" not in out and "for xs, want" not in out


def test_traceback_source_of_the_test_file_is_dropped():
    text = (
        "test_solution.py::test_hidden_cases failed:\n"
        "def test_hidden_cases():\n"
        "        for xs, want in SECRET_CASES:\n"
        ">           assert running_max(xs) == want\n"
        "E           assert [5, 1, 7] == [5, 5, 7]\n"
        "test_solution.py:10: AssertionError"
    )
    out = clean(text)
    assert "for xs, want in SECRET_CASES" not in out and "def test_hidden_cases" not in out
    assert "assert running_max(xs) == want" in out  # the failing line pytest printed
    assert "E           assert [5, 1, 7] == [5, 5, 7]" in out  # what the failure message shows


@pytest.mark.parametrize("seq", [
    "\x1b[31m", "\x1b[0m", "\x1b[2J\x1b[H", "\x1b]0;pwned title\x07", "\x1b]8;;http://evil\x1b\\", "\x1bc",
    "\x9b31m", "\r", "\x08\x08\x08", "\x00", "\x07", "\u202e", "\u2066",
])
def test_attack_terminal_control_sequences_are_stripped(seq):
    text = f"E   AssertionError: {seq}bad{seq} value\n"
    out = clean(text)
    assert "\x1b" not in out and "\x9b" not in out and "\x07" not in out and "\x08" not in out
    assert "\x00" not in out and "\r" not in out and "\u202e" not in out and "\u2066" not in out
    assert "bad" in out and "pwned title" not in out and "http://evil" not in out
    assert all(ch in "\n\t" or ch.isprintable() for ch in out)


def test_newlines_and_tabs_survive():
    out = clean("E   first\n\tsecond")
    assert "E   first\n\tsecond" in out


def test_attack_huge_output_is_bounded_and_keeps_the_error():
    flood = "x" * 200_000
    text = FAILURE.replace("\n\ntest_solution.py:6", "\n" + flood + "\n\ntest_solution.py:6")
    out = clean(text, max_chars=600)
    assert len(out) <= 600
    assert "E       assert [1, 3, 2] == [1, 3, 3]" in out
    assert "truncated" in out


def test_attack_many_lines_of_output_are_bounded():
    text = "\n".join(f"line {i}" for i in range(50_000))
    out = clean(text, max_chars=300)
    assert len(out) <= 300 and "line 0" in out


@pytest.mark.parametrize("path", [
    "/home/alice/runs/exp1/rounds/000003/cand-7/solution.py",
    "/tmp/srscode-sandbox-abc123/w3/test_solution.py",
    "/root/.cache/huggingface/token",
    "/var/lib/private/data.db",
])
def test_attack_host_paths_are_replaced(path):
    text = f'E   FileNotFoundError: [Errno 2] No such file or directory: "{path}"\n  File "{path}", line 3'
    out = clean(text)
    assert path not in out
    assert "alice" not in out and "srscode-sandbox-abc123" not in out and "/root" not in out
    assert "<path>" in out


def test_named_dirs_get_named_placeholders():
    out = clean("E   OSError: /data/run7/rounds/000001 and /srv/home/bob/x.py",
                paths={"/data/run7": "<run_dir>", "/srv/home/bob": "<home>"})
    assert "<run_dir>/rounds/000001" in out and "<home>/x.py" in out
    assert "/data/run7" not in out and "bob" not in out


def test_relative_paths_and_arithmetic_are_kept():
    out = clean("solution.py:3: in running_max\n    return a / b + 1/2\nE   ZeroDivisionError: division by zero")
    assert "solution.py:3: in running_max" in out and "a / b + 1/2" in out


def test_idempotent():
    env = {"TOKEN": "abcdef123456"}
    once = clean(FAILURE + "\nabcdef123456 /home/x/y \x1b[1m", env=env)
    assert clean(once, env=env) == once


def test_bad_limit_is_an_error():
    with pytest.raises(ValueError, match="max_chars"):
        clean(FAILURE, max_chars=10)


def test_code_is_bounded_and_stripped():
    code = "def f():\n\treturn 1  \x1b[31m\x00\n" + "# pad\n" * 5000
    out = sanitize_code(code, max_chars=200)
    assert len(out) <= 200 and "\x1b" not in out and "\x00" not in out
    assert out.startswith("def f():\n\treturn 1") and "truncated" in out


COLLECTION_ERROR = """collection error in test_solution.py:
/tmp/vv/lib/python3.11/site-packages/_pytest/python.py:528: in importtestmodule
    mod = import_path(
/tmp/vv/lib/python3.11/site-packages/_pytest/pathlib.py:640: in import_path
    importlib.import_module(module_name)
/usr/lib/python3.11/importlib/__init__.py:126: in import_module
    return _bootstrap._gcd_import(name[level:], package, level)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
<frozen importlib._bootstrap>:1204: in _gcd_import
    ???
<frozen importlib._bootstrap>:1176: in _find_and_load
    ???
test_solution.py:1: in <module>
    from solution import *
solution.py:3: in <module>
    helper()
/usr/lib/python3.11/re/__init__.py:227: in compile
    return _compile(pattern, flags)
E   re.error: missing ), unterminated subpattern at position 0"""


def test_library_frames_are_left_out_and_the_candidates_kept():
    out = sanitize_excerpt(COLLECTION_ERROR, env={})
    assert out.splitlines() == [
        "collection error in test_solution.py:",
        "[... 5 library frames left out]",
        "test_solution.py:1: in <module>",
        "    from solution import *",
        "solution.py:3: in <module>",
        "    helper()",
        "[... 1 library frame left out]",
        "E   re.error: missing ), unterminated subpattern at position 0",
    ]
    for noise in ("importlib", "_pytest", "site-packages", "???", "^^^"):
        assert noise not in out


def test_attack_a_fake_frame_header_cannot_hide_the_error_lines():
    # output shaped like a library frame whose "body" is the error: only indented lines,
    # "???" and blanks belong to a frame, so the E lines survive
    text = "t failed:\n<frozen x>:1: in f\nE   AssertionError: assert 1 == 2\n/abs/p.py:2: in g\n    x\nE   boom"
    out = sanitize_excerpt(text, env={})
    assert "E   AssertionError: assert 1 == 2" in out and "E   boom" in out
    assert out.count("library frame left out") == 2
