"""Names and values of the world's entities: pronounceable syllable-built words, used once each.

Private to :mod:`lmassay.world.generator`, which builds the world from them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from lmassay.world._lexicon import DOMAINS, MONTHS, SECTORS, SYMPTOMS

__all__ = ["Namer", "make_value"]


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


class Namer:
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


def make_value(kind: str, rng: random.Random) -> str:
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
