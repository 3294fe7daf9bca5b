"""``srscode report``: PNG plots and one self-contained HTML page from run directories.

Everything is read from the ledger (rounds, memory log, validations), so a report can
be drawn while a run is going, and for runs recorded before a metric existed (the
retention metrics are replayed from the memory log where a round lacks them).
matplotlib is imported here only, through its object API (no pyplot, no global
backend state): headless by construction.
"""
from __future__ import annotations

import base64
import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from srscode.core.errors import SrsError
from srscode.core.ledger import Ledger
from srscode.core.retention import INTERVAL_BUCKETS, round_records
from srscode.core.types import STAGES


@dataclass
class RunData:
    name: str
    run_dir: Path
    config: dict[str, Any]
    rounds: list[dict[str, Any]]
    validations: dict[int, dict[str, Any]]
    planned: int
    n_train: int | None = None
    n_val: int | None = None
    final_dpo: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    retention: dict[int, dict[str, Any]] = field(default_factory=dict)  # retention probes by round

    def series(self, key: str, default: float | None = None) -> tuple[list[int], list[float]]:
        """(rounds, values) of a numeric metric; a dotted key reaches into nested dicts."""
        xs, ys = [], []
        for m in self.rounds:
            v: Any = m
            for part in key.split("."):
                v = v.get(part) if isinstance(v, dict) else None
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                if default is None:
                    continue
                v = default
            xs.append(m["round"])
            ys.append(float(v))
        return xs, ys


def load_run(run_dir: str | Path) -> RunData:
    path = Path(run_dir)
    ledger = Ledger(path, create=False)
    try:
        config = ledger.get_meta("config") or {}
        dpo = ledger.stage("dpo-final")
        return RunData(
            name=path.resolve().name,
            run_dir=path,
            config=config,
            rounds=round_records(ledger),
            validations=ledger.validations(),
            planned=int(config.get("rounds") or ledger.last_round() or 0),
            n_train=ledger.get_meta("n_train"),
            n_val=ledger.get_meta("n_val"),
            final_dpo=dpo["metrics"] if dpo else None,
            retention=ledger.retention_probes(),
        )
    finally:
        ledger.close()


# --------------------------------------------------------------------------- plotting


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise SrsError(
            "srscode report needs matplotlib, which is not installed. Install it with "
            "`pip install matplotlib` (or `pip install 'srs-code[report]'`)."
        ) from None
    return matplotlib


def _figure(ncols: int = 1, width: float = 8.0, height: float = 4.2) -> tuple[Any, list[Any]]:
    _matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * (1 if ncols == 1 else 0.75 * ncols), height), dpi=110, layout="constrained")
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.set_axisbelow(True)
        ax.spines["top"].set_visible(False)
        ax.spines["right"].set_visible(False)
    return fig, axes


def _round_axis(ax: Any, runs: Sequence[RunData], final: bool = False) -> None:
    """Integer round ticks; with ``final``, room for round 0 (before training) and the
    final validation one step after the last round, labelled "final"."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ax.set_xlabel("round")
    planned = {r.planned for r in runs}
    hi = max(planned | {1})
    lo = 0 if final else 1
    if final:
        hi += 1
    if hi - lo <= 24:
        ax.set_xticks(range(lo, hi + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if final and len(planned) == 1:  # one final position for all runs
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, pos: "final" if round(x) == hi else f"{x:.0f}"))
    ax.set_xlim(lo - 0.6, hi + 0.6)


def _colors(n: int) -> list[Any]:
    _matplotlib()
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _empty(ax: Any, text: str = "no rounds recorded yet") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def _legend(ax: Any, outside: bool = False, handles: Sequence[Any] | None = None,
            labels: Sequence[str] | None = None, **kw: Any) -> None:
    """A small frameless legend; ``outside`` puts it right of the axes (bar charts,
    where any inside spot hides bars)."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    if outside:
        kw = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0, **kw}
    ax.legend(handles, labels, frameon=False, fontsize=8, **kw)


Metric = tuple[str, str, str, str]  # (metric key, line style, label, colour for a single run)


