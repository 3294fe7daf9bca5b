"""Prompt builders ``qwen``, ``deepseek``, ``codellama``, ``base`` and ``chat``: the text
format both ways (the prompt, the code extracted from a completion, and the training target
for SFT and DPO, ``render_target``), with the response extractor they share.

Every builder asks for a complete Python solution in one ```python block (``base``: a
plain completion ending with the declaration to complete) and names what the tests need:
the declarations of ``test_info`` (all of them), the names the test file imports from
``solution`` that ``test_info`` lacks, and, when a test file has neither (KodCode's
runner prepends ``from solution import *``), the names it uses without defining.

``Prompt.text`` holds no BOS token: tokenizers add it themselves, and a literal ``<s>``
in the text would give Llama-family models two BOS tokens. (A tokenizer's own chat
template may render one; generators should not add a second.)
"""
from __future__ import annotations

import ast
import builtins
import logging
import re
import symtable
import typing
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from srscode.core.hookspecs import hookimpl
from srscode.core.types import ComponentSpec, Prompt, Task

log = logging.getLogger(__name__)

DEFAULT_SYSTEM = "You are an expert Python programmer. You write correct, efficient, self-contained code."
# DeepSeek-Coder-Instruct's own default system prompt (from its chat template)
DEEPSEEK_SYSTEM = (
    "You are an AI programming assistant, utilizing the Deepseek Coder model, developed by "
    "Deepseek Company, and you only answer questions related to computer science. For "
    "politically sensitive questions, security and privacy issues, and other non-computer "
    "science questions, you will refuse to answer"
)
INSTRUCTION = (
    "Write a complete, self-contained Python solution in one ```python code block. "
    "It is saved as `solution.py` and checked with pytest."
)

QWEN_STOP = ("<|im_end|>", "<|endoftext|>")
DEEPSEEK_STOP = ("<|EOT|>", "<｜end▁of▁sentence｜>", "\n### Instruction:")
CODELLAMA_STOP = ("</s>", "[INST]")
# A base model writes on past the solution. "\ndef " (the usual HumanEval stop) would cut
# off a second top-level function or a helper, so only stop at what starts *using* the
# code: a main guard, top-level prints/asserts, tests, a new fence or docstring block.
BASE_STOP = (
    "\nif __name__",
    "\nprint(",
    "\nassert ",
    "\ndef test_",
    "\nclass Test",
    "\n# Test",
    "\n# Example",
    "\n```",
    '\n"""',
    "<|endoftext|>",
    "</s>",
    "<|EOT|>",
)
# end-of-turn tokens to stop at when a tokenizer's chat template mentions them
TURN_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|EOT|>", "<|end|>", "<end_of_turn>", "</s>", "<|endoftext|>")


class PromptParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    system: str | None = Field(None, description="Replace the format's default system prompt.")


# --------------------------------------------------------------------------- naming


def solution_imports(test_code: str) -> list[str]:
    """Names the test file imports with ``from solution import ...`` (in order, no ``*``)."""
    try:
        tree = ast.parse(test_code)
    except (SyntaxError, ValueError):
        return []
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "solution" and not node.level:
            names.extend(a.name for a in node.names if a.name != "*" and a.name not in names)
    return names


_KNOWN = set(dir(builtins)) | set(dir(typing)) | {"__name__", "__file__", "__doc__"}


def undefined_names(test_code: str) -> list[str]:
    """Global names the test file uses but never defines or imports (sorted): what it
    expects ``from solution import *`` to provide. Builtins and ``typing`` names are left
    out (a star import of a solution that imports ``List`` also provides it)."""
    try:
        top = symtable.symtable(test_code, "test_solution.py", "exec")
    except (SyntaxError, ValueError):
        return []
    defined = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported() or s.is_namespace()}
    used: set[str] = set()

    def walk(table: symtable.SymbolTable) -> None:
        for sym in table.get_symbols():
            if sym.is_referenced() and (table is top or sym.is_global()):
                used.add(sym.get_name())
        for child in table.get_children():
            walk(child)

    walk(top)
    return sorted(n for n in used - defined if n not in _KNOWN)


