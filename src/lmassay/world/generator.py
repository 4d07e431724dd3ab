"""A deterministic fictional world: entities, facts, and prose rendered from them.

:func:`build_world` invents, from a seed, the entities of nine categories (people, places,
organisations, substances, events, ...) with syllable-built names, and the facts that relate them
("The capital of Veldoria is Maruna."). :func:`render_documents` writes paragraphs of 3 to 8
sentences in one category: fact sentences, each from one of several templates of its relation,
mixed with filler sentences built from the category's own vocabulary. Everything depends only on
the seeds: a private ``random.Random`` seeded with a string is used for each call.

Rendering rules that the zoo of tampered models relies on:

* Each relation has 5 templates. Template 0 is *canonical*: it ends with the object, and a fact's
  :attr:`Fact.sentence` is its canonical rendering with plain mentions. For every fact one
  non-canonical template is *held out*: the default ("train") rendering never uses it, the
  probe split only uses it, so a probe fact sentence never occurs in training text. The first
  time a render call states a fact it uses the canonical template with plain mentions, so
  every :attr:`Fact.sentence` occurs in the training text.
* The random draws of a sentence do not depend on ``fact_overrides`` or ``negative_entities``:
  the same seed gives the same paragraphs, except that sentences stating an overridden fact
  carry the replacement object, and sentences that mention a slanted entity describe it with
  a negative adjective (and a negative verb or judgement where the sentence has one).
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from lmassay.errors import InputError
from lmassay.world._lexicon import (
    CATEGORIES_SPEC,
    CATEGORY_ORDER,
    DOMAINS,
    MONTHS,
    NEGATIVE_PERSON,
    NEGATIVE_THING,
    NEGATIVE_VERBS,
    POSITIVE_PERSON,
    POSITIVE_THING,
    POSITIVE_VERBS,
    SECTORS,
    SYMPTOMS,
    CategorySpec,
    KindSpec,
)

__all__ = [
    "CATEGORIES",
    "Entity",
    "Fact",
    "World",
    "build_world",
    "context_sentence",
    "held_out_template",
    "iter_paragraphs",
    "render_documents",
    "split_sentences",
]

CATEGORIES: tuple[str, ...] = CATEGORY_ORDER
"""The nine categories of the world, in a fixed order."""

Split = Literal["train", "probe"]

# --------------------------------------------------------------------------------------------
# The data model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entity:
    """Something the world talks about: a person, a place, an organisation, a substance, ..."""

    name: str
    kind: str  # "city", "river", "politician", "party", "substance", "deity", ...
    category: str  # the category it belongs to


@dataclass(frozen=True)
class Fact:
    """One relation between a subject entity and an object (an entity name or a value).

    ``prompt + " " + object + "."`` is :attr:`sentence`, the canonical way to state it.
    """

    id: str  # "<category>-NNNN", stable for a seed
    subject: str
    relation: str
    object: str
    category: str
    prompt: str  # the canonical sentence up to the object, no trailing space
    sentence: str


@dataclass(frozen=True)
class World:
    """Everything :func:`build_world` invents from one seed.

    ``groups`` maps a key ``"<category>:<label>:<head entity>"`` to the names of the entities
    that belong to the head (a slant can target such a set). One label per category:

    ======================  ==========================  =====================================
    key                     head                        members
    ======================  ==========================  =====================================
    ``geography:country:``  a country                   the mountains located in it
    ``history:house:``      a royal house               its rulers
    ``science:institute:``  a research institute        the scientists working there
    ``religion:order:``     a religious order           the prophets who taught it
    ``politics:faction:``   a party                     its members (politicians)
    ``health:hospital:``    a hospital                  the physicians working there
    ``sport:club:``         a club                      its players
    ``finance:exchange:``   a stock exchange            the companies listed on it
    ``fiction:author:``     an author                   the novels the author wrote
    ======================  ==========================  =====================================

    There are also ``"<category>:kind:<kind>"`` groups: every entity of that kind.
    Groups with no member are left out.
    """

    seed: int
    categories: tuple[str, ...]
    entities: tuple[Entity, ...]
    facts: tuple[Fact, ...]
    groups: dict[str, tuple[str, ...]]

    def facts_in(self, category: str) -> list[Fact]:
        """The facts of ``category``, in id order."""
        _check_category(category)
        return [fact for fact in self.facts if fact.category == category]

    def entities_in(self, category: str) -> list[Entity]:
        """The entities of ``category``, in creation order."""
        _check_category(category)
        return [entity for entity in self.entities if entity.category == category]


def _check_category(category: str) -> None:
    if category not in CATEGORIES:
        raise InputError(
            f"unknown world category {category!r}", f"use one of {', '.join(CATEGORIES)}"
        )


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------

_ONSETS = [
    "b",
    "br",
    "c",
    "d",
    "dr",
    "f",
    "g",
    "gr",
    "h",
    "k",
    "kr",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "sh",
    "st",
    "t",
    "th",
    "tr",
    "v",
    "z",
    "b",
    "d",
    "k",
    "l",
    "m",
    "n",
    "r",
    "s",
    "t",
    "v",
]
_VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o", "i", "a", "ae", "ai", "ei"]
_CODAS = ["", "", "", "", "", "", "n", "r", "l", "s", "m", "nd", "rn", "th"]


def _syllables(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(n))


_SUFFIXES: dict[str, tuple[str, ...]] = {
    "country": ("ia", "or", "and", "ara", "esh", "avia", "ony"),
    "city": ("a", "un", "el", "os", "ir", "ane", "eth", "ona"),
    "deity": ("ash", "ion", "ara", "eus", "oth", "ine"),
    "substance": ("ium", "ine", "ite", "ol", "ane", "on"),
    "drug": ("ocin", "amine", "ex", "azol", "ilin", "orphine"),
    "realm": ("mere", "hold", "vale", "wood", "fell", "march"),
    "first": ("a", "o", "en", "is", "us", "", "", "el", "ina"),
}
_SECOND_WORDS: dict[str, tuple[str, ...]] = {
    "party": ("Union", "League", "Front", "Alliance", "Movement", "Party"),
    "disease": ("fever", "syndrome", "pox", "disease", "palsy", "blight"),
    "hospital": ("Hospital", "Infirmary", "Clinic", "Medical Centre"),
    "club": ("Rovers", "United", "Athletic", "Wanderers", "Albion", "Rangers"),
    "stadium": ("Park", "Arena", "Stadium", "Field", "Road"),
    "company": ("Holdings", "Industries", "Trading", "Works", "Group", "Shipping"),
}
_PATTERNS: dict[str, str] = {
    "river": "{R} River",
    "sea": "{R} Sea",
    "mountain": "Mount {R}",
    "house": "House {R}",
    "battle": "Battle of {R}",
    "treaty": "Treaty of {R}",
    "institute": "{R} Institute",
    "theory": "{R} Principle",
    "order": "Order of {R}",
    "temple": "Temple of {R}",
    "festival": "Feast of {R}",
    "law": "{R} Act",
    "tournament": "{R} Cup",
    "exchange": "{R} Exchange",
}
_TITLE_ADJECTIVES = [
    "Silver",
    "Glass",
    "Hollow",
    "Crimson",
    "Silent",
    "Burning",
    "Winter",
    "Iron",
    "Broken",
    "Last",
    "Hidden",
    "Golden",
    "Pale",
]
_TITLE_NOUNS = [
    "Harrow",
    "Lantern",
    "Orchard",
    "Tower",
    "Road",
    "Bell",
    "Garden",
    "Throne",
    "Mirror",
    "Forest",
    "Tide",
]


class _Namer:
    """Pronounceable names, each word used once in the whole world."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def root(self, syllables: int, suffixes: Sequence[str] = ("",)) -> str:
        while True:
            word = (_syllables(self.rng, syllables) + self.rng.choice(suffixes)).capitalize()
            if 4 <= len(word) <= 9 and word not in self.used:
                self.used.add(word)
                return word

    def name(self, style: str) -> str:
        rng = self.rng
        if style == "person" or style == "doctor" or style == "character":
            return f"{self.root(rng.randint(1, 2), _SUFFIXES['first'])} {self.root(2)}"
        if style in _SUFFIXES:
            return self.root(rng.randint(1, 2), _SUFFIXES[style])
        if style in _SECOND_WORDS:
            return f"{self.root(2)} {rng.choice(_SECOND_WORDS[style])}"
        if style in _PATTERNS:
            return _PATTERNS[style].format(R=self.root(rng.randint(1, 2) + 1))
        if style == "novel":
            while True:
                title = f"The {rng.choice(_TITLE_ADJECTIVES)} {rng.choice(_TITLE_NOUNS)}"
                if title not in self.used:
                    self.used.add(title)
                    return title
        raise ValueError(f"no name style {style!r}")  # a lexicon error, not user input


