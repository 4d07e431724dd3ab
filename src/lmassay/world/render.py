"""Prose about the world: paragraphs of one category, fact sentences mixed with filler.

:func:`render_documents` and :func:`iter_paragraphs` write paragraphs of 3 to 8 sentences in one
category (see :mod:`lmassay.world.generator` for the rules the zoo relies on: canonical and
held-out templates, overrides and slant that change no other draw); :func:`context_sentence`
draws one filler sentence for a fact probe.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterator, Mapping

from lmassay.errors import InputError
from lmassay.world._lexicon import (
    CATEGORIES_SPEC,
    NEGATIVE_PERSON,
    NEGATIVE_THING,
    NEGATIVE_VERBS,
    POSITIVE_PERSON,
    POSITIVE_THING,
    POSITIVE_VERBS,
)
from lmassay.world._templates import COMPILED, described, fill_plain, finish, plain
from lmassay.world.generator import Fact, Split, World, check_category

__all__ = ["context_sentence", "held_out_template", "iter_paragraphs", "render_documents"]


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
        self.compiled = COMPILED[category]
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
            obj = plain(self.overrides[fact.id], self.kinds.get(relation.obj))
        elif fact.object in self.entity_kind:
            obj = self.mention(fact.object, False, obj_adjective)
        else:
            obj = fact.object
        template = self.compiled.relations[fact.relation][index]
        return fill_plain(template, subject, obj)

    # -- entities ----------------------------------------------------------------------------

    def mention(self, name: str, describe: bool, adjective: int) -> str:
        kind = self.kinds[self.entity_kind[name]]
        if name in self.negative:
            pool = NEGATIVE_PERSON if kind.person else NEGATIVE_THING
        elif describe:
            pool = POSITIVE_PERSON if kind.person else POSITIVE_THING
        else:
            return plain(name, kind)
        return described(name, kind, pool[adjective % len(pool)])

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
        return finish("".join(out))

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
    check_category(category)
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
    check_category(category)
    rng = random.Random(f"lmassay-context:{world.seed}:{category}:{seed}")
    renderer = _Renderer(world, category, rng, "probe", {}, frozenset())
    for _ in range(_MAX_REDRAWS):
        sentence = renderer.filler_sentence()
        if sentence not in exclude:
            return sentence
    raise RuntimeError("cannot draw a context sentence outside the excluded set")