def declarations(task: Task) -> list[str]:
    out = []
    for info in task.test_info:
        decl = info.declaration.strip() or f"def {info.name}{info.parameters.strip() or '(...)'}:"
        if decl not in out:
            out.append(decl)
    return out


def requirements(task: Task) -> str:
    """The sentences naming what the solution must define."""
    decls = declarations(task)
    covered = {info.name for info in task.test_info}
    imported = solution_imports(task.test_code)
    extra = [n for n in imported if n not in covered]
    lines = []
    if decls:
        if len(decls) == 1:
            lines.append(f"Your solution must define `{decls[0]}`.")
        else:
            lines.append("Your solution must define these functions:")
            lines.extend(f"- `{d}`" for d in decls)
    if extra:
        names = ", ".join(f"`{n}`" for n in extra)
        verb = "also import" if decls else "import"
        lines.append(f"The tests {verb} these names from `solution`: {names}. Define all of them.")
    if not decls and not imported:
        used = undefined_names(task.test_code)
        if used:
            names = ", ".join(f"`{n}`" for n in used)
            lines.append(f"The tests use these names from your solution: {names}. Define all of them.")
    return "\n".join(lines)


def user_message(task: Task) -> str:
    parts = [task.question.strip(), INSTRUCTION]
    req = requirements(task)
    if req:
        parts.append(req)
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- extraction

_DEF = re.compile(r"^[ \t]*(?:async[ \t]+)?def[ \t]+(?!test)\w+|^[ \t]*class[ \t]+(?!Test)\w+", re.MULTILINE)


def _is_python(lang: str) -> bool:
    return lang == "" or (lang.startswith("py") and lang != "pycon")


def fenced_blocks(text: str) -> list[tuple[str, str, bool]]:
    """``(language, code, closed)`` for each fenced block, in order. A fence opens
    anywhere on a line and closes on a line starting with three backticks; a block
    still open at the end of the text is returned with ``closed=False``."""
    blocks = []
    lang: str | None = None
    buf: list[str] = []
    for line in text.splitlines():
        if lang is None:
            at = line.find("```")
            if at >= 0:
                rest = line[at + 3 :].strip()
                if "```" in rest:  # inline ```x``` on one line: not a block
                    continue
                lang = rest.split()[0].lower() if rest else ""
                buf = []
        elif line.lstrip().startswith("```"):
            blocks.append((lang, "\n".join(buf), True))
            lang = None
        else:
            buf.append(line)
    if lang is not None:
        blocks.append((lang, "\n".join(buf), False))
    return blocks


def truncate_at_stop(text: str, stop: tuple[str, ...]) -> str:
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]


def pick_code(text: str) -> str | None:
    """The solution block of a model answer, or None when it has no Python fence.

    Choice: the first complete Python block that defines a function or class (other
    than tests). Models put the solution first; later blocks are usually usage examples
    or tests (``longest`` would often pick a test block, ``last`` an example). Without
    such a block, the first complete Python block; without any, an unterminated one
    (generation hit its token limit inside the fence)."""
    blocks = [b for b in fenced_blocks(text) if _is_python(b[0])]
    closed = [code for _, code, done in blocks if done]
    for code in closed:
        if _DEF.search(code):
            return code
    if closed:
        return closed[0]
    if blocks:  # only an unterminated one is left
        return blocks[-1][1]
    return None


def _tidy(code: str) -> str:
    code = code.rstrip()
    code = code.lstrip("\n")
    return code + "\n" if code.strip() else ""


def python_block(code: str) -> str:
    """``code`` in one fenced Python block: the answer the chat formats ask for."""
    return f"```python\n{code}\n```"


# --------------------------------------------------------------------------- builders


