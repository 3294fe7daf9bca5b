"""From a run's raw result (collector events, exit, timeout) to a :class:`Verdict`.

The verdict never comes from an exit code: a candidate passes only when the session
finished and every expected test id was collected and reported ``passed``.
"""
from __future__ import annotations

import json
import signal
from dataclasses import dataclass, field
from typing import Any, Mapping

from srscode.core.types import Verdict

from .harness import base_id, bounded

EXCERPT_LIMIT = 2000


@dataclass(frozen=True)
class Expected:
    """The tests a task's file defines.

    ``source`` is ``reference`` (collected with the reference solution in place: exact
    ids, parametrized variants included), ``static`` (read from the syntax tree when no
    reference is known or it cannot be collected: base ids, each must have a passing
    variant), or ``none`` (the file defines no test: nothing can pass).
    """

    ids: tuple[str, ...]
    source: str = "reference"
    ref_s: float | None = None  # the reference run's session time
    ref_status: str | None = None
    ref_excerpt: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"ids": list(self.ids), "source": self.source, "ref_s": self.ref_s, "ref_status": self.ref_status, "ref_excerpt": self.ref_excerpt}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "Expected":
        return Expected(tuple(d.get("ids", ())), d.get("source", "reference"), d.get("ref_s"), d.get("ref_status"), d.get("ref_excerpt", ""))


@dataclass
class Parsed:
    collected: list[str] | None = None
    collect_errors: list[tuple[str, str]] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    done: bool = False
    elapsed: float | None = None
    interrupted: str = ""
    internal: str = ""
    tamper: list[str] = field(default_factory=list)
    phases: dict[tuple[str, str], bool] = field(default_factory=dict)  # (id, when) -> raised
    unsealed: int = 0  # events that did not pass the integrity hook (sealed runs only)
    seal_broken: bool = False


def parse_events(raw_text: str, sealed: bool = False) -> Parsed:
    """Parse collector events; lines that are not valid events are ignored.

    ``sealed``: the run's collector was armed (:mod:`.integrity`), so every
    ``collected``, ``phase`` and ``done`` event must carry the hook's seal, all the same
    one, and a test counts as passed only when the wrapper around its call saw no
    exception and none of its setup or teardown phases reported one. A candidate can still write to the pipe; docs/security.md says what
    forged lines can and cannot do."""
    p = Parsed()
    seal: Any = None
    for line in raw_text.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if not isinstance(ev, dict):
            continue
        t = ev.get("t")
        if sealed and t in SEALED:
            if "s" not in ev:
                p.unsealed += 1
                continue
            if t == "collected" and seal is None:
                seal = ev["s"]
            elif seal is not None and ev["s"] != seal:
                p.seal_broken = True
        if t == "phase":
            key = (str(ev.get("id")), str(ev.get("when")))
            p.phases[key] = p.phases.get(key, False) or bool(ev.get("raised", True))
            continue
        if t == "collected" and p.collected is None:
            p.collected = [str(x) for x in ev.get("ids", [])]
        elif t == "collect_error":
            p.collect_errors.append((str(ev.get("id", "")), str(ev.get("text", ""))))
        elif t == "report":
            nid, when, outcome = str(ev.get("id")), ev.get("when"), ev.get("outcome")
            xfail = bool(ev.get("xfail"))
            prev = p.outcomes.get(nid)
            if when == "setup":
                if outcome == "failed":
                    p.outcomes[nid] = "error"
                elif outcome == "skipped":
                    p.outcomes[nid] = "xfailed" if xfail else "skipped"
            elif when == "call":
                if outcome == "passed":
                    p.outcomes[nid] = "xpassed" if xfail else "passed"
                elif outcome == "failed":
                    p.outcomes[nid] = "failed"
                elif outcome == "skipped":
                    p.outcomes[nid] = "xfailed" if xfail else "skipped"
            elif when == "teardown" and outcome == "failed":
                p.outcomes[nid] = "error"
            if outcome == "failed" and "text" in ev and nid not in p.texts:
                p.texts[nid] = str(ev["text"])
            if prev is None and nid not in p.outcomes:
                p.outcomes[nid] = "started"
        elif t == "interrupted":
            p.interrupted = str(ev.get("text", ""))
        elif t == "internal":
            p.internal = str(ev.get("text", ""))
        elif t == "tamper":
            p.tamper = [str(x) for x in ev.get("what", [])]
        elif t == "done":
            p.done = True
            p.elapsed = ev.get("elapsed")
    if sealed:  # a pass needs the phase wrappers' word for it, not only the reports'
        for nid, o in p.outcomes.items():
            # the call phase must have said it raised nothing; setup and teardown speak only when they raised
            if o in PASSING and (p.phases.get((nid, "call"), True) or p.phases.get((nid, "setup")) or p.phases.get((nid, "teardown"))):
                p.outcomes[nid] = "unconfirmed"
    return p


