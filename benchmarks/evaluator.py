"""Evaluator throughput and agreement on the shared KodCode rows.

Runs the recorded trial candidates of ``../shared/data/kodcode/`` (each with its own
recorded test file and verdict) plus every task's reference solution through

  (a)  the seed-style runner: one ``python -m pytest -q --maxfail=1`` subprocess per
       candidate in a fresh temp dir with the ``from solution import *`` harness, 5 s
       timeout, pass = exit code 0 -- with pytest's plugin autoload off, which is
       pytest's own start-up (this machine also has hypothesis' pytest plugin installed,
       whose import alone takes ~2.5 CPU-s: the seed-style runner *with* autoload is timed
       on a sample, ``--autoload-sample``);
  (b)  ours, ``pytest-xdist`` (the fork-server evaluator), cold: worker start-up and
       learning every test file's expected ids from the reference are included;
  (c)  optional, ``--xdist-layer``: pytest-xdist as the distribution layer (one outer
       ``pytest -n W`` session whose items are candidates; each item forks a child that
       runs a nested ``pytest.main``), the design the module doc of
       ``srscode.plugins.evaluate.worker_pool`` compares against;

in the same run, and prints candidates/s, the ratio, and the agreement of (a) and (b)
with the recorded ``test_result`` (Pass vs Fail / Fail - Timed Out), listing every
disagreement with its reason. ``--markdown`` prints the table for docs/benchmarks.md.

    python benchmarks/evaluator.py [--workers 2] [--limit N] [--markdown] [--json OUT]
    python benchmarks/evaluator.py --smoke    # 3 starter tasks and their recorded trials, every runner

``--smoke`` takes the starter set's rows (KodCode's schema, recorded trials included) and
small samples, so every runner and the table run in seconds without the shared data.
"""
from __future__ import annotations

import argparse
import ast
import concurrent.futures as cf
import json
import os
import platform
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Iterable

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "kodcode"
HARNESS = "from solution import *\n"


def decode(text: str) -> str:
    """Some KodCode strings are stored as Python string literals."""
    if text[:1] in ("'", '"'):
        try:
            value = ast.literal_eval(text)
            if isinstance(value, str):
                return value
        except (ValueError, SyntaxError):
            pass
    return text


def load_items(data: Path) -> list[dict[str, Any]]:
    return [it for f in sorted(data.glob("*.json")) for it in row_items(json.loads(f.read_text()))]


def starter_items() -> list[dict[str, Any]]:
    """The packaged starter set's rows as items (--smoke's data)."""
    import importlib.resources

    text = (importlib.resources.files("srscode.plugins.data.starter_set") / "tasks.jsonl").read_text()
    return row_items(json.loads(line) for line in text.splitlines() if line.strip())