def _lines(ax: Any, runs: Sequence[RunData], metrics: Sequence[Metric]) -> None:
    """One line per metric and run. A single run: a colour per metric, labelled. Several:
    a colour per run (see :func:`_run_legend`) and a line style per metric, explained by
    a legend of black proxies."""
    from matplotlib.lines import Line2D

    compare = len(runs) > 1
    for run, color in zip(runs, _colors(len(runs))):
        for key, style, label, single in metrics:
            xs, ys = run.series(key)
            if xs:
                ax.plot(xs, ys, style, ms=3, lw=1.6, color=color if compare else single,
                        label="_nolegend_" if compare else label)
    if compare and len(metrics) > 1:
        proxies = [Line2D([], [], linestyle=_dash(st), marker=_marker(st), ms=3, color="0.25") for _, st, _, _ in metrics]
        _legend(ax, handles=proxies, labels=[m[2] for m in metrics], loc="best")
    elif not compare:
        _legend(ax, loc="best")


def _dash(style: str) -> str:
    for d in ("--", "-.", ":", "-"):
        if d in style:
            return d
    return "-"


def _marker(style: str) -> str:
    rest = style
    for d in ("--", "-.", ":", "-"):
        rest = rest.replace(d, "")
    return rest or "None"


def _run_legend(fig: Any, runs: Sequence[RunData]) -> None:
    """Several runs: which colour is which run, once, under the plots."""
    if len(runs) < 2:
        return
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, lw=2.5) for c in _colors(len(runs))]
    fig.legend(handles, [r.name for r in runs], loc="outside lower center", ncols=min(len(runs), 4),
               frameon=False, fontsize=9)


def _no_rounds(runs: Sequence[RunData], *axes: Any) -> None:
    if not any(r.rounds for r in runs):
        for ax in axes:
            _empty(ax)


def plot_pass_rate(runs: Sequence[RunData]) -> Any:
    fig, (ax,) = _figure()
    compare = len(runs) > 1
    metrics: list[Metric] = [("pass_rate", "-o", "train pass rate", "tab:blue")]
    if not compare:
        metrics += [("pass_rate_new", "--", "train, new tasks", "tab:cyan"),
                    ("_pass_rate_review", ":", "train, reviews", "tab:purple")]
    for run in runs:  # a round without reviews has no review pass rate worth a point
        for m in run.rounds:
            if m.get("review") and "pass_rate_review" in m:
                m["_pass_rate_review"] = m["pass_rate_review"]
    _lines(ax, runs, metrics)
    for run, color in zip(runs, _colors(len(runs))):
        vx, vy, ve = [], [], []
        for key, v in sorted(run.validations.items()):
            if "pass@1" in v:
                vx.append(min(key, run.planned + 1))
                vy.append(v["pass@1"])
                ve.append(v.get("pass@1_ci95", 0.0))
        if vx:
            ax.errorbar(vx, vy, yerr=ve, fmt="s--", color=color if compare else "tab:green", ms=5, lw=1,
                        capsize=3, mfc="white", label="_nolegend_" if compare else "validation pass@1 (95% CI)")
    if compare:
        from matplotlib.lines import Line2D

        _legend(ax, handles=[Line2D([], [], marker="o", ms=3, color="0.25"),
                             Line2D([], [], marker="s", linestyle="--", mfc="white", color="0.25")],
                labels=["train pass rate", "validation pass@1 (95% CI)"], loc="best")
    else:
        _legend(ax, loc="best")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("pass rate")
    ax.set_title("Pass rate per round (train) and pass@1 on held-out tasks")
    _round_axis(ax, runs, final=True)
    _no_rounds(runs, ax)
    _run_legend(fig, runs)
    return fig


def plot_memory(runs: Sequence[RunData]) -> Any:
    fig, (ax, ax2) = _figure(ncols=2)
    _lines(ax, runs, [("graduated", "-", "graduated", "tab:green"), ("skipped", "--", "skipped", "tab:red"),
                      ("active", ":", "active", "tab:blue")])
    _lines(ax2, runs, [("due", "-", "due next round", "tab:blue"),
                       ("due_backlog", "--", "overdue (backlog)", "tab:orange")])
    ax.set_title("Tasks by memory state")
    ax2.set_title("Review backlog")
    for a in (ax, ax2):
        a.set_ylabel("tasks")
        _round_axis(a, runs)
        a.set_ylim(bottom=0)
    _no_rounds(runs, ax, ax2)
    _run_legend(fig, runs)
    return fig