PASSING = ("passed", "xpassed")
# the events the integrity hook writes in a sealed run; the others (reports, collection
# errors) can only add a failure or a text
SEALED = ("collected", "phase", "done")


def _key_lines(text: str) -> str:
    """pytest's ``E   ...`` lines (the error itself) first, then the traceback."""
    e_lines = [ln for ln in text.splitlines() if ln.startswith("E ")]
    if not e_lines:
        return text
    head = "\n".join(e_lines[-6:])
    return f"{head}\n{text}" if head not in text[-len(head) - 1 :] else text


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _has_memory_error(texts: list[str]) -> bool:
    return any("MemoryError" in t or "Cannot allocate memory" in t for t in texts)


def classify(
    raw: Mapping[str, Any],
    expected: Expected,
    task_id: str,
    index: int,
    limit_s: float,
) -> Verdict:
    """Turn one raw run into a Verdict (see module doc)."""
    duration = float(raw.get("duration_s", 0.0) or 0.0)
    n_expected = len(expected.ids)

    def verdict(status: str, passed: int, outcomes: dict[str, str], excerpt: str) -> Verdict:
        return Verdict(task_id, index, status, passed, n_expected, outcomes, round(duration, 4), bounded(excerpt, EXCERPT_LIMIT))

    if raw.get("sandbox_error"):
        return verdict("sandbox-error", 0, {}, str(raw["sandbox_error"]))
    if raw.get("worker_died"):
        return verdict("crashed", 0, {}, str(raw.get("detail", "the evaluation worker died while running this candidate")))

    events = str(raw.get("events_raw", ""))
    cand_dir = str(raw.get("cand_dir") or "")
    if cand_dir:  # report paths relative to the candidate's directory
        events = events.replace(cand_dir.rstrip("/") + "/", "")
    p = parse_events(events, sealed=bool(raw.get("sealed")))
    outcomes = dict(p.outcomes)
    for nid in expected.ids if expected.source == "reference" else ():
        outcomes.setdefault(nid, "missing")
    out_tail = str(raw.get("output_tail", ""))
    fail_texts = [t for _, t in p.collect_errors] + list(p.texts.values())
    sig = raw.get("signal")
    exit_code = raw.get("exit_code")

    # tests passed, counted against what the task's file defines
    if expected.source == "static":
        by_base: dict[str, list[str]] = {}
        for nid, o in p.outcomes.items():
            by_base.setdefault(base_id(nid), []).append(o)
        n_passed = sum(1 for b in expected.ids if by_base.get(b) and all(o in PASSING for o in by_base[b]))
    else:
        n_passed = sum(1 for nid in expected.ids if p.outcomes.get(nid) in PASSING)

    if p.tamper or p.unsealed or p.seal_broken:
        # its reports cannot be trusted, so none of them counts (the pass rate feeds memory)
        what = list(p.tamper)
        if p.unsealed:
            what.append(f"{p.unsealed} event(s) reached the result pipe without the sandbox's checks")
        if p.seal_broken:
            what.append("the collected tests, the test module or pytest's session changed while tests ran")
        return verdict("error", 0, outcomes, f"the candidate tampered with the test runner: {'; '.join(what)}; its reports are not trusted")
    if raw.get("timed_out") or sig == signal.SIGXCPU:
        why = "wall-clock" if raw.get("timed_out") else "CPU-time"
        tail = f"\nlast output:\n{out_tail[-600:]}" if out_tail.strip() else ""
        return verdict("timeout", n_passed, outcomes, f"timed out ({why} limit, {limit_s:.1f} s){tail}")
    if _has_memory_error(fail_texts) or (not p.done and _has_memory_error([out_tail])):
        text = next((t for t in fail_texts if "MemoryError" in t or "Cannot allocate" in t), out_tail[-1500:])
        return verdict("memory", n_passed, outcomes, f"ran out of memory (address-space limit)\n{text}")
    if not p.done:
        if sig is not None:
            how = f"killed by {_signal_name(int(sig))}"
        elif exit_code == 71 and "srscode sandbox" in out_tail:
            return verdict("sandbox-error", 0, outcomes, out_tail[-1500:])
        else:
            how = f"exited with code {exit_code}"
        where = "during collection" if p.collected is None else "while tests were running"
        tail = f"\noutput:\n{out_tail[-1200:]}" if out_tail.strip() else ""
        return verdict("crashed", n_passed, outcomes, f"the test process ended {where} ({how}) before the session finished{tail}")
    if p.collect_errors:
        nid, text = p.collect_errors[0]
        return verdict("error", n_passed, outcomes, f"collection error in {nid or 'the test file'}:\n{_key_lines(text)}")
    if p.internal:
        return verdict("error", n_passed, outcomes, f"pytest internal error:\n{p.internal}")
    if not p.collected:
        why = p.interrupted or "no tests were collected"
        return verdict("error", n_passed, outcomes, f"{why}")
    if n_expected == 0:
        return verdict("error", 0, outcomes, "the task's test file defines no tests, so no candidate can pass")
    bad = [nid for nid, o in p.outcomes.items() if o not in PASSING and o not in ("skipped", "xfailed")]
    bad += [nid for nid in expected.ids if expected.source == "reference" and p.outcomes.get(nid) not in PASSING and nid not in bad]
    if n_passed == n_expected and not bad and not p.interrupted:
        return verdict("passed", n_passed, outcomes, "")

    lines = []
    first = next((nid for nid in bad if nid in p.texts), None)
    if first is not None:
        lines.append(f"{first} failed:\n{p.texts[first]}")
    missing = [nid for nid in expected.ids if outcomes.get(nid) == "missing"]
    if p.interrupted:
        lines.append(f"session interrupted: {p.interrupted}")
    if missing:
        lines.append(f"{len(missing)} expected test(s) never reported: {', '.join(missing[:5])}")
    skipped = [nid for nid, o in p.outcomes.items() if o in ("skipped", "xfailed") and nid in expected.ids]
    if skipped:
        lines.append(f"{len(skipped)} expected test(s) skipped: {', '.join(skipped[:5])}")
    others = len([b for b in bad if b != first])
    if others:
        lines.append(f"({others} more test(s) did not pass)")
    if expected.source == "static" and not lines:
        lines.append(f"{n_expected - n_passed} test function(s) without a passing run")
    return verdict("failed", n_passed, outcomes, "\n".join(lines) or "not every expected test passed")


def expected_from_reference(raw: Mapping[str, Any], static_ids: list[str], limit_s: float = 0.0) -> Expected:
    """Learn the expected ids from the reference solution's run of the test file.

    Tests the reference itself skips or xfails are left out (a candidate cannot be
    asked to pass a test the file marks as expected to fail).
    """
    p = parse_events(str(raw.get("events_raw", "")), sealed=bool(raw.get("sealed")))
    ref_s = p.elapsed if p.done else None
    if p.collected and not p.collect_errors:
        ids = tuple(nid for nid in p.collected if p.outcomes.get(nid) not in ("skipped", "xfailed"))
        exp = Expected(ids, "reference", ref_s)
    elif static_ids:
        exp = Expected(tuple(static_ids), "static", ref_s)
    else:
        exp = Expected((), "none", ref_s)
    v = classify(raw, exp, "", 0, limit_s)  # limit_s: the reference run's timeout, for its excerpt
    return Expected(exp.ids, exp.source, ref_s if v.status in ("passed", "failed") else None, v.status, v.excerpt[:500])