def row_items(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each KodCode row's reference solution and recorded trials, as candidates."""
    items = []
    for row in rows:
        qid, ref = row["question_id"], decode(row["solution"])
        items.append({"id": f"{qid}::reference", "solution": ref, "test": decode(row["test_code"]), "reference": ref, "recorded": None})
        for key, trial in row["trials"].items():
            items.append(
                {
                    "id": f"{qid}::{key}",
                    "solution": decode(trial["solution_code"]),
                    "test": decode(trial["test_code"]),
                    "reference": ref,
                    "recorded": trial["test_result"],
                }
            )
    return items


def cpu_now() -> float:
    """CPU seconds of this process and every child it has reaped (workers included once
    they exit): a shared machine's load changes wall time far more than CPU time."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


# --------------------------------------------------------------------------- (a)


def seed_style_one(item: dict[str, Any], autoload: bool) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="seedstyle-")
    try:
        Path(tmp, "solution.py").write_text(item["solution"])
        Path(tmp, "test_solution.py").write_text(HARNESS + item["test"])
        env = dict(os.environ)
        if not autoload:
            env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", "--maxfail=1", "test_solution.py"],
            cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=5)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            rc = "timeout"
        return {"id": item["id"], "passed": rc == 0, "rc": rc, "tail": out.decode("utf-8", "replace")[-1500:]}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def seed_style_cpu(items: list[dict[str, Any]]) -> list[float]:
    """CPU seconds of each seed-style run, one at a time (exact per-run accounting)."""
    out = []
    for it in items:
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        seed_style_one(it, autoload=False)
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        out.append(c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime)
    return out


def ours_cpu(items: list[dict[str, Any]], **params: Any) -> list[float]:
    """CPU seconds of each candidate's run in a warm worker (its process + the worker's
    share), expected ids already learned: the per-candidate cost in steady state.
    ``params``: more evaluator params (``integrity``, ``strict_equality``)."""
    from srscode.plugins.evaluate.worker_pool import PytestXdistEvaluator, XdistParams

    ev = PytestXdistEvaluator(XdistParams(workers=1, cache_path="none", timeout_s=5, max_timeout_s=5, **params))
    try:
        svc = ev.service
        done = []
        for it in items:  # learn first, so only candidate runs are measured
            svc.learn(it["test"], it["reference"], lambda k, e: done.append(k))
        svc.wait_references()
        raws: list[dict[str, Any]] = []
        orig = svc._handle

        def spy(raw: Any) -> None:
            raws.append(dict(raw))
            orig(raw)

        svc._handle = spy  # type: ignore[method-assign]
        for it in items:
            svc.submit_code(it["id"], 0, it["solution"], it["test"], it["reference"])
        list(svc.results_with_seq())
    finally:
        ev.close()
    return [r.get("cpu_s", 0.0) + r.get("worker_cpu_s", 0.0) for r in raws]


def run_seed_style(items: list[dict[str, Any]], workers: int, autoload: bool) -> tuple[dict[str, dict[str, Any]], float, float]:
    t0, c0 = time.monotonic(), cpu_now()
    with cf.ThreadPoolExecutor(workers) as ex:
        res = list(ex.map(lambda it: seed_style_one(it, autoload), items))
    return {r["id"]: r for r in res}, time.monotonic() - t0, cpu_now() - c0


# --------------------------------------------------------------------------- (b)


def run_ours(
    items: list[dict[str, Any]], workers: int, cache_path: str = "none", cap_s: float = 5.0, dedupe: bool = True, **params: Any
) -> tuple[dict[str, dict[str, Any]], float, float, float]:
    from srscode.plugins.evaluate.worker_pool import PytestXdistEvaluator, XdistParams

    t0, c0 = time.monotonic(), cpu_now()
    # the same 5 s cap as the seed-style runner (what `srscode evaluate --timeout 5` sets);
    # below it, each candidate's limit is max(2 s, 5 x its reference's runtime)
    ev = PytestXdistEvaluator(XdistParams(workers=workers, cache_path=cache_path, timeout_s=cap_s, max_timeout_s=cap_s, dedupe=dedupe, **params))
    try:
        svc = ev.service  # starts the workers
        started = time.monotonic() - t0
        seqs = {}
        for it in items:
            seqs[svc.submit_code(it["id"], 0, it["solution"], it["test"], it["reference"])] = it["id"]
        out = {}
        for seq, v in svc.results_with_seq():
            out[seqs[seq]] = {"id": seqs[seq], "passed": v.passed, "status": v.status, "excerpt": v.excerpt, "tests": f"{v.tests_passed}/{v.tests_expected}"}
        elapsed = time.monotonic() - t0
        info = dict(ev.isolation)
        reused = svc.reused
    finally:
        ev.close()  # the workers exit here, so their CPU time is counted below
    out["__isolation__"] = info  # type: ignore[assignment]
    out["__reused__"] = reused  # type: ignore[assignment]
    return out, elapsed, started, cpu_now() - c0


# --------------------------------------------------------------------------- (c)

XDIST_LAYER_PLUGIN = textwrap.dedent(
    '''
    """pytest-xdist as the distribution layer: one item per candidate; each item forks a
    child that runs the candidate's tests with a nested pytest.main."""
    import json, os, shutil, tempfile, time
    import pytest

    HARNESS = "from solution import *\\n"

    def pytest_collect_file(parent, file_path):
        if file_path.name.endswith(".jobs.jsonl"):
            return JobsFile.from_parent(parent, path=file_path)

    class JobsFile(pytest.File):
        def collect(self):
            for i, line in enumerate(self.path.read_text().splitlines()):
                job = json.loads(line)
                yield JobItem.from_parent(self, name=f"job{i}", job=job)

    class Report:
        def __init__(self):
            self.outcomes = {}
        def pytest_runtest_logreport(self, report):
            if report.when == "call" or report.outcome != "passed":
                self.outcomes[report.nodeid] = report.outcome
        def pytest_collectreport(self, report):
            if report.failed:
                self.outcomes["<collect>"] = "failed"

    class JobItem(pytest.Item):
        def __init__(self, *, job, **kw):
            super().__init__(**kw)
            self.job = job

        def runtest(self):
            tmp = tempfile.mkdtemp(prefix="xdl-")
            out = os.path.join(tmp, "result.json")
            with open(os.path.join(tmp, "solution.py"), "w") as f:
                f.write(self.job["solution"])
            with open(os.path.join(tmp, "test_solution.py"), "w") as f:
                f.write(HARNESS + self.job["test"])
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    os.setsid()
                    os.chdir(tmp)
                    fd = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(fd, 1); os.dup2(fd, 2)
                    rep = Report()
                    pytest.main(["-q", "-s", "-p", "no:cacheprovider", "-p", "no:xdist", "--rootdir", tmp, "test_solution.py"], plugins=[rep])
                    ok = bool(rep.outcomes) and all(v == "passed" for v in rep.outcomes.values())
                    with open(out, "w") as f:
                        json.dump({"id": self.job["id"], "passed": ok}, f)
                except BaseException:
                    code = 1
                os._exit(code)
            deadline = time.monotonic() + 5
            while True:
                got, _ = os.waitpid(pid, os.WNOHANG)
                if got or time.monotonic() > deadline:
                    break
                time.sleep(0.002)
            if not got:
                os.killpg(pid, 9); os.waitpid(pid, 0)
            passed = False
            if os.path.exists(out):
                passed = json.load(open(out))["passed"]
            with open(os.environ["XDL_RESULTS"], "a") as f:
                f.write(json.dumps({"id": self.job["id"], "passed": passed}) + "\\n")
            shutil.rmtree(tmp, ignore_errors=True)

        def reportinfo(self):
            return self.path, 0, self.name
    '''
)


def run_xdist_layer(items: list[dict[str, Any]], workers: int) -> tuple[dict[str, dict[str, Any]], float]:
    tmp = Path(tempfile.mkdtemp(prefix="xdist-layer-"))
    try:
        (tmp / "xdl_plugin.py").write_text(XDIST_LAYER_PLUGIN)
        (tmp / "cands.jobs.jsonl").write_text("".join(json.dumps({"id": it["id"], "solution": it["solution"], "test": it["test"]}) + "\n" for it in items))
        results = tmp / "results.jsonl"
        env = dict(os.environ, PYTHONPATH=f"{tmp}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", XDL_RESULTS=str(results), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
        t0 = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "xdist.plugin", "-p", "xdl_plugin", "-n", str(workers), "-p", "no:cacheprovider", "--rootdir", str(tmp), str(tmp / "cands.jobs.jsonl")],
            cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        elapsed = time.monotonic() - t0
        out = {}
        if results.exists():
            for line in results.read_text().splitlines():
                r = json.loads(line)
                out[r["id"]] = r
        return out, elapsed
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- agreement


def reason(item: dict[str, Any], text: str, status: str = "") -> str:
    t = text or ""
    if "No module named" in t:
        mod = t.split("No module named", 1)[1].strip().split()[0].strip("'\"")
        return f"package {mod} is not installed on this machine"
    if "'yield' keyword is allowed in fixtures, but not in tests" in t or "yield tests were removed" in t:
        return "yield-style test function, which pytest >= 4 rejects at collection (the recorded verdict came from an older pytest)"
    if status == "timeout" or item["recorded"] == "Fail - Timed Out":
        return "timing-dependent: recorded as a timeout by the authors' runner"
    first = next((ln for ln in t.splitlines() if ln.startswith("E ")), "") or t.strip().splitlines()[-1:] and t.strip().splitlines()[-1] or ""
    return f"unexplained: {first[:160]}"


def agreement(items: list[dict[str, Any]], res: dict[str, dict[str, Any]], text_key: str) -> tuple[int, int, list[dict[str, Any]]]:
    agree, total, dis = 0, 0, []
    for it in items:
        if it["recorded"] is None or it["id"] not in res:
            continue
        total += 1
        rec_pass = it["recorded"] == "Pass"
        r = res[it["id"]]
        if bool(r["passed"]) == rec_pass:
            agree += 1
        else:
            dis.append({"id": it["id"], "recorded": it["recorded"], "ours": r.get("status", "passed" if r["passed"] else f"rc={r.get('rc')}"), "reason": reason(it, r.get(text_key, ""), r.get("status", ""))})
    return agree, total, dis


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--input", type=Path, default=None,
                    help="evaluate this `srscode evaluate` JSONL (id, solution, test, reference) instead of the KodCode trials, "
                         "e.g. a round's sampled candidates (benchmarks/round.py --export-candidates); no recorded verdicts")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--limit", type=int, default=None, help="use only the first N tasks (all their trials)")
    ap.add_argument("--autoload-sample", type=int, default=40, help="time the seed-style runner with plugin autoload on this many candidates (0 = skip)")
    ap.add_argument("--xdist-layer", type=int, default=0, metavar="N", help="also time pytest-xdist as the distribution layer on N candidates")
    ap.add_argument("--cpu-sample", type=int, default=40, help="median CPU per candidate of both runners, measured one run at a time on N candidates (0 = skip)")
    ap.add_argument("--skip-seed", action="store_true", help="only run ours")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--smoke", action="store_true",
                    help="the starter set's first 3 tasks, 2 workers, samples of 2, every runner, --markdown")
    args = ap.parse_args(argv)
    if args.smoke:
        args.limit, args.workers, args.markdown = 3, 2, True
        args.autoload_sample, args.cpu_sample, args.xdist_layer = 2, 2, 2
    if args.input is not None:
        items = [dict(json.loads(line), recorded=None) for line in args.input.read_text().splitlines() if line.strip()]
    elif args.smoke:
        items = starter_items()
    elif not args.data.is_dir():
        print(f"no data at {args.data} (the shared KodCode rows); nothing to benchmark", file=sys.stderr)
        return 2
    else:
        items = load_items(args.data)
    if args.limit:
        keep = sorted({it["id"].split("::")[0] for it in items})[: args.limit]
        items = [it for it in items if it["id"].split("::")[0] in keep]
    n = len(items)
    n_trials = sum(1 for it in items if it["recorded"] is not None)
    print(f"{n} candidates ({n_trials} recorded trials + {n - n_trials} references), {args.workers} workers, {os.cpu_count()} cores", file=sys.stderr)
    report: dict[str, Any] = {"candidates": n, "trials": n_trials, "workers": args.workers, "cores": os.cpu_count(), "machine": platform.platform(), "python": platform.python_version(),
                              "input": str(args.input) if args.input else None}

    def ours_pair(dedupe: bool, label: str, key: str) -> dict[str, Any]:
        """Cold (fresh reference cache) then warm (expected ids and reference times
        already cached: later rounds, or after check-data)."""
        cache_dir = tempfile.mkdtemp(prefix="bench-cache-")
        cache = os.path.join(cache_dir, "reference-cache.json")
        try:
            cold, t_cold, t_start, c_cold = run_ours(items, args.workers, cache, dedupe=dedupe)
            iso = cold.pop("__isolation__", {})
            reused = cold.pop("__reused__", 0)
            report[key] = {"seconds": t_cold, "startup_s": t_start, "per_s": n / t_cold, "cpu_per_cand": c_cold / n, "load": load_average(), "reused": reused}
            print(f"(b) ours, {label}, cold: {t_cold:.1f} s, {n / t_cold:.1f} candidates/s, {c_cold / n * 1000:.0f} CPU-ms/candidate, {reused} verdicts shared (start-up {t_start:.1f} s; load {load_average()})", file=sys.stderr)
            warm, t_warm, _, c_warm = run_ours(items, args.workers, cache, dedupe=dedupe)
            warm.pop("__isolation__", None)
            w_reused = warm.pop("__reused__", 0)
            flipped = sorted(k for k in cold if warm[k]["passed"] != cold[k]["passed"])
            report[key + "_warm"] = {"seconds": t_warm, "per_s": n / t_warm, "cpu_per_cand": c_warm / n, "load": load_average(), "reused": w_reused,
                                     "same_verdicts": not flipped, "flipped": flipped}
            if flipped:  # a test whose outcome is random or load-dependent
                print(f"    cold and warm verdicts differ on: {', '.join(flipped)}", file=sys.stderr)
            print(f"(b) ours, {label}, warm cache: {t_warm:.1f} s, {n / t_warm:.1f} candidates/s, {c_warm / n * 1000:.0f} CPU-ms/candidate, {w_reused} verdicts shared (load {load_average()})", file=sys.stderr)
        finally:
            shutil.rmtree(cache_dir, ignore_errors=True)
        cold["__isolation__"] = iso
        return cold

    report["load_before"] = load_average()
    ours = ours_pair(True, "default (identical candidates run once)", "ours")
    iso = ours.pop("__isolation__", {})
    every = ours_pair(False, "every candidate run (dedupe off)", "ours_every")
    every.pop("__isolation__", None)
    dedupe_flipped = sorted(k for k in ours if every[k]["status"] != ours[k]["status"])
    report["dedupe_same_verdicts"] = not dedupe_flipped
    report["dedupe_flipped"] = dedupe_flipped
    if dedupe_flipped:
        print(f"(b) default and every-copy runs differ on: {', '.join(dedupe_flipped)}", file=sys.stderr)
    if not args.skip_seed:
        seed, t_seed, c_seed = run_seed_style(items, args.workers, autoload=False)
        report["seed"] = {"seconds": t_seed, "per_s": n / t_seed, "cpu_per_cand": c_seed / n, "load": load_average()}
        print(f"(a) seed-style (no autoload): {t_seed:.1f} s, {n / t_seed:.1f} candidates/s, {c_seed / n * 1000:.0f} CPU-ms/candidate (load {load_average()})", file=sys.stderr)
    if args.autoload_sample:
        sample = random.Random(0).sample(items, min(args.autoload_sample, n))
        _, t_auto, c_auto = run_seed_style(sample, args.workers, autoload=True)
        report["seed_autoload"] = {"candidates": len(sample), "seconds": t_auto, "per_s": len(sample) / t_auto, "cpu_per_cand": c_auto / len(sample)}
        print(f"(a+) seed-style with this machine's plugin autoload, {len(sample)} sampled: {len(sample) / t_auto:.2f} candidates/s, {c_auto / len(sample) * 1000:.0f} CPU-ms/candidate", file=sys.stderr)
    if args.cpu_sample:
        import statistics

        sample = random.Random(2).sample(items, min(args.cpu_sample, n))
        a_cpu, b_cpu = seed_style_cpu(sample), ours_cpu(sample)
        report["median_cpu_ms"] = {"candidates": len(sample), "seed": statistics.median(a_cpu) * 1000, "ours": statistics.median(b_cpu) * 1000}
        m = report["median_cpu_ms"]
        print(f"median CPU per candidate, {len(sample)} sampled: seed-style {m['seed']:.0f} ms, ours {m['ours']:.1f} ms ({m['seed'] / m['ours']:.1f}x)", file=sys.stderr)
    if args.xdist_layer:
        sample = random.Random(1).sample(items, min(args.xdist_layer, n))
        c0 = cpu_now()
        xres, t_x = run_xdist_layer(sample, args.workers)
        c_x = cpu_now() - c0
        report["xdist_layer"] = {"candidates": len(sample), "completed": len(xres), "seconds": t_x, "per_s": len(sample) / t_x, "cpu_per_cand": c_x / len(sample)}
        print(f"(c) pytest-xdist distribution layer, {len(sample)} sampled: {len(sample) / t_x:.1f} candidates/s, {c_x / len(sample) * 1000:.0f} CPU-ms/candidate", file=sys.stderr)

    a_ours, tot, dis_ours = agreement(items, ours, "excerpt")
    report["ours"].update(agree=a_ours, total=tot, disagreements=dis_ours, references_passed=sum(1 for it in items if it["recorded"] is None and ours[it["id"]]["passed"]))
    lines = [f"\n(b) ours agrees with {a_ours}/{tot} recorded verdicts; disagreements:"]
    lines += [f"  {d['id']}: recorded {d['recorded']}, ours {d['ours']} -- {d['reason']}" for d in dis_ours]
    if not args.skip_seed:
        a_seed, _, dis_seed = agreement(items, seed, "tail")
        report["seed"].update(agree=a_seed, disagreements=dis_seed, references_passed=sum(1 for it in items if it["recorded"] is None and seed[it["id"]]["passed"]))
        report["ratio"] = report["ours"]["per_s"] / report["seed"]["per_s"]
        report["ratio_cpu"] = report["seed"]["cpu_per_cand"] / report["ours"]["cpu_per_cand"]
        lines += [f"\n(a) seed-style agrees with {a_seed}/{tot} recorded verdicts; disagreements:"]
        lines += [f"  {d['id']}: recorded {d['recorded']}, seed-style {d['ours']} -- {d['reason']}" for d in dis_seed]
        both = [it["id"] for it in items if it["id"] in seed and bool(seed[it["id"]]["passed"]) != bool(ours[it["id"]]["passed"])]
        report["a_vs_b_differ"] = both
        lines += [f"\n(a) and (b) differ on {len(both)} candidate(s): {', '.join(both[:20])}"]
    print("\n".join(lines))
    report["isolation"] = iso
    if args.markdown:
        print(markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


def _same(flipped: list[str]) -> str:
    return "yes" if not flipped else f"all but {', '.join(flipped)}"


def markdown(r: dict[str, Any]) -> str:
    seed = r.get("seed")
    refs = r["candidates"] - r["trials"]

    def ratios(x: dict[str, Any]) -> tuple[str, str]:
        if not seed:
            return "-", "-"
        return f"{x['per_s'] / seed['per_s']:.1f}", f"{seed['cpu_per_cand'] / x['cpu_per_cand']:.1f}"

    rows = [
        "| runner | candidates | wall s | candidates/s | CPU-ms per candidate | ratio to (a): throughput / CPU | agreement with recorded verdicts | references passing |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if seed:
        rows.append(f"| (a) seed-style: one `pytest` subprocess per candidate (autoload off) | {r['candidates']} | {seed['seconds']:.1f} | {seed['per_s']:.2f} | {seed['cpu_per_cand'] * 1000:.0f} | 1 / 1 | {seed['agree']}/{r['trials']} | {seed['references_passed']}/{refs} |")
    if "seed_autoload" in r:
        s = r["seed_autoload"]
        t, c = ratios(s)
        rows.append(f"| (a+) seed-style with this machine's plugin autoload (sample) | {s['candidates']} | {s['seconds']:.1f} | {s['per_s']:.2f} | {s['cpu_per_cand'] * 1000:.0f} | {t} / {c} | - | - |")
    if "xdist_layer" in r:
        s = r["xdist_layer"]
        t, c = ratios(s)
        rows.append(f"| (c) pytest-xdist as distribution layer + fork + nested `pytest.main` (sample) | {s['candidates']} | {s['seconds']:.1f} | {s['per_s']:.2f} | {s['cpu_per_cand'] * 1000:.0f} | {t} / {c} | - | - |")
    for key, label in (("ours_every", "every candidate run (`dedupe: false`)"), ("ours", "default: identical candidates run once")):
        if key not in r:
            continue
        o = r[key]
        t, c = ratios(o)
        agree = f"{o['agree']}/{r['trials']}" if "agree" in o else f"same verdicts as the default: {_same(r.get('dedupe_flipped', []))}"
        passing = f"{o['references_passed']}/{refs}" if "references_passed" in o else ""
        rows.append(f"| (b) ours, {label}, cold (start-up and reference runs included; {o['reused']} verdicts shared) | {r['candidates']} | {o['seconds']:.1f} | {o['per_s']:.2f} | {o['cpu_per_cand'] * 1000:.0f} | **{t} / {c}** | {agree} | {passing} |")
        w = r.get(key + "_warm")
        if w:
            t, c = ratios(w)
            rows.append(f"| (b) ours, {label}, warm reference cache ({w['reused']} shared) | {r['candidates']} | {w['seconds']:.1f} | {w['per_s']:.2f} | {w['cpu_per_cand'] * 1000:.0f} | **{t} / {c}** | same verdicts: {_same(w.get('flipped', []))} | |")
    if r.get("input"):
        rows.append("")
        rows.append(f"Input {r['input']}: no recorded verdicts, so the last column counts passing candidates; "
                    f"(a) and (b) differ on {len(r.get('a_vs_b_differ', []))} candidate(s).")
    if "median_cpu_ms" in r:
        m = r["median_cpu_ms"]
        rows.append("")
        rows.append(f"Median CPU per candidate (one run at a time, {m['candidates']} sampled candidates, expected ids already learned): seed-style {m['seed']:.0f} ms, ours {m['ours']:.1f} ms: **{m['seed'] / m['ours']:.1f}x** less.")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