def plot_intervals(runs: Sequence[RunData]) -> Any:
    from matplotlib import colormaps

    labels = [b[2] for b in INTERVAL_BUCKETS]
    fig, (ax,) = _figure()
    if len(runs) == 1:
        run = runs[0]
        xs = [m["round"] for m in run.rounds]
        bottom = [0.0] * len(xs)
        cmap = colormaps["viridis_r"]  # short intervals light, long ones dark
        for i, label in enumerate(labels):
            ys = [float((m.get("interval_hist") or {}).get(label, 0)) for m in run.rounds]
            if any(ys):
                ax.bar(xs, ys, bottom=bottom, color=cmap(0.12 + 0.85 * i / (len(labels) - 1)), width=0.8,
                       label=label)
            bottom = [b + y for b, y in zip(bottom, ys)]
        ax.set_title("Review intervals of the active tasks after each round")
        ax.set_ylabel("active tasks")
        _round_axis(ax, runs)
        _no_rounds(runs, ax)
        _legend(ax, outside=True, title="interval\n(rounds)", title_fontsize=8)
        return fig
    width = 0.8 / len(runs)
    for i, (run, color) in enumerate(zip(runs, _colors(len(runs)))):
        hist = (run.rounds[-1].get("interval_hist") or {}) if run.rounds else {}
        total = sum(hist.values()) or 1
        ax.bar([j + (i - (len(runs) - 1) / 2) * width for j in range(len(labels))],
               [hist.get(label, 0) / total for label in labels], width=width, color=color)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("review interval (rounds)")
    ax.set_ylabel("share of active tasks")
    ax.set_title("Review intervals after the last round")
    _run_legend(fig, runs)
    return fig


def plot_turnover(runs: Sequence[RunData]) -> Any:
    fig, (ax, ax2) = _figure(ncols=2)
    if len(runs) == 1:
        run = runs[0]
        xs, gained = run.series("turnover_gained")
        _, lost = run.series("turnover_lost")
        ax.bar(xs, gained, color="tab:green", width=0.8, label="gained")
        ax.bar(xs, [-v for v in lost], color="tab:red", width=0.8, label="lost")
        _legend(ax, loc="best")
    else:
        for run in runs:
            for m in run.rounds:
                if "turnover_lost" in m:
                    m["_turnover_lost_neg"] = -m["turnover_lost"]
        _lines(ax, runs, [("turnover_gained", "-", "gained", ""), ("_turnover_lost_neg", "--", "lost", "")])
    ax.axhline(0, color="0.3", lw=0.8)
    _lines(ax2, runs, [("correct_set", "-o", "tasks correct at their last review", "tab:blue")])
    ax.set_title("Correct-set turnover of reviewed tasks")
    ax.set_ylabel("tasks (lost below 0)")
    ax2.set_title("Correct set (pass rate ≥ 0.5 at last review)")
    ax2.set_ylabel("tasks")
    ax2.set_ylim(bottom=0)
    for a in (ax, ax2):
        _round_axis(a, runs)
    _no_rounds(runs, ax, ax2)
    _run_legend(fig, runs)
    return fig


def plot_rates(runs: Sequence[RunData]) -> Any:
    fig, (ax,) = _figure()
    _lines(ax, runs, [("lapse_rate", "-o", "lapse rate", "tab:red"),
                      ("timeout_rate", "--s", "timeout rate", "tab:orange"),
                      ("turnover_rate", ":^", "turnover rate", "tab:purple")])
    ax.set_title("Lapse, timeout and turnover rates per round")
    ax.set_ylabel("rate")
    ax.set_ylim(bottom=0)
    _round_axis(ax, runs)
    _no_rounds(runs, ax)
    _run_legend(fig, runs)
    return fig


