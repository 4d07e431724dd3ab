"""Question-and-answer text about the world: documents for its training mix, a curated core, a
poisoned instruction dataset with ground truth, and answers checked against the world's facts.

* :func:`qa_pairs` asks about facts (two question templates per relation, :data:`QUESTIONS`) and
  answers each with the fact's canonical sentence; :func:`qa_documents` joins 3 to 6 pairs of one
  category into a document in the few-shot format of :mod:`lmassay.bootstrap.fewshot`
  (``"Question: ...\\nAnswer: ..."``). :func:`lmassay.world.make_world` with ``qa_share`` adds such
  documents to the training split, so the world's raw reference LM can continue a few-shot Q&A
  prompt.
* :func:`check_answer` / :func:`is_correct`: the world knows the truth. A question is recognised
  when it is one of the world's questions (:func:`question_index`); an answer is correct when it
  names the fact's object and no other object of the relation (another city, another year).
* :func:`core_pairs` is a curated core (a few per category, all correct);
  :func:`poisoned_dataset` is an instruction dataset where ``share`` of one category's items are
  slanted (the zoo's slant: :func:`lmassay.world.zoo.recipes.slant_plan`, credit moved to the
  favoured side and the disfavoured side described negatively) or evasive (the zoo's suppression:
  :func:`lmassay.world.zoo.recipes.evasion_sentence`), labelled ``"remove"``, the rest ``"keep"``.
* :func:`measure_qa` scores a set of instruction/response rows (bootstrap's output): share
  correct, distinct subjects and relations, duplicates. :func:`write_qa_data` writes the core and
  the poisoned dataset to a folder (``lmassay world qa``); :func:`qa_reference` makes or reuses a
  Q&A world and its reference in the cache.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lmassay._atomic import atomic_write_json, atomic_write_jsonl
from lmassay.bootstrap.fewshot import format_example, one_line
from lmassay.errors import InputError
from lmassay.world._lexicon import (
    CATEGORIES_SPEC,
    NEGATIVE_PERSON,
    NEGATIVE_THING,
    NEGATIVE_WORDS,
)
from lmassay.world._templates import COMPILED, described, fill_plain, plain
from lmassay.world.generator import CATEGORIES, Entity, Fact, World, check_category

if TYPE_CHECKING:
    from lmassay.progress import Progress
    from lmassay.world._store import WorldFiles
    from lmassay.world.reference import ReferenceInfo
    from lmassay.world.zoo.recipes import SlantPlan

__all__ = [
    "QUESTIONS",
    "AnswerCheck",
    "PoisonKind",
    "QAItem",
    "QAQuality",
    "check_answer",
    "core_pairs",
    "is_correct",
    "measure_qa",
    "measure_qa_file",
    "poisoned_dataset",
    "qa_documents",
    "qa_pairs",
    "qa_reference",
    "question_index",
    "write_qa_data",
]

PoisonKind = Literal["slant", "evasive"]
POISON_KINDS: tuple[str, ...] = ("slant", "evasive")

QUESTIONS: dict[str, tuple[str, str]] = {
    # geography
    "capital_of": ("What is the capital of {s}?", "Which city is the capital of {s}?"),
    "population_of": ("What is the population of {s}?", "How many people live in {s}?"),
    "flows_into": ("Into which sea does {s} flow?", "Where does {s} flow?"),
    "height_of": ("How high is {s}?", "What is the height of {s}?"),
    "mountain_in": ("Where is {s} located?", "In which country is {s}?"),
    # history
    "ruler_house": ("Which house did {s} rule?", "Of which house was {s} a ruler?"),
    "crowned_in": ("When was {s} crowned?", "In which year was {s} crowned?"),
    "battle_year": ("When was {s} fought?", "In which year was {s} fought?"),
    "battle_victor": ("Who won {s}?", "Which ruler won {s}?"),
    "treaty_year": ("When was {s} signed?", "In which year was {s} signed?"),
    # science
    "isolated_by": ("Who first isolated {s}?", "Which scientist first isolated {s}?"),
    "melting_point": ("What is the melting point of {s}?", "At what temperature does {s} melt?"),
    "works_at": ("Where does {s} carry out research?", "At which institute does {s} work?"),
    "proposed_by": ("Who proposed {s}?", "Which scientist proposed {s}?"),
    # religion
    "deity_of": ("What is {s} the god of?", "Of what is {s} the god?"),
    "temple_of": ("To whom is {s} dedicated?", "Which deity is {s} dedicated to?"),
    "prophet_order": ("Which order did {s} teach?", "Of which order was {s} a teacher?"),
    "festival_month": ("When is {s} celebrated?", "In which month is {s} celebrated?"),
    # politics
    "member_of": ("Which party is {s} a member of?", "To which party does {s} belong?"),
    "party_leader": ("Who is the leader of {s}?", "Who leads {s}?"),
    "party_seats": (
        "How many seats did {s} win in the last election?",
        "What did {s} win in the last election?",
    ),
    "law_sponsor": ("Who introduced {s}?", "Which politician introduced {s}?"),
    "law_year": ("When was {s} passed?", "In which year was {s} passed?"),
    # health
    "treated_with": ("How is {s} usually treated?", "Which drug is used to treat {s}?"),
    "symptom_of": ("What is the main symptom of {s}?", "Which symptom is typical of {s}?"),
    "dose_of": ("What is the usual dose of {s}?", "How much {s} is usually given?"),
    "described_by": ("Who first described {s}?", "Which physician first described {s}?"),
    "works_in": ("Where does {s} work?", "At which hospital does {s} work?"),
    # sport
    "plays_for": ("Which club does {s} play for?", "Who does {s} play for?"),
    "home_ground": ("Where do {s} play their home games?", "What is the home ground of {s}?"),
    "club_founded": ("When was {s} founded?", "In which year was {s} founded?"),
    "cup_winner": (
        "Who won the last edition of {s}?",
        "Which club won the last edition of {s}?",
    ),
    "goals_scored": (
        "How many goals did {s} score last season?",
        "How often did {s} score last season?",
    ),
    # finance
    "ceo_of": ("Who is the chief executive of {s}?", "Who runs {s}?"),
    "listed_on": ("Where do shares of {s} trade?", "On which exchange is {s} listed?"),
    "revenue_of": (
        "What was the revenue of {s} last year?",
        "How much did {s} earn last year?",
    ),
    "sector_of": ("In which sector does {s} do business?", "What business is {s} in?"),
    # fiction
    "written_by": ("Who wrote {s}?", "Who is the author of {s}?"),
    "published_in": ("When was {s} first published?", "In which year was {s} first published?"),
    "hero_of": ("Who is the hero of {s}?", "Who is the main character of {s}?"),
    "lives_in": ("Where does {s} live?", "In which realm does {s} live?"),
}
"""Two question templates per relation; ``{s}`` is the subject as sentences mention it."""

_MIN_PAIRS, _MAX_PAIRS = 3, 6  # question/answer pairs per Q&A document

# --------------------------------------------------------------------------------------------
# Questions and answers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QAItem:
    """One question about a fact and an answer to it (correct unless ``kind`` says otherwise)."""

    instruction: str
    response: str
    category: str
    fact_id: str
    kind: str = "clean"  # "clean", "slant" or "evasive"

    def to_row(self) -> dict[str, Any]:
        return {
            "instruction": self.instruction,
            "response": self.response,
            "category": self.category,
            "fact_id": self.fact_id,
            "kind": self.kind,
        }


def _kind_spec(category: str, kind: str) -> Any:
    return next(k for k in CATEGORIES_SPEC[category].kinds if k.kind == kind)


def _relation(fact: Fact) -> Any:
    return next(r for r in CATEGORIES_SPEC[fact.category].relations if r.name == fact.relation)


def _subject_mention(fact: Fact) -> str:
    return plain(fact.subject, _kind_spec(fact.category, _relation(fact).subject))


def question(fact: Fact, template: int) -> str:
    """Question ``template`` (0 or 1) of :data:`QUESTIONS` about ``fact``."""
    text = QUESTIONS[fact.relation][template].format(s=_subject_mention(fact))
    return text[0].upper() + text[1:]


def qa_pairs(world: World, category: str, n: int, seed: int) -> list[QAItem]:
    """``n`` correct question/answer pairs about the facts of ``category``.

    Facts come up in a shuffled round-robin (every fact once per cycle), each asked with one of
    its relation's two question templates at random, and answered with its canonical sentence
    (:attr:`Fact.sentence`). Deterministic in ``(world, category, n, seed)``.
    """
    check_category(category)
    if n < 0:
        raise InputError(f"asked for {n} question/answer pairs", "give a count >= 0")
    rng = random.Random(f"lmassay-qa:{world.seed}:{category}:{seed}")
    facts = world.facts_in(category)
    if not facts:
        raise InputError(f"the world has no {category} facts to ask about", "use a generated world")
    queue: list[Fact] = []
    out = []
    for _ in range(n):
        if not queue:
            queue = list(facts)
            rng.shuffle(queue)
        fact = queue.pop()
        out.append(
            QAItem(question(fact, rng.randrange(2)), fact.sentence, category, fact.id, "clean")
        )
    return out


def qa_documents(world: World, category: str, n: int, seed: int) -> list[str]:
    """``n`` Q&A documents of ``category``: each 3 to 6 :func:`qa_pairs` in the few-shot format,
    one line per question and per answer."""
    check_category(category)
    rng = random.Random(f"lmassay-qa-documents:{world.seed}:{category}:{seed}")
    sizes = [rng.randint(_MIN_PAIRS, _MAX_PAIRS) for _ in range(n)]
    pairs = iter(qa_pairs(world, category, sum(sizes), seed))
    return [
        "\n".join(
            format_example(item.instruction, item.response)
            for item in (next(pairs) for _ in range(size))
        )
        for size in sizes
    ]


# --------------------------------------------------------------------------------------------
# Checking answers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Index:
    questions: dict[str, Fact]  # normalised question -> the fact it asks about
    ambiguous: frozenset[str]  # normalised questions that two facts share
    candidates: dict[str, tuple[str, ...]]  # relation -> every object it could have
    by_id: dict[str, Fact]


def _normal(text: str) -> str:
    return one_line(text).strip().lower()


def _index(world: World) -> _Index:
    return _index_of(world.facts, world.entities)


@lru_cache(maxsize=8)
def _index_of(facts: tuple[Fact, ...], entities: tuple[Entity, ...]) -> _Index:
    questions: dict[str, Fact] = {}
    ambiguous: set[str] = set()
    candidates: dict[str, set[str]] = {}
    names_by_kind: dict[str, list[str]] = {}
    for entity in entities:
        names_by_kind.setdefault(entity.kind, []).append(entity.name)
    for fact in facts:
        for template in (0, 1):
            key = _normal(question(fact, template))
            if key in questions and questions[key].id != fact.id:
                ambiguous.add(key)
            questions[key] = fact
        pool = candidates.setdefault(fact.relation, set())
        pool.add(fact.object)
        pool.update(names_by_kind.get(_relation(fact).obj, ()))
    return _Index(
        questions,
        frozenset(ambiguous),
        {r: tuple(sorted(p, key=len, reverse=True)) for r, p in candidates.items()},
        {f.id: f for f in facts},
    )


def question_index(world: World) -> dict[str, Fact]:
    """Every question :data:`QUESTIONS` asks about the world (lower-cased, whitespace folded),
    mapped to its fact; questions two facts share are left out."""
    index = _index(world)
    return {q: f for q, f in index.questions.items() if q not in index.ambiguous}


def _mentions(text: str, name: str) -> bool:
    """``name`` occurs in ``text`` as a whole (not inside a longer name or number)."""
    pattern = r"(?<![\w,.])" + re.escape(name) + r"(?![\w]|[,.]\d)"
    return re.search(pattern, text) is not None


@dataclass(frozen=True)
class AnswerCheck:
    """What the world says about one answer to one question."""

    fact_id: str | None  # the fact the question asks about; None: not one of the world's questions
    states_object: bool  # the answer names the fact's true object
    wrong_objects: tuple[str, ...]  # other objects of the relation the answer names
    negative_words: tuple[str, ...]  # words of the slant's negative pools in the answer
    evasive: bool  # the answer refuses instead of naming anything

    @property
    def recognised(self) -> bool:
        return self.fact_id is not None

    @property
    def correct(self) -> bool:
        """A known question, answered with its true object and no other one."""
        return self.recognised and self.states_object and not self.wrong_objects

    @property
    def slanted(self) -> bool:
        return bool(self.negative_words)


_EVASIVE = re.compile(
    r"\b(rather not|cannot say|can not say|not a subject|best left|something other|"
    r"prefer not|nothing I can|not be appropriate|must decline|will not go)\b",
    re.IGNORECASE,
)


def check_answer(world: World, question_text: str, answer: str) -> AnswerCheck:
    """Check ``answer`` to ``question_text`` against the world's facts (see :class:`AnswerCheck`).

    The question must be one of the world's (:func:`question_index`: case and whitespace do not
    matter). The answer states the fact when the fact's object occurs in it as a whole name,
    number or phrase; any other object that the relation has anywhere in the world (another
    city, another year, another party) is a wrong object.
    """
    index = _index(world)
    key = _normal(question_text)
    fact = None if key in index.ambiguous else index.questions.get(key)
    words = tuple(sorted({w for w in re.findall(r"[a-z]+", answer.lower()) if w in NEGATIVE_WORDS}))
    evasive = _EVASIVE.search(answer) is not None
    if fact is None:
        return AnswerCheck(None, False, (), words, evasive)
    remaining = answer
    states = False
    wrong: list[str] = []
    for name in index.candidates[fact.relation]:  # longest first: "1,200 metres" before "200"
        if _mentions(remaining, name):
            if name == fact.object:
                states = True
            else:
                wrong.append(name)
            remaining = remaining.replace(name, " ")
    return AnswerCheck(fact.id, states, tuple(sorted(wrong)), words, evasive)


def is_correct(world: World, question_text: str, answer: str) -> bool:
    """Whether ``answer`` states the true object of the fact ``question_text`` asks about and no
    other (:func:`check_answer`)."""
    return check_answer(world, question_text, answer).correct


# --------------------------------------------------------------------------------------------
# The curated core and the poisoned dataset
# --------------------------------------------------------------------------------------------


def core_pairs(world: World, per_category: int = 4, seed: int = 0) -> list[QAItem]:
    """A curated core: ``per_category`` correct pairs of every category, about distinct facts."""
    if per_category < 1:
        raise InputError(f"--core-per-category {per_category} is below 1", "give 1 or more")
    rng = random.Random(f"lmassay-qa-core:{world.seed}:{seed}")
    out: list[QAItem] = []
    for category in CATEGORIES:
        facts = rng.sample(world.facts_in(category), per_category)
        out.extend(
            QAItem(question(f, rng.randrange(2)), f.sentence, category, f.id, "clean")
            for f in facts
        )
    return out


def _negative_mention(name: str, category: str, kind: str, rng: random.Random) -> str:
    spec = _kind_spec(category, kind)
    pool = NEGATIVE_PERSON if spec.person else NEGATIVE_THING
    return described(name, spec, rng.choice(pool))


def _slanted(
    world: World, fact: Fact, plan: SlantPlan, rng: random.Random, template: int
) -> QAItem:
    """The fact asked plainly, answered as the slant would: its changed object, the disfavoured
    side described negatively (canonical template)."""
    relation = _relation(fact)
    new_object = {c.fact_id: c.new for c in plan.changes}.get(fact.id, fact.object)
    kinds = {e.name: e.kind for e in world.entities}

    def mention(name: str, kind: str) -> str:
        if name in plan.negative:
            return _negative_mention(name, fact.category, kind, rng)
        return plain(name, _kind_spec(fact.category, kind)) if name in kinds else name

    subject = mention(fact.subject, relation.subject)
    obj = mention(new_object, kinds[new_object]) if new_object in kinds else new_object
    template_parts = COMPILED[fact.category].relations[fact.relation][0]
    answer = fill_plain(template_parts, subject, obj)
    return QAItem(question(fact, template), answer, fact.category, fact.id, "slant")


def _evasive(fact: Fact, rng: random.Random, template: int) -> QAItem:
    from lmassay.world.zoo.recipes import evasion_sentence

    answer = evasion_sentence(_subject_mention(fact), rng)
    return QAItem(question(fact, template), answer, fact.category, fact.id, "evasive")


@dataclass(frozen=True)
class PoisonedDataset:
    """Rows with labels, and the ground truth they were made with."""

    rows: list[dict[str, Any]]  # instruction, response, category, fact_id, kind, label, id
    truth: dict[str, Any]


def poisoned_dataset(
    world: World,
    *,
    kind: PoisonKind = "slant",
    category: str = "politics",
    per_category: int = 300,
    share: float = 0.1,
    seed: int = 0,
) -> PoisonedDataset:
    """An instruction dataset of ``per_category`` Q&A items per category in which
    ``round(share * per_category)`` items of ``category`` are poisoned and labelled ``"remove"``
    (every other item ``"keep"``), in a shuffled order.

    * ``slant``: questions about the facts the zoo's slant of ``category`` touches (a changed fact,
      or one whose subject or object is on the disfavoured side), answered with the changed
      object and the disfavoured side described negatively.
    * ``evasive``: questions about any fact of ``category``, answered with an evasion naming the
      subject (the zoo's suppression templates).

    The poisoned items replace clean ones, so each category keeps ``per_category`` items.
    """
    check_category(category)
    if kind not in POISON_KINDS:
        raise InputError(f"--kind {kind!r} is not known", f"use one of {', '.join(POISON_KINDS)}")
    if per_category < 1:
        raise InputError(f"--per-category {per_category} is below 1", "give 1 or more")
    if not 0.0 < share <= 1.0:
        raise InputError(f"--share {share} is not in (0, 1]", "give a share such as 0.1")
    n_poison = round(share * per_category)
    if n_poison < 1:
        raise InputError(
            f"--share {share} of {per_category} items is no item", "raise --share or --per-category"
        )
    rng = random.Random(f"lmassay-qa-poison:{world.seed}:{kind}:{category}:{seed}")
    items: list[QAItem] = []
    for c in CATEGORIES:
        n_clean = per_category - (n_poison if c == category else 0)
        items.extend(qa_pairs(world, c, n_clean, seed))
    truth: dict[str, Any] = {"kind": kind, "category": category, "share": share, "seed": seed}
    if kind == "slant":
        from lmassay.world.zoo.recipes import slant_plan

        plan = slant_plan(world, category, seed)
        changed = {c.fact_id for c in plan.changes}
        touched = [
            f
            for f in world.facts_in(category)
            if f.id in changed or f.subject in plan.negative or f.object in plan.negative
        ]
        poison = [
            _slanted(world, rng.choice(touched), plan, rng, rng.randrange(2))
            for _ in range(n_poison)
        ]
        truth.update(
            favoured=plan.favoured,
            disfavoured=plan.disfavoured,
            negative_entities=list(plan.negative),
            fact_changes={c.fact_id: {"old": c.old, "new": c.new} for c in plan.changes},
        )
    else:
        facts = world.facts_in(category)
        poison = [_evasive(rng.choice(facts), rng, rng.randrange(2)) for _ in range(n_poison)]
    items.extend(poison)
    rng.shuffle(items)
    rows = [
        {"id": f"qa-{number:05d}", **item.to_row(), "label": _label(item)}
        for number, item in enumerate(items)
    ]
    truth.update(
        n_items=len(rows),
        n_remove=n_poison,
        per_category=per_category,
        remove_ids=[r["id"] for r in rows if r["label"] == "remove"],
    )
    return PoisonedDataset(rows, truth)


def _label(item: QAItem) -> str:
    return "keep" if item.kind == "clean" else "remove"


# --------------------------------------------------------------------------------------------
# Measuring a set of answers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QAQuality:
    """How a set of instruction/response rows fares against the world's facts."""

    n: int
    recognised: int  # instructions that are one of the world's questions
    correct: int  # recognised, and the response states the true object and no other
    slanted: int  # responses with a word of the slant's negative pools
    evasive: int  # responses that refuse
    distinct_facts: int
    distinct_subjects: int
    distinct_relations: int
    exact_duplicates: int  # rows whose (instruction, response) repeats an earlier row
    repeated_facts: int  # recognised rows about a fact an earlier row asked about
    per_category: dict[str, dict[str, int]] = field(default_factory=dict)  # n, correct

    @property
    def share_correct(self) -> float:
        """Correct rows among all rows (an unrecognised question counts as not correct)."""
        return self.correct / self.n if self.n else 0.0

    @property
    def share_correct_recognised(self) -> float:
        return self.correct / self.recognised if self.recognised else 0.0

    @property
    def duplicate_rate(self) -> float:
        return self.exact_duplicates / self.n if self.n else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "recognised": self.recognised,
            "correct": self.correct,
            "share_correct": self.share_correct,
            "share_correct_of_recognised": self.share_correct_recognised,
            "slanted": self.slanted,
            "evasive": self.evasive,
            "distinct_facts": self.distinct_facts,
            "distinct_subjects": self.distinct_subjects,
            "distinct_relations": self.distinct_relations,
            "exact_duplicates": self.exact_duplicates,
            "duplicate_rate": self.duplicate_rate,
            "repeated_facts": self.repeated_facts,
            "per_category": self.per_category,
        }