class TemplateBuilder:
    """A fixed instruction format: ``render(system, user)`` and its stop strings."""

    format = ""
    default_system = DEFAULT_SYSTEM
    stop: tuple[str, ...] = ()

    def __init__(self, params: PromptParams | None = None):
        self.params = params or PromptParams()

    @property
    def system(self) -> str:
        return self.params.system if self.params.system is not None else self.default_system

    def messages(self, task: Task) -> tuple[Mapping[str, str], ...]:
        return ({"role": "system", "content": self.system}, {"role": "user", "content": user_message(task)})

    def render(self, system: str, user: str) -> str:
        raise NotImplementedError

    def build(self, task: Task) -> Prompt:
        msgs = self.messages(task)
        text = self.render(msgs[0]["content"], msgs[1]["content"])
        return Prompt(task_id=task.task_id, text=text, messages=msgs, stop=self.stop, format=self.format)

    def extract(self, output: str, prompt: Prompt | None = None) -> str:
        """Model output -> ``solution.py``: cut at the first stop string, then take the
        chosen ```python block (see :func:`pick_code`), else the raw text."""
        stop = prompt.stop if prompt is not None and prompt.stop else self.stop
        text = truncate_at_stop(output, stop)
        code = pick_code(text)
        return _tidy(text if code is None else code)

    def render_target(self, task: Task, prompt: Prompt, code: str | None = None) -> str:
        """``code`` (default: the reference solution) as the one ```python block the
        instruction asks for."""
        return python_block((task.solution if code is None else code).strip())


class QwenBuilder(TemplateBuilder):
    format = "qwen"
    stop = QWEN_STOP

    def render(self, system: str, user: str) -> str:
        return (
            f"<|im_start|>system\n{system}<|im_end|>\n"
            f"<|im_start|>user\n{user}<|im_end|>\n"
            "<|im_start|>assistant\n"
        )


class DeepSeekBuilder(TemplateBuilder):
    format = "deepseek"
    default_system = DEEPSEEK_SYSTEM
    stop = DEEPSEEK_STOP

    def render(self, system: str, user: str) -> str:
        return f"{system}\n### Instruction:\n{user}\n### Response:\n"


class CodeLlamaBuilder(TemplateBuilder):
    format = "codellama"
    stop = CODELLAMA_STOP

    def render(self, system: str, user: str) -> str:
        return f"[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST]"


class BaseBuilder(TemplateBuilder):
    """A plain completion prompt for base models: the task as a module docstring, then
    the first declaration, whose body the model writes. The extractor puts that
    declaration back in front of the completion."""

    format = "base"
    stop = BASE_STOP

    def build(self, task: Task) -> Prompt:
        question = task.question.strip().replace('"""', "'''")  # keep the docstring closed
        req = requirements(task).replace('"""', "'''")
        doc = question + ("\n\n" + req if req else "")
        decls = declarations(task)
        prefix = decls[0] + "\n" if decls else ""
        text = f'"""\n{doc}\n"""\n\n{prefix}'
        return Prompt(task_id=task.task_id, text=text, messages=self.messages(task), stop=self.stop, format=self.format)

    @staticmethod
    def prefix(prompt: Prompt) -> str:
        """The declaration the prompt ends with ('' when it ends with the docstring)."""
        return prompt.text.rpartition('"""\n')[2].lstrip("\n")

    def extract(self, output: str, prompt: Prompt | None = None) -> str:
        stop = prompt.stop if prompt is not None and prompt.stop else self.stop
        text = truncate_at_stop(output, stop)
        code = pick_code(text)
        if code is not None:  # the model wrote a whole fenced program
            return _tidy(code)
        if prompt is None:
            log.warning("base format: extract() without the prompt cannot restore the declaration")
            return _tidy(text)
        prefix = self.prefix(prompt)
        name = re.match(r"\s*(?:async\s+)?def\s+(\w+)", prefix)
        if name and re.search(rf"^(?:async\s+)?def\s+{re.escape(name.group(1))}\b", text, re.MULTILINE):
            return _tidy(text)  # the model restarted with the declaration itself
        return _tidy(prefix + text)

    def render_target(self, task: Task, prompt: Prompt, code: str | None = None) -> str:
        """The continuation of ``prompt`` that :meth:`extract` turns back into ``code``
        (default: the reference solution): what follows the declaration the prompt ends with
        when ``code`` starts with it, else the whole of ``code`` (imports or helpers come
        first), which the extractor keeps as a completion that restates the declaration."""
        code = _tidy(task.solution if code is None else code)
        prefix = self.prefix(prompt)
        return code[len(prefix) :] if prefix and code.startswith(prefix) else code


