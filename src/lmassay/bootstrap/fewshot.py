"""The few-shot format bootstrap prompts a raw LM with, and that the world's Q&A documents use.

One example is two lines, ``"Question: <instruction>\\nAnswer: <response>"``; examples are joined
by one newline. A raw LM trained on text that has such documents (web text has many; the offline
world has them with ``qa_share``) continues ``"...\\nQuestion:"`` with a new question and
``"...\\nQuestion: Q\\nAnswer:"`` with an answer, each ending at the next newline.

Line breaks inside a core example would end it early, so :func:`one_line` folds them into spaces.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ANSWER",
    "QUESTION",
    "format_example",
    "instruction_prompt",
    "one_line",
    "response_prompt",
]

QUESTION = "Question:"
ANSWER = "Answer:"


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (line breaks included) folded into one space."""
    return " ".join(text.split())


def format_example(instruction: str, response: str) -> str:
    """``"Question: <instruction>\\nAnswer: <response>"``, each on one line."""
    return f"{QUESTION} {one_line(instruction)}\n{ANSWER} {one_line(response)}"


def _shots(examples: Sequence[tuple[str, str]]) -> str:
    return "".join(format_example(i, r) + "\n" for i, r in examples)


def instruction_prompt(examples: Sequence[tuple[str, str]]) -> str:
    """The examples, then ``"Question:"``: the LM continues with a new instruction."""
    return _shots(examples) + QUESTION


def response_prompt(examples: Sequence[tuple[str, str]], instruction: str) -> str:
    """The examples, then ``"Question: <instruction>\\nAnswer:"``: the LM continues with a
    response."""
    return _shots(examples) + f"{QUESTION} {one_line(instruction)}\n{ANSWER}"