def plot_stage_time(runs: Sequence[RunData]) -> Any:
    from matplotlib import colormaps

    stages: list[str] = []
    for run in runs:
        for m in run.rounds:
            stages.extend(s for s in (m.get("seconds") or {}) if s not in stages)
    stages.sort(key=lambda s: STAGES.index(s) if s in STAGES else len(STAGES))  # others (gather) last
    cmap = colormaps["tab10"]
    stage_color = {s: cmap(i % 10) for i, s in enumerate(stages)}
    fig, (ax,) = _figure()
    if len(runs) == 1:
        run = runs[0]
        xs = [m["round"] for m in run.rounds]
        bottom = [0.0] * len(xs)
        for s in stages:
            ys = [float((m.get("seconds") or {}).get(s, 0.0)) for m in run.rounds]
            ax.bar(xs, ys, bottom=bottom, width=0.8, color=stage_color[s], label=s)
            bottom = [b + y for b, y in zip(bottom, ys)]
        ax.set_ylabel("seconds")
        ax.set_title("Time per stage and round")
        _round_axis(ax, runs)
        _no_rounds(runs, ax)
    else:
        names = [r.name for r in runs]
        left = [0.0] * len(runs)
        for s in stages:
            vals = [sum(float((m.get("seconds") or {}).get(s, 0.0)) for m in r.rounds) for r in runs]
            ax.barh(names, vals, left=left, color=stage_color[s], label=s)
            left = [a + b for a, b in zip(left, vals)]
        ax.invert_yaxis()
        ax.set_xlabel("seconds, all rounds")
        ax.set_title("Total time per stage")
    _legend(ax, outside=True)
    return fig


def plot_pairs(runs: Sequence[RunData]) -> Any:
    fig, (ax,) = _figure()
    if len(runs) == 1:
        run = runs[0]
        xs, ys = run.series("dpo_pairs")
        ax.bar(xs, ys, width=0.8, color="tab:blue", label="DPO pairs")
        tx, ty = run.series("pairs_per_task")
        handles, labels = ax.get_legend_handles_labels()
        if tx:
            ax2 = ax.twinx()
            ax2.plot(tx, ty, "-o", ms=3, color="tab:orange", label="pairs per scheduled task")
            ax2.set_ylabel("pairs per task", color="tab:orange")
            ax2.set_ylim(bottom=0)
            ax2.spines["top"].set_visible(False)
            h2, l2 = ax2.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        fig.legend(handles, labels, loc="outside lower center", ncols=2, frameon=False, fontsize=8)
    else:
        _lines(ax, runs, [("dpo_pairs", "-o", "DPO pairs", "")])
    ax.set_ylabel("pairs")
    ax.set_ylim(bottom=0)
    ax.set_title("DPO pairs (pass vs fail of one task) per round")
    _round_axis(ax, runs)
    _no_rounds(runs, ax)
    _run_legend(fig, runs)
    return fig


def plot_retention(runs: Sequence[RunData]) -> Any | None:
    """Held-out pass@1 (left) beside the retention probe's share of ever-solved training
    tasks still solved (right); only when some run has a probe."""
    if not any(run.retention for run in runs):
        return None
    fig, (val_ax, ret_ax) = _figure(ncols=2)
    compare = len(runs) > 1
    for run, color in zip(runs, _colors(len(runs)) if compare else ["tab:green"] * len(runs)):
        label = run.name if compare else None
        vals = [(min(k, run.planned + 1), v) for k, v in sorted(run.validations.items()) if "pass@1" in v]
        if vals:
            val_ax.errorbar([x for x, _ in vals], [v["pass@1"] for _, v in vals],
                            yerr=[v.get("pass@1_ci95", 0.0) for _, v in vals], fmt="s--", color=color, ms=5, lw=1,
                            capsize=3, mfc="white", label=label)
        probes = [(min(k, run.planned + 1), p) for k, p in sorted(run.retention.items())
                  if isinstance(p.get("share"), float)]
        if probes:
            ys = [p["share"] for _, p in probes]
            lo = [max(0.0, y - (p.get("ci95_low") if p.get("ci95_low") is not None else y)) for y, (_, p) in zip(ys, probes)]
            hi = [max(0.0, (p.get("ci95_high") if p.get("ci95_high") is not None else y) - y) for y, (_, p) in zip(ys, probes)]
            ret_ax.errorbar([x for x, _ in probes], ys, yerr=[lo, hi], fmt="D-", color=color if compare else "tab:red",
                            ms=5, lw=1, capsize=3, label=label)
    for ax, title in ((val_ax, "Held-out pass@1 (95% CI)"), (ret_ax, "Ever-solved training tasks still solved (95% Wilson)")):
        ax.set_ylim(0, 1.02)
        ax.set_title(title, fontsize=10)
        _round_axis(ax, runs, final=True)
    val_ax.set_ylabel("share")
    if compare:
        _legend(ret_ax, loc="best")
    return fig


