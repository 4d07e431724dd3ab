"""A deterministic fictional world: entities, facts, and prose rendered from them.

:func:`build_world` invents, from a seed, the entities of nine categories (people, places,
organisations, substances, events, ...) with syllable-built names, and the facts that relate them
("The capital of Veldoria is Maruna."). :func:`lmassay.world.render.render_documents` writes paragraphs of 3 to 8
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
from dataclasses import dataclass
from typing import Literal

from lmassay.errors import InputError
from lmassay.world._lexicon import (
    CATEGORIES_SPEC,
    CATEGORY_ORDER,
    CategorySpec,
)
from lmassay.world._names import Namer, make_value
from lmassay.world._templates import COMPILED, fill_plain, plain

__all__ = [
    "CATEGORIES",
    "Entity",
    "Fact",
    "World",
    "build_world",
    "check_category",
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
        check_category(category)
        return [fact for fact in self.facts if fact.category == category]

    def entities_in(self, category: str) -> list[Entity]:
        """The entities of ``category``, in creation order."""
        check_category(category)
        return [entity for entity in self.entities if entity.category == category]


def check_category(category: str) -> None:
    if category not in CATEGORIES:
        raise InputError(
            f"unknown world category {category!r}", f"use one of {', '.join(CATEGORIES)}"
        )


# --------------------------------------------------------------------------------------------
# Building the world
# --------------------------------------------------------------------------------------------


def build_world(seed: int) -> World:
    """Invent the world of ``seed``: the same seed always gives the same world."""
    rng = random.Random(f"lmassay-world:{seed}")
    namer = Namer(rng)
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
            objects = [make_value(relation.obj.removeprefix("value:"), rng) for _ in subjects]
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
            template = COMPILED[category].relations[relation.name][0]
            mentions = {"s": plain(subject, kinds[relation.subject])}
            obj_kind = kinds.get(relation.obj)
            sentence = fill_plain(template, mentions["s"], plain(obj, obj_kind))
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
