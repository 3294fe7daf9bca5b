"""The ``reflect`` prompt builder (issue 18): review prompts that show the last failing attempt.

``stages.prompt: {name: reflect, params: {inner: qwen}}`` wraps any registered builder (the
``inner``, built through the registry, so third-party builders work too). ``build``,
``extract`` and ``render_target`` are the inner builder's own, so new-task, validation and
training-target text is byte-identical to the inner's. ``build_reflection(task, attempt)`` is
the prompt the engine uses for a review task that has a failing attempt in the ledger
(:meth:`Ledger.failed_attempts <srscode.core.ledger.Ledger.failed_attempts>`): the inner
builder's prompt for the task with, after the question, the attempt's code and its failure
excerpt and a request for a corrected solution. It goes through the inner's ``build`` on a
copy of the task whose question carries that text, so every family (qwen, deepseek, codellama,
the tokenizer's chat template, base's docstring) presents it in its own format.

Everything the candidate wrote that reaches the prompt is made safe first: the excerpt with
:func:`~srscode.core.failure_excerpt.sanitize_excerpt` (no escapes, host paths, environment
values or hidden test lines; bounded), the code bounded and stripped of control characters,
and both with chat-control markers (``<|im_start|>``, ``[INST]``, ``### Instruction:``, ...)
defused, so a candidate cannot open a turn of its own in the prompt.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from srscode.core.errors import ConfigError
from srscode.core.failure_excerpt import MIN_MAX_CHARS, sanitize_code, sanitize_excerpt
from srscode.core.hookspecs import hookimpl
from srscode.core.types import ComponentSpec, FailedAttempt, Prompt, Task

ASK = "Find the mistake and write a corrected, complete solution."

# chat-format control strings a candidate could print to fake a turn: each is broken up
_MARKERS = re.compile(r"<\||\|>|<｜|｜>|\[/?INST\]|<</?SYS>>|</?s>|### (?:Instruction|Response):")


def defuse(text: str) -> str:
    """``text`` with chat-control markers broken up (``<|im_end|>`` -> ``< |im_end| >``)."""
    def repl(m: re.Match[str]) -> str:
        s = m.group(0)
        if s.startswith("###"):
            return "##" + s[3:].replace(":", " :")
        return s[0] + " " + s[1:-1] + " " + s[-1] if len(s) > 2 else s[0] + " " + s[1]

    return _MARKERS.sub(repl, text)


class ReflectParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    inner: str = Field("qwen", description="The prompt builder whose format reflect uses and whose build/extract/"
                       "render_target it keeps (any registered builder name but reflect).")
    inner_params: dict[str, Any] = Field(default_factory=dict, description="The inner builder's params "
                                         "(e.g. {system: ...} for the built-in ones).")
    max_excerpt_chars: int = Field(1200, ge=MIN_MAX_CHARS, description="Most characters of the failure "
                                   "excerpt a reflection prompt shows (the first failing test's error is kept).")
    max_code_chars: int = Field(4000, ge=MIN_MAX_CHARS, description="Most characters of the failing attempt's "
                                "code a reflection prompt shows (the head is kept).")


def _fence(text: str) -> str:
    """A backtick fence longer than any run of backticks in ``text``."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


class ReflectBuilder:
    """See the module doc. Attributes the wrapper lacks (``tokenizer``, ``format``, ``stop``,
    ...) are the inner builder's."""

    def __init__(self, inner: Any, params: ReflectParams | None = None):
        self.__dict__["inner"] = inner
        self.__dict__["params"] = params or ReflectParams()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["inner"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dict__:
            self.__dict__[name] = value
        else:  # e.g. a generator setting ``tokenizer`` on the run's builder: the inner uses it
            setattr(self.inner, name, value)

    def build(self, task: Task) -> Prompt:
        return self.inner.build(task)

    def extract(self, output: str, prompt: Prompt | None = None) -> str:
        return self.inner.extract(output, prompt)

    def render_target(self, task: Task, prompt: Prompt, code: str | None = None) -> str:
        return self.inner.render_target(task, prompt, code)

    def reflection_text(self, task: Task, attempt: FailedAttempt) -> str:
        """What the reflection prompt adds after the task's question."""
        code = defuse(sanitize_code(attempt.code, self.params.max_code_chars)).strip("\n")
        excerpt = defuse(sanitize_excerpt(attempt.excerpt, max_chars=self.params.max_excerpt_chars,
                                          test_code=task.test_code))
        excerpt = excerpt or f"(the tests reported no failure text; status: {attempt.status})"
        code_fence, out_fence = _fence(code), _fence(excerpt)
        return (
            f"Your previous attempt failed the tests ({attempt.status}; {attempt.pass_rate:.0%} of the tests "
            f"passed):\n\n{code_fence}python\n{code}\n{code_fence}\n\n"
            f"The first failure:\n\n{out_fence}\n{excerpt}\n{out_fence}\n\n{ASK}"
        )

    def build_reflection(self, task: Task, attempt: FailedAttempt) -> Prompt:
        if attempt.task_id != task.task_id:
            raise ValueError(f"reflect: failed attempt of task {attempt.task_id!r} given for task {task.task_id!r}")
        question = task.question.rstrip() + "\n\n" + self.reflection_text(task, attempt)
        return self.inner.build(dataclasses.replace(task, question=question))


def _factory(params: ReflectParams, ctx: Any) -> ReflectBuilder:
    if params.inner == "reflect":
        raise ConfigError("stages.prompt.params.inner: reflect cannot wrap itself; name a format such as qwen, "
                          "deepseek, codellama, chat or base")
    registry = getattr(ctx, "registry", None)
    if registry is None:
        raise ConfigError("stages.prompt: reflect builds its inner builder through the registry, "
                          "but the stage context has none")
    inner = registry.build("prompt", params.inner, params.inner_params, ctx, "stages.prompt.params.inner",
                           "stages.prompt.params.inner_params")
    missing = [m for m in ("build", "extract", "render_target") if not callable(getattr(inner, m, None))]
    if missing:
        raise ConfigError(f"stages.prompt.params.inner: prompt builder {params.inner!r} has no {', '.join(missing)}()")
    return ReflectBuilder(inner, params)


@hookimpl
def srscode_prompt_builders():
    yield ComponentSpec("reflect", _factory, ReflectParams,
                        "review prompts show the last failing attempt and its test failure (wraps params.inner)")