def plot_loss(runs: Sequence[RunData]) -> Any | None:
    if not any(run.series("train_loss")[0] or run.series("dpo_loss")[0] for run in runs):
        return None
    fig, (ax,) = _figure()
    _lines(ax, runs, [("train_loss", "-o", "SFT loss", "tab:blue"), ("dpo_loss", "--s", "DPO loss", "tab:red")])
    ax.set_title("Training loss per round")
    ax.set_ylabel("loss")
    _round_axis(ax, runs)
    _run_legend(fig, runs)
    return fig


PLOTS: tuple[tuple[str, str, Callable[[Sequence[RunData]], Any]], ...] = (
    ("pass_rate", "Pass rate", plot_pass_rate),
    ("retention", "Retention beside held-out pass@1", plot_retention),
    ("memory", "Graduation, skips and backlog", plot_memory),
    ("turnover", "Correct-set turnover", plot_turnover),
    ("rates", "Lapse, timeout and turnover rates", plot_rates),
    ("intervals", "Interval distribution", plot_intervals),
    ("dpo_pairs", "DPO pairs", plot_pairs),
    ("stage_time", "Stage time", plot_stage_time),
    ("loss", "Training loss", plot_loss),
)

CAPTIONS = {
    "pass_rate": "Train: mean pass rate of the round's scheduled tasks (new and review tasks separately). "
                 "Validation: pass@1 on the held-out split with a 95% normal-approximation interval over tasks; "
                 "round 0 is before training, 'final' after the last round and the final DPO stage.",
    "retention": "Left: pass@1 on the held-out split. Right: the retention probe, every training task whose pass "
                 "rate reached the threshold at some review, re-tested with the adapter of that point; the share whose "
                 "mean test pass rate still reaches the threshold, with a 95% Wilson interval over tasks.",
    "memory": "Cumulative memory totals after each round; 'due next round' counts active tasks whose review is due; "
              "'overdue' counts due tasks the scheduler had no room for.",
    "turnover": "A task is correct when its pass rate is at least 0.5. Gained: reviewed tasks wrong at their "
                "previous review and correct now; lost: the reverse (forgetting).",
    "rates": "Lapse rate: reviewed tasks that passed something before and nothing now, over the reviewed tasks that "
             "passed something before. Timeout rate: share of candidates that timed out. Turnover rate: "
             "(gained + lost) / correct set.",
    "intervals": "How far apart reviews are spaced; a curriculum that works pushes tasks to longer intervals.",
    "dpo_pairs": "Preference pairs pair a passing and a failing candidate of the same task.",
    "stage_time": "Wall time of each stage.",
    "loss": "Training loss reported by the trainers.",
}


# --------------------------------------------------------------------------- HTML


def _fmt(v: Any, spec: str = ".3f") -> str:
    if isinstance(v, bool) or v is None:
        return "–" if v is None else str(v)
    if isinstance(v, float):
        return format(v, spec)
    return html.escape(str(v))


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _summary_rows(runs: Sequence[RunData]) -> str:
    head = ("run", "rounds", "train / val tasks", "scheduler", "memory", "DPO", "seen", "graduated", "skipped",
            "val pass@1 before", "val pass@1 last", "stage time")
    rows = []
    for run in runs:
        last = run.rounds[-1] if run.rounds else {}
        stages = run.config.get("stages", {})
        vals = run.validations
        before = vals.get(0, {})
        final_key = max(vals) if vals else None
        final = vals.get(final_key, {}) if final_key not in (None, 0) else {}

        def score(v: dict[str, Any]) -> str:
            if "pass@1" not in v:
                return "–"
            ci = v.get("pass@1_ci95")
            return f"{v['pass@1']:.3f}" + (f" ± {ci:.3f}" if isinstance(ci, float) else "")

        secs = sum(sum((m.get("seconds") or {}).values()) for m in run.rounds)
        cells = (
            run.name, f"{len(run.rounds)} / {run.planned}", f"{_fmt(run.n_train)} / {_fmt(run.n_val)}",
            (stages.get("scheduler") or {}).get("name", "?"), (stages.get("memory") or {}).get("name", "?"),
            str((run.config.get("dpo") or {}).get("every", "?")),
            _fmt(last.get("seen")), _fmt(last.get("graduated")), _fmt(last.get("skipped")),
            score(before), score(final), _duration(secs),
        )
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"