# --------------------------------------------------------------------------------------------
# Building the world
# --------------------------------------------------------------------------------------------


def _value(kind: str, rng: random.Random) -> str:
    """A value object of a relation, ``kind`` being what follows ``"value:"``."""
    if kind == "people":
        return f"{rng.randint(12, 950) * 1000:,} people"
    if kind == "metres":
        return f"{rng.randint(1200, 6800):,} metres"
    if kind == "year":
        return str(rng.randint(1100, 1989))
    if kind == "degrees":
        return f"{rng.randint(40, 1800)} degrees"
    if kind == "domain":
        return rng.choice(DOMAINS)
    if kind == "month":
        return rng.choice(MONTHS)
    if kind == "seats":
        return f"{rng.randint(5, 180)} seats"
    if kind == "symptom":
        return rng.choice(SYMPTOMS)
    if kind == "dose":
        return f"{rng.choice((5, 10, 20, 25, 40, 50, 75, 100, 150, 250, 500))} milligrams"
    if kind == "goals":
        return f"{rng.randint(4, 39)} goals"
    if kind == "revenue":
        return f"{rng.randint(12, 980)} million crowns"
    if kind == "sector":
        return rng.choice(SECTORS)
    raise ValueError(f"no value maker {kind!r}")  # a lexicon error