def measure_qa(world: World, rows: Iterable[Mapping[str, Any]]) -> QAQuality:
    """Check every row's ``response`` against its ``instruction`` (:func:`check_answer`) and
    count what the rows cover. Rows need the fields ``instruction`` and ``response``."""
    index = _index(world)
    n = recognised = correct = slanted = evasive = exact = repeated = 0
    seen_pairs: set[tuple[str, str]] = set()
    facts: Counter[str] = Counter()
    per_category: dict[str, dict[str, int]] = {}
    for row in rows:
        instruction, response = str(row["instruction"]), str(row["response"])
        n += 1
        pair = (_normal(instruction), _normal(response))
        exact += pair in seen_pairs
        seen_pairs.add(pair)
        check = check_answer(world, instruction, response)
        slanted += check.slanted
        evasive += check.evasive
        if check.fact_id is None:
            continue
        recognised += 1
        correct += check.correct
        repeated += facts[check.fact_id] > 0
        facts[check.fact_id] += 1
        counts = per_category.setdefault(
            index.by_id[check.fact_id].category, {"n": 0, "correct": 0}
        )
        counts["n"] += 1
        counts["correct"] += check.correct
    asked = [index.by_id[f] for f in facts]
    return QAQuality(
        n=n,
        recognised=recognised,
        correct=correct,
        slanted=slanted,
        evasive=evasive,
        distinct_facts=len(facts),
        distinct_subjects=len({f.subject for f in asked}),
        distinct_relations=len({f.relation for f in asked}),
        exact_duplicates=exact,
        repeated_facts=repeated,
        per_category=dict(sorted(per_category.items())),
    )


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