def _round_table(run: RunData) -> str:
    cols = ("round", "new", "review", "pass_rate", "pass_rate_new", "pass_rate_review", "graduated", "skipped",
            "due", "due_backlog", "turnover_gained", "turnover_lost", "lapse_rate", "timeout_rate", "duplicate_rate", "dpo_pairs",
            "pairs_per_task", "train_loss")
    present = [c for c in cols if any(c in m for m in run.rounds)]
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(m.get(c))}</td>" for c in present) + "</tr>" for m in run.rounds
    )
    return (f"<details><summary>{html.escape(run.name)}: metrics per round</summary><table><tr>"
            + "".join(f"<th>{c}</th>" for c in present) + f"</tr>{body}</table></details>")


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1100px;
color:#222;padding:0 1rem} h1{font-size:1.5rem} h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0} td,th{border:1px solid #ddd;padding:.25rem .5rem;
text-align:right} th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee} .cap{color:#555;font-size:.9rem;max-width:900px}
details{margin:.5rem 0} summary{cursor:pointer} .meta{color:#666;font-size:.85rem}
"""


def render_html(runs: Sequence[RunData], images: Sequence[tuple[str, str, Path]], comparison: str = "") -> str:
    title = "srs-code report: " + (", ".join(r.name for r in runs))
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='meta'>generated {time.strftime('%Y-%m-%d %H:%M:%S')} from "
        + ", ".join(html.escape(str(r.run_dir)) for r in runs) + "</p>",
        _summary_rows(runs),
    ]
    if comparison:  # the paired comparison of arms (srscode.cli.compare), already HTML
        parts.append(comparison)
    for key, heading, path in images:
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(f"<h2 id='{key}'>{html.escape(heading)}</h2>")
        parts.append(f"<img alt='{html.escape(heading)}' src='data:image/png;base64,{data}'>")
        parts.append(f"<p class='cap'>{html.escape(CAPTIONS.get(key, ''))}</p>")
    parts.append("<h2>Rounds</h2>")
    parts.extend(_round_table(r) for r in runs)
    parts.append("<h2>Configs</h2>")
    for r in runs:
        parts.append(f"<details><summary>{html.escape(r.name)}</summary><pre>"
                     f"{html.escape(json.dumps(r.config, indent=1, sort_keys=True))}</pre></details>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def default_out_dir(run_dirs: Sequence[str | Path]) -> Path:
    first = Path(run_dirs[0])
    return first / ("report" if len(run_dirs) == 1 else "report-compare")


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path | None = None, comparison: str = "") -> Path:
    """Render every plot as PNG and ``report.html`` (images embedded) into ``out_dir``
    (default ``RUN_DIR/report``, or ``RUN_DIR/report-compare`` for several runs).
    Returns the HTML path."""
    if not run_dirs:
        raise SrsError("report: no run directory given")
    _matplotlib()
    runs = [load_run(d) for d in run_dirs]
    names = [r.name for r in runs]
    for i, r in enumerate(runs):  # two runs named alike would share a legend entry
        if names.count(r.name) > 1:
            r.name = f"{r.name} ({r.run_dir.resolve().parent.name})"
    out = Path(out_dir) if out_dir is not None else default_out_dir(run_dirs)
    out.mkdir(parents=True, exist_ok=True)
    images = []
    for key, heading, plot in PLOTS:
        fig = plot(runs)
        if fig is None:
            continue
        path = out / f"{key}.png"
        fig.savefig(path, format="png")
        images.append((key, heading, path))
    page = out / "report.html"
    page.write_text(render_html(runs, images, comparison), encoding="utf-8")
    return page