class ChatBuilder(TemplateBuilder):
    """The model's own chat template (``tokenizer.apply_chat_template``).

    The tokenizer comes from ``tokenizer_provider()`` at build time (the factory reads
    ``ctx.models.tokenizer``, where the model stages put it), or from ``self.tokenizer``
    when a generator sets it. Without one (a dry run with no model), or when it has no
    chat template, prompts fall back to the ``qwen`` ChatML format, logged once, and say
    so in ``Prompt.format``.
    """

    format = "chat"

    def __init__(self, params: PromptParams | None = None, tokenizer_provider: Callable[[], Any] | None = None):
        super().__init__(params)
        self.tokenizer: Any = None
        self.tokenizer_provider = tokenizer_provider or (lambda: None)
        self._fallback = QwenBuilder(params)
        self._warned = False

    def _tokenizer(self) -> Any:
        tok = self.tokenizer if self.tokenizer is not None else self.tokenizer_provider()
        if tok is not None and getattr(tok, "chat_template", None):
            return tok
        if not self._warned:
            self._warned = True
            why = "no tokenizer is loaded" if tok is None else "the tokenizer has no chat template"
            log.info("chat prompts: %s; using the qwen ChatML format instead (set model.family for another)", why)
        return None

    @staticmethod
    def stops_for(tok: Any) -> tuple[str, ...]:
        template = tok.chat_template
        template = template if isinstance(template, str) else " ".join(map(str, dict(template).values()))
        found = [getattr(tok, "eos_token", None)] + [t for t in TURN_END_TOKENS if t in template]
        return tuple(dict.fromkeys(t for t in found if isinstance(t, str) and t))

    def build(self, task: Task) -> Prompt:
        tok = self._tokenizer()
        if tok is None:
            return self._fallback.build(task)
        msgs = self.messages(task)
        try:
            text = tok.apply_chat_template(list(map(dict, msgs)), tokenize=False, add_generation_prompt=True)
        except Exception:  # some templates (e.g. Gemma's) reject a system turn
            merged = ({"role": "user", "content": f"{msgs[0]['content']}\n\n{msgs[1]['content']}"},)
            text = tok.apply_chat_template(list(map(dict, merged)), tokenize=False, add_generation_prompt=True)
            msgs = merged
        return Prompt(task_id=task.task_id, text=text, messages=msgs, stop=self.stops_for(tok), format=self.format)

    def extract(self, output: str, prompt: Prompt | None = None) -> str:
        if prompt is None:
            tok = self.tokenizer if self.tokenizer is not None else self.tokenizer_provider()
            stop = self.stops_for(tok) if tok is not None and getattr(tok, "chat_template", None) else QWEN_STOP
            prompt = Prompt(task_id="", text="", stop=stop)
        return super().extract(output, prompt)


BUILDERS: dict[str, type[TemplateBuilder]] = {
    "qwen": QwenBuilder,
    "deepseek": DeepSeekBuilder,
    "codellama": CodeLlamaBuilder,
    "base": BaseBuilder,
}


@hookimpl
def srscode_prompt_builders():
    yield ComponentSpec("qwen", lambda p, ctx: QwenBuilder(p), PromptParams, "Qwen ChatML instruct format")
    yield ComponentSpec("deepseek", lambda p, ctx: DeepSeekBuilder(p), PromptParams, "DeepSeek-Coder instruction format")
    yield ComponentSpec("codellama", lambda p, ctx: CodeLlamaBuilder(p), PromptParams, "CodeLlama [INST] format")
    yield ComponentSpec("base", lambda p, ctx: BaseBuilder(p), PromptParams, "plain completion for base models")
    yield ComponentSpec(
        "chat",
        lambda p, ctx: ChatBuilder(p, tokenizer_provider=lambda: ctx.models.tokenizer),
        PromptParams,
        "the tokenizer's own chat template (qwen ChatML without one)",
    )