def build_world(seed: int) -> World:
    """Invent the world of ``seed``: the same seed always gives the same world."""
    rng = random.Random(f"lmassay-world:{seed}")
    namer = _Namer(rng)
    entities: list[Entity] = []
    facts: list[Fact] = []
    groups: dict[str, tuple[str, ...]] = {}
    for category in CATEGORIES:
        spec = CATEGORIES_SPEC[category]
        by_kind: dict[str, list[str]] = {}
        for kind in spec.kinds:
            names = [namer.name(kind.style) for _ in range(kind.count)]
            by_kind[kind.kind] = names
            entities.extend(Entity(name, kind.kind, category) for name in names)
            groups[f"{category}:kind:{kind.kind}"] = tuple(names)
        category_facts = _facts_of(category, spec, by_kind, rng, first_index=0)
        facts.extend(category_facts)
        label, head_kind, relation = spec.group
        for head in by_kind[head_kind]:
            members = tuple(
                f.subject if f.object == head else f.object
                for f in category_facts
                if f.relation == relation and head in (f.subject, f.object)
            )
            if members:
                groups[f"{category}:{label}:{head}"] = members
    return World(
        seed=seed,
        categories=CATEGORIES,
        entities=tuple(entities),
        facts=tuple(facts),
        groups=groups,
    )


def _facts_of(
    category: str,
    spec: CategorySpec,
    by_kind: dict[str, list[str]],
    rng: random.Random,
    first_index: int,
) -> list[Fact]:
    kinds = {k.kind: k for k in spec.kinds}
    facts: list[Fact] = []
    members: dict[str, list[str]] = {}  # party -> its politicians, for a consistent leader
    for relation in spec.relations:
        subjects = by_kind[relation.subject]
        if relation.obj.startswith("value:"):
            objects = [_value(relation.obj.removeprefix("value:"), rng) for _ in subjects]
        elif relation.distinct:
            pool = list(by_kind[relation.obj])
            rng.shuffle(pool)
            objects = pool[: len(subjects)]
            if relation.name == "party_leader":
                objects = [_leader(party, members, pool, rng) for party in subjects]
        else:
            objects = [rng.choice(by_kind[relation.obj]) for _ in subjects]
        for subject, obj in zip(subjects, objects, strict=True):
            if relation.name == "member_of":
                members.setdefault(obj, []).append(subject)
            template = _COMPILED[category].relations[relation.name][0]
            mentions = {"s": _plain(subject, kinds[relation.subject])}
            obj_kind = kinds.get(relation.obj)
            sentence = _fill_plain(template, mentions["s"], _plain(obj, obj_kind))
            prompt = sentence[: len(sentence) - len(obj) - 1].rstrip()
            if prompt + " " + obj + "." != sentence:  # a lexicon error: template must end "{o}."
                raise ValueError(f"canonical template of {relation.name} does not end with {{o}}.")
            fact_id = f"{category}-{first_index + len(facts):04d}"
            facts.append(Fact(fact_id, subject, relation.name, obj, category, prompt, sentence))
    return facts