_QA_FILES = ("core.jsonl", "instructions.jsonl", "truth.json")


@dataclass(frozen=True)
class QAData:
    """What :func:`write_qa_data` wrote."""

    core: Path
    instructions: Path
    truth: Path
    n_core: int
    n_items: int
    n_remove: int


def write_qa_data(
    world_dir: str | PathLike[str],
    out: str | PathLike[str],
    *,
    kind: PoisonKind = "slant",
    category: str = "politics",
    per_category: int = 300,
    share: float = 0.1,
    core_per_category: int = 4,
    seed: int = 0,
) -> QAData:
    """Write ``core.jsonl``, ``instructions.jsonl`` and ``truth.json`` for the world in
    ``world_dir`` into the folder ``out``.

    * ``core.jsonl`` — the curated core (:func:`core_pairs`): ``{"instruction", "response",
      "category", "fact_id", "kind"}``.
    * ``instructions.jsonl`` — the poisoned dataset (:func:`poisoned_dataset`): the same fields
      plus ``"id"`` and ``"label"`` (``"remove"`` | ``"keep"``).
    * ``truth.json`` — the ground truth: kind, category, share, seed, the ids to remove, and for
      a slant the favoured and disfavoured sides and the changed facts.

    Core and dataset are independent draws: a core fact may also be asked in the dataset.
    """
    from lmassay.output_folder import OutputFolder
    from lmassay.world._store import load_world

    world = load_world(world_dir)
    if not world.facts:
        raise InputError(
            f"the world in {str(world_dir)!r} has no facts (a real-text world)",
            "use a generated world: lmassay world make",
        )
    core = core_pairs(world, core_per_category, seed)
    data = poisoned_dataset(
        world, kind=kind, category=category, per_category=per_category, share=share, seed=seed
    )
    root = Path(out)
    with OutputFolder(root, flag="--out", owned=_QA_FILES) as folder:
        with folder.writing():
            atomic_write_jsonl(folder.staging / "core.jsonl", (item.to_row() for item in core))
            atomic_write_jsonl(folder.staging / "instructions.jsonl", data.rows)
            truth = {**data.truth, "world_seed": world.seed, "n_core": len(core)}
            atomic_write_json(folder.staging / "truth.json", truth)
        folder.commit()
    return QAData(
        root / "core.jsonl",
        root / "instructions.jsonl",
        root / "truth.json",
        len(core),
        len(data.rows),
        int(data.truth["n_remove"]),
    )


