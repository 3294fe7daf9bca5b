"""Data that flows between stages, and the stage interfaces.

Everything here is plain data (dataclasses) or a ``typing.Protocol``; no stage
implementation is imported, so this module is cheap to import.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    Any,
    Callable,
    Iterator,
    Mapping,
    Protocol,
    Sequence,
    runtime_checkable,
)

# The stages of one round, in the order the engine runs them ("dpo" and "validate" run only
# when configured). Stage timings, reports, benchmarks and lifecycle hooks use these names.
STAGES: tuple[str, ...] = ("schedule", "prompt", "generate", "evaluate", "memory", "train", "pairs", "dpo",
                           "validate")

# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ComponentSpec:
    """A named implementation of one stage, yielded by a registration hook.

    ``factory(params, ctx)`` builds the component; ``params`` is a pydantic model
    (or dataclass) validating the ``params:`` mapping of the config; unknown keys are
    an error.
    """

    name: str
    factory: Callable[..., Any]
    params: type | None = None
    summary: str = ""


@dataclass(frozen=True)
class FunctionInfo:
    """One entry of KodCode's ``test_info``: a function the tests call."""

    name: str
    parameters: str = ""
    declaration: str = ""
    docstring: str = ""


@dataclass(frozen=True)
class RecordedTrial:
    """A candidate solution recorded with the dataset (KodCode ``trials``)."""

    key: str
    solution_code: str
    result: str  # "Pass", "Fail", "Fail - Timed Out" as recorded


@dataclass(frozen=True)
class Task:
    """A verifiable coding task: a question, a reference solution and pytest code."""

    task_id: str
    question: str
    solution: str
    test_code: str
    test_info: tuple[FunctionInfo, ...] = ()
    difficulty: str | None = None
    pass_percentage: float | None = None
    source: str = ""
    trials: tuple[RecordedTrial, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Prompt:
    """The model input for one task.

    ``messages`` is the chat form (kept for the record and for chat-template
    engines); ``text`` is the rendered string the generator feeds the model.
    """

    task_id: str
    text: str
    messages: tuple[Mapping[str, str], ...] = ()
    stop: tuple[str, ...] = ()
    format: str = ""


@dataclass(frozen=True)
class FailedAttempt:
    """A task's last failing candidate (the ledger keeps one per task): its code and the
    sanitised excerpt of its failure (:mod:`srscode.core.failure_excerpt`)."""

    task_id: str
    round: int
    index: int
    status: str
    pass_rate: float
    code: str
    excerpt: str


@dataclass(frozen=True)
class AdapterRef:
    """A LoRA adapter on disk and the hash of its content (its identity)."""

    path: str
    sha256: str

    @staticmethod
    def from_dir(path: str | Path) -> "AdapterRef":
        """Hash every file of an adapter directory (names and bytes), sorted."""
        root = Path(path)
        h = hashlib.sha256()
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
        return AdapterRef(str(root), h.hexdigest())


@dataclass(frozen=True)
class Candidate:
    """One sampled solution of one task."""

    task_id: str
    index: int
    text: str  # raw model output
    code: str  # extracted solution.py
    adapter: AdapterRef | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def candidate_id(self) -> str:
        return f"{self.task_id}#{self.index}"


VERDICT_STATUSES = (
    "passed",
    "failed",
    "error",  # import or collection error
    "timeout",
    "crashed",
    "memory",
    "sandbox-error",
)


@dataclass(frozen=True)
class Verdict:
    """The evaluator's judgement of one candidate."""

    task_id: str
    index: int
    status: str
    tests_passed: int
    tests_expected: int
    outcomes: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)
    duration_s: float = 0.0
    excerpt: str = ""

    def __post_init__(self) -> None:
        if self.status not in VERDICT_STATUSES:
            raise ValueError(f"unknown verdict status {self.status!r}; expected one of {VERDICT_STATUSES}")

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def pass_rate(self) -> float:
        """Fraction of the expected tests that passed (0 when none are expected)."""
        if self.tests_expected <= 0:
            return 0.0
        return self.tests_passed / self.tests_expected

    @property
    def candidate_id(self) -> str:
        return f"{self.task_id}#{self.index}"


@dataclass
class ReviewState:
    """A task's spaced-repetition memory.

    ``priority`` orders due reviews (lower first); SM-2 sets it to the easiness factor.
    """

    task_id: str
    ef: float = 2.5
    interval: int = 0
    streak: int = 0
    repeat_fail: int = 0
    due: int = 0
    reviews: int = 0
    graduated: bool = False
    skipped: bool = False
    last_pass_rate: float | None = None
    last_round: int | None = None
    priority: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return not (self.graduated or self.skipped)


@dataclass(frozen=True)
class Schedule:
    """The tasks one round works on."""

    new: tuple[str, ...]
    review: tuple[str, ...]

    @property
    def task_ids(self) -> tuple[str, ...]:
        return self.new + self.review

    def repeated(self) -> list[str]:
        """Task ids named more than once, each with where: ``"t1 (new and review)"``."""
        out = []
        for tid, count in Counter(self.task_ids).items():
            if count > 1:
                where = [f"{n}x {name}" if n > 1 else name
                         for name, n in (("new", self.new.count(tid)), ("review", self.review.count(tid))) if n]
                out.append(f"{tid} ({' and '.join(where)})")
        return out