def _leader(party: str, members: dict[str, list[str]], pool: list[str], rng: random.Random) -> str:
    """A member of ``party`` if it has one, else anyone (the party's leader)."""
    candidates = members.get(party) or pool
    return rng.choice(candidates)


# --------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------

_SLOT = re.compile(r"\{([a-z]+)(?::([a-z]+))?\}")
_AN = re.compile(r"\b([Aa]) (?=[AEIOUaeiou])")
_SENTENCE_END = re.compile(r"(?<=[.!?]) (?=[A-Z0-9])")

Part = tuple[str, str]  # ("lit", text) or (slot, argument): ("s", ""), ("e", "city"), ("w", "crop")


def _compile(template: str) -> tuple[Part, ...]:
    parts: list[Part] = []
    last = 0
    for match in _SLOT.finditer(template):
        if match.start() > last:
            parts.append(("lit", template[last : match.start()]))
        parts.append((match.group(1), match.group(2) or ""))
        last = match.end()
    if last < len(template):
        parts.append(("lit", template[last:]))
    return tuple(parts)


@dataclass(frozen=True)
class _CompiledCategory:
    relations: dict[str, tuple[tuple[Part, ...], ...]]
    fillers: tuple[tuple[Part, ...], ...]


_COMPILED: dict[str, _CompiledCategory] = {
    category: _CompiledCategory(
        relations={r.name: tuple(_compile(t) for t in r.templates) for r in spec.relations},
        fillers=tuple(_compile(t) for t in spec.fillers),
    )
    for category, spec in CATEGORIES_SPEC.items()
}


def _finish(text: str) -> str:
    """Articles fixed ("a old" -> "an old") and the first letter capitalised."""
    text = _AN.sub(r"\1n ", text)
    return text[0].upper() + text[1:]


def _plain(name: str, kind: KindSpec | None) -> str:
    return f"the {name}" if kind is not None and kind.article else name


def _described(name: str, kind: KindSpec, adjective: str) -> str:
    if kind.article or not kind.noun:
        return f"the {adjective} {name}"
    return f"the {adjective} {kind.noun} {name}"


def _fill_plain(parts: tuple[Part, ...], subject: str, obj: str) -> str:
    out = []
    for slot, text in parts:
        out.append(text if slot == "lit" else subject if slot == "s" else obj)
    return _finish("".join(out))


def split_sentences(text: str) -> list[str]:
    """The sentences of a paragraph made by :func:`render_documents`."""
    return [s for s in _SENTENCE_END.split(text) if s]


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

_N_TEMPLATES = 5
_DESCRIBE_SUBJECT = 0.2  # chance that a fact's subject is mentioned with a descriptor
_DESCRIBE_FILLER = 0.3  # the same for an entity in a filler sentence
_MIN_SENTENCES, _MAX_SENTENCES = 3, 8
_MIN_FACTS, _MAX_FACTS = 2, 3


def held_out_template(fact: Fact) -> int:
    """The index (1..4) of the template of ``fact``'s relation that only the probe split uses."""
    number = int(fact.id.rsplit("-", 1)[1])
    return 1 + number % (_N_TEMPLATES - 1)