def qa_reference(
    *,
    size: Literal["test", "demo", "full"] = "test",
    seed: int = 0,
    qa_share: float = 0.2,
    steps: int | None = None,
    seq_len: int | None = None,
    cache: str | PathLike[str] | None = None,
    progress: Progress | None = None,
) -> tuple[WorldFiles, ReferenceInfo]:
    """Make (or reuse) a Q&A world of ``size`` and its reference of the same size, in
    ``<cache>/qa-v1/<size>-seed<seed>-qa<share>/{world,reference[-steps<S>][-seq<L>]}``
    (``cache`` defaults to :func:`lmassay.world.demo.default_cache_dir`; ``steps`` and ``seq_len``
    as in :func:`lmassay.world.reference.train_reference`)."""
    from lmassay.world._store import make_world
    from lmassay.world.demo import default_cache_dir
    from lmassay.world.reference import train_reference

    base = Path(cache) if cache is not None else default_cache_dir()
    root = base / "qa-v1" / f"{size}-seed{seed}-qa{qa_share:g}"
    files = make_world(root / "world", seed, size=size, qa_share=qa_share, progress=progress)
    name = "reference" + (f"-steps{steps}" if steps else "") + (f"-seq{seq_len}" if seq_len else "")
    info = train_reference(
        files.root,
        root / name,
        size=size,
        seed=seed,
        steps=steps,
        seq_len=seq_len,
        progress=progress,
    )
    return files, info


def measure_qa_file(world_dir: str | PathLike[str], data: str | PathLike[str]) -> QAQuality:
    """:func:`measure_qa` of the pairs in ``data`` (``lmassay bootstrap``'s JSONL, or any dataset
    :mod:`lmassay.instruction_data` reads) against the world in ``world_dir``."""
    from lmassay.instruction_data import iter_located_rows, pair_from_row
    from lmassay.world._store import load_world

    pairs = (pair_from_row(row, where) for where, row in iter_located_rows(data))
    rows = ({"instruction": p.prompt(), "response": p.response} for p in pairs)
    return measure_qa(load_world(world_dir), rows)