@dataclass(frozen=True)
class SFTExample:
    task_id: str
    prompt: str
    completion: str
    weight: float = 1.0


@dataclass(frozen=True)
class DPOPair:
    task_id: str
    prompt: str
    chosen: str
    rejected: str


@dataclass
class TrainResult:
    adapter: AdapterRef | None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class LoadReport:
    """Tasks a dataset source produced, and the rows it skipped with the reason."""

    tasks: list[Task]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> a few row ids


# --------------------------------------------------------------------------- stages


@runtime_checkable
class PromptBuilder(Protocol):
    """Owns the text format both ways: the prompt, the code in a completion, and the
    training target (SFT and DPO) in the completion format its prompts expect."""

    def build(self, task: Task) -> Prompt: ...

    def extract(self, output: str, prompt: Prompt | None = None) -> str:
        """Turn raw model output into the source of ``solution.py``; ``prompt`` lets a
        completion format put back the declaration the prompt ended with."""
        ...

    def render_target(self, task: Task, prompt: Prompt, code: str | None = None) -> str:
        """The completion that answers ``prompt`` with ``code`` (default: ``task.solution``),
        as the model should write it: ``extract(render_target(...), prompt)`` gives the code
        back. Chat formats answer with one fenced Python block; a completion format (``base``)
        continues the declaration its prompt ends with."""
        ...

    # Optional (the engine checks with getattr): ``build_reflection(task, attempt) -> Prompt``,
    # the prompt for a review task whose last attempt failed (a :class:`FailedAttempt` from the
    # ledger): the task as ``build`` presents it, that attempt's code and its sanitised failure
    # excerpt, asking for a corrected solution. Only review prompts use it; new tasks and
    # validation always get ``build`` (the built-in ``reflect`` builder has it).


@runtime_checkable
class Generator(Protocol):
    def generate(
        self, prompts: Sequence[Prompt], n: int, adapter: AdapterRef | None, seed: int
    ) -> list[Candidate]:
        """Sample ``n`` candidates per prompt with ``adapter`` applied (None = base)."""
        ...


class StreamingGenerator(Protocol):
    """Optional for generators: candidates part by part (a batch, or those of a batch whose
    decoding has finished while the rest still decode), so evaluation can overlap.

    When the generator has ``generate_iter`` and the evaluator is a
    :class:`StreamingEvaluator`, the engine submits each batch to the evaluator as it
    arrives and collects the verdicts after the last batch; otherwise it calls
    ``generate`` then ``evaluate``. The batches together must hold exactly what
    ``generate`` would return (``n`` candidates per prompt, each with the adapter used).

    A generator may also set the class attribute ``seeds_per_task = True`` when its draws
    depend only on (seed, task id), never on which other prompts share the call (replay
    does): under data parallelism every rank then gets the round's seed unchanged instead
    of a per-rank one, so N ranks produce what one process would.
    """

    def generate_iter(
        self, prompts: Sequence[Prompt], n: int, adapter: AdapterRef | None, seed: int
    ) -> Iterator[list[Candidate]]: ...


@runtime_checkable
class Evaluator(Protocol):
    def evaluate(self, tasks: Mapping[str, Task], candidates: Sequence[Candidate]) -> list[Verdict]:
        """One verdict per candidate, in the order given."""
        ...


@runtime_checkable
class MemoryPolicy(Protocol):
    def initial(self, task: Task) -> ReviewState: ...

    def update(self, state: ReviewState, pass_rate: float, step: int) -> ReviewState:
        """Return the state after a review at round ``step`` with ``pass_rate``."""
        ...

    def weight(self, state: ReviewState) -> float:
        """Training weight of a task for the SFT stage (1.0 = neutral)."""
        ...


class MemoryView(Protocol):
    """Read access to the memory store that schedulers get."""

    def is_seen(self, task_id: str) -> bool: ...

    def due(self, step: int, limit: int) -> list[str]:
        """Active tasks with ``due <= step``, lowest priority first, at most ``limit``."""
        ...

    def count_due(self, step: int) -> int: ...


@runtime_checkable
class Scheduler(Protocol):
    def setup(self, train_ids: Sequence[str], seed: int) -> None:
        """Called once per process with the run's (fixed) training split."""
        ...

    def schedule(self, step: int, batch_size: int, memory: MemoryView) -> Schedule: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@runtime_checkable
class Trainer(Protocol):
    """Trains the round's adapter on SFT examples.

    Optional attribute ``adapter_rank: int | None``: the LoRA rank of the adapters it
    produces (None when it produces none). The engine puts the largest over the configured
    trainers into ``ctx.adapter_rank``, which sizes the vLLM generator's LoRA slots.
    """

    def train_sft(
        self, examples: Sequence[SFTExample], init: AdapterRef | None, out_dir: Path
    ) -> TrainResult: ...


@runtime_checkable
class PreferenceTrainer(Protocol):
    def train_pairs(
        self, pairs: Sequence[DPOPair], init: AdapterRef | None, out_dir: Path
    ) -> TrainResult: ...


@runtime_checkable
class DatasetSource(Protocol):
    def load(self, path: str | None) -> LoadReport: ...


class StreamingEvaluator(Protocol):
    """Optional: evaluators that take candidates as they are generated."""

    def submit(self, task: Task, candidate: Candidate) -> None: ...

    def results(self) -> Iterator[Verdict]: ...