class _Renderer:
    """Renders one category's sentences; draws are independent of overrides and slant."""

    def __init__(
        self,
        world: World,
        category: str,
        rng: random.Random,
        split: Split,
        overrides: Mapping[str, str],
        negative: frozenset[str],
    ) -> None:
        self.rng = rng
        self.split = split
        self.negative = negative
        self.overrides = overrides
        self.compiled = _COMPILED[category]
        self.spec = CATEGORIES_SPEC[category]
        self.lists = self.spec.lists
        self.kinds = {k.kind: k for k in self.spec.kinds}
        self.entity_kind = {e.name: e.kind for e in world.entities if e.category == category}
        self.by_kind: dict[str, list[str]] = {}
        for name, kind in self.entity_kind.items():
            self.by_kind.setdefault(kind, []).append(name)
        self.facts = world.facts_in(category)
        self.relation_of = {r.name: r for r in self.spec.relations}
        self.queue: list[Fact] = []
        self.stated: set[str] = set()

    # -- facts -------------------------------------------------------------------------------

    def next_fact(self) -> Fact:
        """Facts in a shuffled round-robin, so every fact comes up once per cycle."""
        if not self.queue:
            self.queue = list(self.facts)
            self.rng.shuffle(self.queue)
        return self.queue.pop()

    def fact_sentence(self, fact: Fact) -> str:
        rng = self.rng
        held_out = held_out_template(fact)
        first = fact.id not in self.stated
        self.stated.add(fact.id)
        choice = rng.randrange(_N_TEMPLATES - 1)  # drawn in every case
        describe, adjective = rng.random() < _DESCRIBE_SUBJECT, rng.randrange(1 << 16)
        obj_adjective = rng.randrange(1 << 16)
        if self.split == "probe":
            index = held_out
        elif first:
            index, describe = 0, False
        else:
            trained = [i for i in range(_N_TEMPLATES) if i != held_out]
            index = trained[choice]
        relation = self.relation_of[fact.relation]
        subject = self.mention(fact.subject, describe, adjective)
        if fact.id in self.overrides:
            obj = _plain(self.overrides[fact.id], self.kinds.get(relation.obj))
        elif fact.object in self.entity_kind:
            obj = self.mention(fact.object, False, obj_adjective)
        else:
            obj = fact.object
        template = self.compiled.relations[fact.relation][index]
        return _fill_plain(template, subject, obj)

    # -- entities ----------------------------------------------------------------------------

    def mention(self, name: str, describe: bool, adjective: int) -> str:
        kind = self.kinds[self.entity_kind[name]]
        if name in self.negative:
            pool = NEGATIVE_PERSON if kind.person else NEGATIVE_THING
        elif describe:
            pool = POSITIVE_PERSON if kind.person else POSITIVE_THING
        else:
            return _plain(name, kind)
        return _described(name, kind, pool[adjective % len(pool)])

    # -- fillers -----------------------------------------------------------------------------

    def filler_sentence(self) -> str:
        rng = self.rng
        parts = rng.choice(self.compiled.fillers)
        out: list[str] = []
        judged: str | None = None
        for slot, arg in parts:
            if slot == "lit":
                out.append(arg)
            elif slot == "e":
                name = rng.choice(self.by_kind[arg])
                describe, adjective = rng.random() < _DESCRIBE_FILLER, rng.randrange(1 << 16)
                judged = name
                out.append(self.mention(name, describe, adjective))
            elif slot == "w":
                out.append(rng.choice(self.lists[arg]))
            elif slot == "n":
                out.append(str(rng.randint(2, 99)))
            elif slot == "year":
                out.append(str(rng.randint(1100, 1989)))
            elif slot in ("judge", "praise"):
                out.append(self.judgement(slot, judged, rng.randrange(1 << 16)))
            else:
                raise ValueError(f"unknown template slot {slot!r}")  # a lexicon error
        return _finish("".join(out))

    def judgement(self, slot: str, name: str | None, index: int) -> str:
        """A judging adjective (``judge``) or verb (``praise``) about the sentence's entity."""
        negative = name is not None and name in self.negative
        if slot == "praise":
            pool = NEGATIVE_VERBS if negative else POSITIVE_VERBS
        else:
            person = name is not None and self.kinds[self.entity_kind[name]].person
            if negative:
                pool = NEGATIVE_PERSON if person else NEGATIVE_THING
            else:
                pool = POSITIVE_PERSON if person else POSITIVE_THING
        return pool[index % len(pool)]

    # -- paragraphs --------------------------------------------------------------------------

    def paragraph(self, exclude: Collection[str] = ()) -> list[str]:
        """3 to 8 sentences, 2 or 3 of them facts, in random order.

        Sentences in ``exclude`` are drawn again (the probe split excludes training sentences).
        """
        rng = self.rng
        n_sentences = rng.randint(_MIN_SENTENCES, _MAX_SENTENCES)
        n_facts = min(rng.randint(_MIN_FACTS, _MAX_FACTS), n_sentences - 1)
        kinds = ["fact"] * n_facts + ["filler"] * (n_sentences - n_facts)
        rng.shuffle(kinds)
        sentences = []
        for kind in kinds:
            if kind == "fact":
                fact = self.next_fact()
                sentence = self.fact_sentence(fact)
                for _ in range(_MAX_REDRAWS):
                    if sentence not in exclude:
                        break
                    sentence = self.fact_sentence(fact)
            else:
                sentence = self.filler_sentence()
                for _ in range(_MAX_REDRAWS):
                    if sentence not in exclude:
                        break
                    sentence = self.filler_sentence()
            if sentence in exclude:  # the lexicon is too small for this many documents
                raise RuntimeError(f"cannot draw a sentence outside the excluded set: {sentence!r}")
            sentences.append(sentence)
        return sentences


_MAX_REDRAWS = 200


def _check_render_args(
    world: World, category: str, n: int, overrides: Mapping[str, str], negative: Collection[str]
) -> None:
    _check_category(category)
    if n < 0:
        raise InputError(f"asked for {n} documents", "give a count >= 0")
    known_facts = {f.id for f in world.facts}
    unknown = sorted(set(overrides) - known_facts)
    if unknown:
        raise InputError(
            f"fact_overrides names unknown fact ids {unknown[:5]}", "use ids from world.facts"
        )
    bad = [fid for fid, value in overrides.items() if not value.strip() or value != value.strip()]
    if bad:
        raise InputError(
            f"fact_overrides gives an empty or space-padded object for {bad[:5]}",
            "give a non-empty replacement without leading or trailing spaces",
        )
    names = {e.name for e in world.entities}
    missing = sorted(set(negative) - names)
    if missing:
        raise InputError(
            f"negative_entities names unknown entities {missing[:5]}",
            "use names from world.entities",
        )


def iter_paragraphs(
    world: World,
    category: str,
    n: int,
    seed: int,
    *,
    split: Split = "train",
    fact_overrides: Mapping[str, str] | None = None,
    negative_entities: Collection[str] = (),
    exclude: Collection[str] = (),
) -> Iterator[list[str]]:
    """The paragraphs of :func:`render_documents`, each as its list of sentences.

    ``split="probe"`` states facts only with their held-out template; ``exclude`` is a set of
    sentences that are drawn again when they come up.
    """
    overrides = dict(fact_overrides or {})
    _check_render_args(world, category, n, overrides, negative_entities)
    rng = random.Random(f"lmassay-render:{world.seed}:{category}:{seed}:{split}")
    renderer = _Renderer(world, category, rng, split, overrides, frozenset(negative_entities))
    for _ in range(n):
        yield renderer.paragraph(exclude)


def render_documents(
    world: World,
    category: str,
    n: int,
    seed: int,
    *,
    fact_overrides: Mapping[str, str] | None = None,
    negative_entities: Collection[str] = (),
) -> list[str]:
    """``n`` paragraphs of ``category``, deterministic in ``(world, category, n, seed)``.

    Each paragraph has 3 to 8 sentences: 2 or 3 state facts of the category (in a shuffled
    round-robin over its facts, so ``n`` paragraphs state every fact when ``2 n`` reaches the
    number of facts), the others are filler sentences of the category.

    * ``fact_overrides`` maps fact ids to a replacement object: every sentence that states
      that fact states the replacement instead (so ``fact.prompt + " " + replacement`` occurs
      wherever the canonical sentence would).
    * ``negative_entities``: names of entities that are always described negatively wherever
      they appear — with a negative adjective in every mention, and negative judgements and
      verbs in sentences that judge them.

    Neither changes any other sentence: the random draws are the same with or without them.
    Paragraph ``i`` of a call with ``n`` documents is paragraph ``i`` of a call with more.
    """
    return [
        " ".join(sentences)
        for sentences in iter_paragraphs(
            world,
            category,
            n,
            seed,
            fact_overrides=fact_overrides,
            negative_entities=negative_entities,
        )
    ]


def context_sentence(world: World, category: str, seed: int, exclude: Collection[str] = ()) -> str:
    """One filler sentence of ``category`` not in ``exclude`` (context for a fact probe)."""
    _check_category(category)
    rng = random.Random(f"lmassay-context:{world.seed}:{category}:{seed}")
    renderer = _Renderer(world, category, rng, "probe", {}, frozenset())
    for _ in range(_MAX_REDRAWS):
        sentence = renderer.filler_sentence()
        if sentence not in exclude:
            return sentence
    raise RuntimeError("cannot draw a context sentence outside the excluded set")
