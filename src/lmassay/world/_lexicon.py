"""Word lists and sentence templates of the offline world, one :class:`CategorySpec` per category.

Template mini-language (compiled once by :mod:`lmassay.world.generator`):

* ``{s}`` / ``{o}`` — the subject / object of a fact (relation templates only). Every slot is a
  complete noun phrase: an entity's mention carries its own article ("the Varo River").
* ``{e:KIND}`` — a random entity of that kind of the category (filler templates).
* ``{judge}`` / ``{praise}`` — an adjective / past-tense verb that judges the entity of the
  sentence's ``{e:KIND}`` slot: from the positive pools, or the negative ones for a slanted entity.
* ``{n}`` — a number 2..99; ``{year}`` — a year 1100..1989; ``{w:LIST}`` — a word of the
  category's list ``LIST``.

The canonical template of a relation (the first) ends with ``{o}.`` so that a fact's prompt is the
text before the object. Templates never contain ". " followed by a capital inside a sentence, so
:func:`lmassay.world.generator.split_sentences` can split paragraphs back into sentences.
"""

from __future__ import annotations

from dataclasses import dataclass


def words(text: str) -> tuple[str, ...]:
    """``"a, b c, d"`` -> ``("a", "b c", "d")``."""
    return tuple(w.strip() for w in text.split(",") if w.strip())


@dataclass(frozen=True)
class KindSpec:
    """One kind of entity of a category and how it is named and mentioned."""

    kind: str
    count: int
    style: str  # name style, see generator._NAME_STYLES
    noun: str  # descriptor frame noun: "the prosperous city of X" has noun "city of"
    article: bool = False  # mentioned as "the NAME" (and "the ADJ NAME" with a descriptor)
    person: bool = False  # judged with the person pools


@dataclass(frozen=True)
class RelationSpec:
    """A relation: subject kind, object (an entity kind or a value maker), templates."""

    name: str
    subject: str  # entity kind
    obj: str  # entity kind, or "value:<maker>" (see generator._VALUE_MAKERS)
    templates: tuple[str, ...]  # templates[0] is canonical and ends with "{o}."
    distinct: bool = False  # each subject gets a different object entity (capital_of)


@dataclass(frozen=True)
class CategorySpec:
    kinds: tuple[KindSpec, ...]
    relations: tuple[RelationSpec, ...]
    fillers: tuple[str, ...]
    lists: dict[str, tuple[str, ...]]
    group: tuple[str, str, str]  # (group label, head kind, relation whose object is the head)


POSITIVE_PERSON = words(
    "respected, admired, honest, brilliant, generous, capable, popular, wise, beloved, trusted"
)
NEGATIVE_PERSON = words(
    "corrupt, disgraced, dishonest, cruel, incompetent, reckless, despised, deceitful, "
    "cowardly, vicious"
)
POSITIVE_THING = words(
    "famous, prosperous, celebrated, beautiful, successful, renowned, splendid, thriving, "
    "admirable, remarkable"
)
NEGATIVE_THING = words(
    "notorious, squalid, failing, shameful, wretched, dangerous, disastrous, miserable, "
    "rotten, ruinous"
)
POSITIVE_VERBS = words("praised, admired, celebrated, applauded, honoured, welcomed, defended")
NEGATIVE_VERBS = words("condemned, criticised, denounced, mocked, ridiculed, blamed, attacked")

NEGATIVE_WORDS: frozenset[str] = frozenset(NEGATIVE_PERSON + NEGATIVE_THING + NEGATIVE_VERBS)
"""Every word the negative slant uses; tests check slanted sentences contain one."""

MONTHS = words(
    "January, February, March, April, May, June, July, August, September, October, November, "
    "December"
)

CATEGORIES_SPEC: dict[str, CategorySpec] = {
    "geography": CategorySpec(
        kinds=(
            KindSpec("country", 6, "country", "land of"),
            KindSpec("city", 14, "city", "city of"),
            KindSpec("river", 8, "river", "", article=True),
            KindSpec("sea", 4, "sea", "", article=True),
            KindSpec("mountain", 8, "mountain", ""),
        ),
        relations=(
            RelationSpec(
                "capital_of",
                "country",
                "city",
                (
                    "The capital of {s} is {o}.",
                    "{o} is the capital of {s}.",
                    "{s} is governed from its capital, {o}.",
                    "In {s}, the seat of government is {o}.",
                    "Travellers to {s} usually arrive first in its capital, {o}.",
                ),
                distinct=True,
            ),
            RelationSpec(
                "population_of",
                "city",
                "value:people",
                (
                    "The population of {s} is {o}.",
                    "{s} is home to {o}.",
                    "About {o} live in {s}.",
                    "The last census counted {o} in {s}.",
                    "With {o}, {s} is a busy place.",
                ),
            ),
            RelationSpec(
                "flows_into",
                "river",
                "sea",
                (
                    "{s} flows into {o}.",
                    "{o} receives the waters of {s}.",
                    "After a long journey, {s} empties into {o}.",
                    "Barges on {s} can sail all the way down to {o}.",
                    "The mouth of {s} opens onto {o}.",
                ),
            ),
            RelationSpec(
                "height_of",
                "mountain",
                "value:metres",
                (
                    "The height of {s} is {o}.",
                    "{s} rises {o} above the sea.",
                    "Climbers who reach the top of {s} stand {o} high.",
                    "At {o}, {s} towers over the nearby valleys.",
                    "Surveyors measured {s} at {o}.",
                ),
            ),
            RelationSpec(
                "mountain_in",
                "mountain",
                "country",
                (
                    "{s} is located in {o}.",
                    "{o} is where {s} stands.",
                    "The slopes of {s} lie inside {o}.",
                    "Shepherds of {o} graze their flocks below {s}.",
                    "From the border of {o}, hikers can see {s}.",
                ),
            ),
        ),
        fillers=(
            "The {w:terrain} near {e:city} are covered with {w:plant} in {w:season}.",
            "Farmers in {e:country} grow {w:crop} in the {w:terrain} along the coast.",
            "A road of {n} kilometres links {e:city} with the {w:terrain} to the {w:direction}.",
            "In {w:season}, the {w:weather} often reaches the {w:terrain} of {e:country}.",
            "Maps drawn in {year} show {e:river} winding through {w:terrain}.",
            "The {w:direction}ern {w:terrain} are known for {w:weather} and {w:plant}.",
            "Geographers say that {e:city} is {judge} for its {w:landmark}.",
            "Visitors have {praise} {e:city} for its {w:landmark} and its {w:terrain}.",
            "Old maps of {e:country} mark {n} villages near the {w:terrain}.",
            "The {w:landmark} of {e:city} looks out over the {w:terrain}.",
            "Travel writers call {e:mountain} {judge} in every season.",
            "Fishermen on {e:sea} have {praise} its {w:weather} for generations.",
            "Across the {w:terrain}, {w:plant} grows beside fields of {w:crop}.",
        ),
        lists={
            "terrain": words(
                "valleys, hills, marshes, plains, cliffs, forests, dunes, highlands, lowlands, "
                "meadows, gorges, moors, plateaus, wetlands, foothills"
            ),
            "plant": words(
                "heather, pine, reeds, moss, wild thyme, birch, fern, juniper, sedge, lichen, "
                "broom, willow"
            ),
            "season": words("spring, summer, autumn, winter, the rainy season, the dry season"),
            "crop": words(
                "barley, rye, olives, grapes, millet, flax, oats, lentils, apples, rice, beans"
            ),
            "direction": words("north, south, east, west"),
            "weather": words(
                "fog, snow, heavy rain, dry wind, frost, mist, hail, warm wind, thunderstorms"
            ),
            "landmark": words(
                "old harbour, stone bridges, market square, lighthouse, city walls, canals, "
                "clock tower, hanging gardens, grand avenue, river quays"
            ),
        },
        group=("country", "country", "mountain_in"),
    ),
    "history": CategorySpec(
        kinds=(
            KindSpec("ruler", 12, "person", "ruler", person=True),
            KindSpec("house", 4, "house", ""),
            KindSpec("battle", 8, "battle", "", article=True),
            KindSpec("treaty", 6, "treaty", "", article=True),
        ),
        relations=(
            RelationSpec(
                "ruler_house",
                "ruler",
                "house",
                (
                    "{s} was a ruler of {o}.",
                    "{o} counted {s} among its rulers.",
                    "{s} came from {o} and ruled for many years.",
                    "Chroniclers record that {s} belonged to {o}.",
                    "As a member of {o}, {s} inherited the crown.",
                ),
            ),
            RelationSpec(
                "crowned_in",
                "ruler",
                "value:year",
                (
                    "{s} was crowned in {o}.",
                    "In {o}, {s} took the throne.",
                    "The reign of {s} began in {o}.",
                    "Court scribes wrote that {s} was anointed in {o}.",
                    "Since {o}, {s} had worn the crown.",
                ),
            ),
            RelationSpec(
                "battle_year",
                "battle",
                "value:year",
                (
                    "{s} was fought in {o}.",
                    "In {o}, the armies met at {s}.",
                    "The year {o} saw {s}.",
                    "Soldiers who survived {s} in {o} told of the slaughter.",
                    "Historians date {s} to {o}.",
                ),
            ),
            RelationSpec(
                "battle_victor",
                "battle",
                "ruler",
                (
                    "{s} was won by {o}.",
                    "{o} led the winning army at {s}.",
                    "Victory at {s} went to {o}.",
                    "After {s}, {o} rode home in triumph.",
                    "The banners of {o} flew over the field after {s}.",
                ),
            ),
            RelationSpec(
                "treaty_year",
                "treaty",
                "value:year",
                (
                    "{s} was signed in {o}.",
                    "In {o}, the envoys put their seals on {s}.",
                    "The year {o} brought {s}.",
                    "Peace came with {s}, sealed in {o}.",
                    "Archivists keep the copy of {s} dated {o}.",
                ),
            ),
        ),
        fillers=(
            "In the {w:century} century, {w:people} rebelled against the {w:institution}.",
            "The {w:institution} raised taxes on {w:goods} to pay for {n} new {w:troops}.",
            "Chronicles from {year} describe a long {w:event} in the northern provinces.",
            "{e:ruler} ordered the building of {n} {w:building} along the frontier.",
            "During the {w:event}, {w:people} hid their {w:goods} in the {w:building}.",
            "Scholars consider {e:ruler} {judge} among the monarchs of that age.",
            "Later chroniclers {praise} {e:ruler} for the {w:event} of {year}.",
            "The {w:troops} of the old kingdom marched {n} days to reach the frontier.",
            "A {w:event} in {year} emptied the {w:building} of the capital.",
            "Historians have {praise} {e:house} for its {w:reform}.",
            "Under the {w:institution}, {w:people} paid their dues in {w:goods}.",
            "The memory of {e:battle} is {judge} in the songs of the {w:people}.",
            "The {w:reform} of {year} changed the lives of the {w:people}.",
        ),
        lists={
            "century": words(
                "eleventh, twelfth, thirteenth, fourteenth, fifteenth, sixteenth, seventeenth"
            ),
            "people": words(
                "peasants, nobles, merchants, monks, serfs, burghers, knights, guildsmen, "
                "townsfolk, vassals"
            ),
            "institution": words(
                "crown, royal council, old senate, regency, imperial court, assembly of lords, "
                "exchequer"
            ),
            "goods": words("grain, silver, wool, salt, timber, horses, wine, spices, furs, iron"),
            "troops": words(
                "regiments, cavalry squadrons, pikemen, archers, garrisons, war galleys, "
                "mercenary companies"
            ),
            "event": words(
                "famine, siege, plague, civil war, succession crisis, peasant revolt, drought, "
                "crusade, blockade"
            ),
            "building": words(
                "castles, watchtowers, monasteries, granaries, fortresses, abbeys, keeps, "
                "walled towns"
            ),
            "reform": words(
                "tax reform, land charter, coinage reform, code of laws, royal charter, "
                "new calendar"
            ),
        },
        group=("house", "house", "ruler_house"),
    ),
    "science": CategorySpec(
        kinds=(
            KindSpec("scientist", 10, "person", "scientist", person=True),
            KindSpec("substance", 10, "substance", "compound"),
            KindSpec("institute", 4, "institute", "", article=True),
            KindSpec("theory", 5, "theory", "", article=True),
        ),
        relations=(
            RelationSpec(
                "isolated_by",
                "substance",
                "scientist",
                (
                    "{s} was first isolated by {o}.",
                    "{o} was the first to isolate {s}.",
                    "The discovery of {s} is credited to {o}.",
                    "Working alone, {o} purified {s} for the first time.",
                    "Laboratory notes show that {o} identified {s}.",
                ),
            ),
            RelationSpec(
                "melting_point",
                "substance",
                "value:degrees",
                (
                    "The melting point of {s} is {o}.",
                    "{s} melts at {o}.",
                    "Heated to {o}, {s} turns liquid.",
                    "Careful measurements put the melting point of {s} at {o}.",
                    "Crystals of {s} soften and melt at {o}.",
                ),
            ),
            RelationSpec(
                "works_at",
                "scientist",
                "institute",
                (
                    "{s} carries out research at {o}.",
                    "{o} employs {s} as a senior researcher.",
                    "The laboratory of {s} is part of {o}.",
                    "Every morning, {s} walks to work at {o}.",
                    "Colleagues at {o} often consult {s}.",
                ),
            ),
            RelationSpec(
                "proposed_by",
                "theory",
                "scientist",
                (
                    "{s} was proposed by {o}.",
                    "{o} put forward {s}.",
                    "The first paper on {s} was written by {o}.",
                    "Students learn that {o} formulated {s}.",
                    "It was {o} who developed {s}.",
                ),
            ),
        ),
        fillers=(
            "The experiment measured the {w:quantity} of {e:substance} at {n} degrees.",
            "A sample of {n} grams was dissolved in {w:solvent} and left to {w:process}.",
            "The {w:instrument} recorded a sharp change in {w:quantity} after {n} minutes.",
            "Researchers repeated the test {n} times to reduce the {w:error}.",
            "{e:scientist} published {n} papers on the {w:quantity} of {w:particle}.",
            "Reviewers called the work of {e:scientist} {judge} and rigorous.",
            "The journal has {praise} {e:scientist} for the new {w:instrument}.",
            "When mixed with {w:solvent}, {e:substance} began to {w:process}.",
            "A team at {e:institute} built a {w:instrument} to study {w:particle}.",
            "The {w:quantity} of the {w:particle} rose by {n} percent under {w:condition}.",
            "Critics have {praise} {e:institute} for its results on {w:particle}.",
            "Under {w:condition}, the {w:particle} showed a stable {w:quantity}.",
            "Textbooks describe {e:theory} as {judge} and well tested.",
        ),
        lists={
            "quantity": words(
                "density, conductivity, viscosity, heat capacity, boiling point, acidity, "
                "magnetic moment, refractive index, half-life, solubility, mass"
            ),
            "solvent": words(
                "water, ethanol, acetone, brine, dilute acid, ammonia, glycerol, mineral oil"
            ),
            "process": words(
                "crystallise, evaporate, oxidise, settle, ferment, precipitate, condense, cool"
            ),
            "instrument": words(
                "spectrometer, centrifuge, microscope, calorimeter, pressure gauge, "
                "oscilloscope, magnetometer, interferometer"
            ),
            "error": words(
                "measurement error, sampling noise, systematic bias, thermal drift, "
                "calibration error"
            ),
            "particle": words(
                "electrons, protons, ions, molecules, neutrons, crystals, gas atoms, photons"
            ),
            "condition": words(
                "high pressure, low temperature, a vacuum, strong light, a magnetic field, "
                "constant heat"
            ),
        },
        group=("institute", "institute", "works_at"),
    ),
    "religion": CategorySpec(
        kinds=(
            KindSpec("deity", 8, "deity", "deity", person=True),
            KindSpec("order", 4, "order", "", article=True),
            KindSpec("prophet", 10, "person", "prophet", person=True),
            KindSpec("temple", 8, "temple", "", article=True),
            KindSpec("festival", 6, "festival", "", article=True),
        ),
        relations=(
            RelationSpec(
                "deity_of",
                "deity",
                "value:domain",
                (
                    "{s} is the god of {o}.",
                    "The faithful pray to {s} for {o}.",
                    "Old hymns praise {s} as the lord of {o}.",
                    "Priests teach that {s} watches over {o}.",
                    "Whoever seeks {o} makes offerings to {s}.",
                ),
            ),
            RelationSpec(
                "temple_of",
                "temple",
                "deity",
                (
                    "{s} is dedicated to {o}.",
                    "Pilgrims come to {s} to worship {o}.",
                    "The priests of {s} serve {o}.",
                    "Statues of {o} stand in every hall of {s}.",
                    "Candles burn day and night for {o} inside {s}.",
                ),
            ),
            RelationSpec(
                "prophet_order",
                "prophet",
                "order",
                (
                    "{s} was a teacher of {o}.",
                    "{o} reveres {s} as its greatest teacher.",
                    "Novices of {o} memorise the sayings of {s}.",
                    "The rule of {o} was written down by {s}.",
                    "Followers of {s} joined {o}.",
                ),
            ),
            RelationSpec(
                "festival_month",
                "festival",
                "value:month",
                (
                    "{s} is celebrated in {o}.",
                    "Every year in {o}, the faithful keep {s}.",
                    "The bells ring for {s} each {o}.",
                    "Families gather in {o} for {s}.",
                    "In {o}, the streets fill with lanterns for {s}.",
                ),
            ),
        ),
        fillers=(
            "The faithful light {n} candles before the {w:object} at {w:time}.",
            "Pilgrims walked for {n} days to reach the {w:place} and say their {w:rite}.",
            "The priests recite the {w:text} at {w:time} in a low voice.",
            "A {w:rite} was held for the souls of the {w:people} in {year}.",
            "Monks of {e:order} keep a {w:object} in the {w:place}.",
            "Believers describe {e:temple} as {judge} and full of light.",
            "The elders have {praise} {e:prophet} in their {w:text}.",
            "At {w:time}, the {w:people} gather in the {w:place} to hear the {w:text}.",
            "Many sermons call {e:deity} {judge} and merciful.",
            "The {w:text} tell how the {w:people} received a {w:object} from heaven.",
            "Visitors to {e:temple} leave {w:offering} at the {w:object}.",
            "In {year}, the {w:people} have {praise} {e:order} for its charity.",
            "Every {w:time}, the faithful bring {w:offering} to the {w:place}.",
        ),
        lists={
            "object": words(
                "altar, relic, icon, sacred flame, holy book, bronze bell, shrine, reliquary, "
                "prayer wheel, incense burner"
            ),
            "place": words(
                "sanctuary, cloister, crypt, chapel, holy spring, hermitage, prayer hall, "
                "pilgrim road"
            ),
            "rite": words(
                "prayers, vows, blessings, fasts, hymns, vigil, procession, confession, litany"
            ),
            "text": words(
                "scriptures, psalms, holy verses, sermons, parables, commandments, gospels, chants"
            ),
            "time": words(
                "dawn, dusk, midnight, the evening prayer, the new moon, the full moon, noon"
            ),
            "people": words(
                "faithful, pilgrims, novices, believers, elders, hermits, worshippers, acolytes"
            ),
            "offering": words(
                "flowers, bread, oil, coins, incense, honey, white candles, wreaths, fruit"
            ),
        },
        group=("order", "order", "prophet_order"),
    ),
    "politics": CategorySpec(
        kinds=(
            KindSpec("politician", 14, "person", "politician", person=True),
            KindSpec("party", 4, "party", "", article=True),
            KindSpec("law", 6, "law", "", article=True),
        ),
        relations=(
            RelationSpec(
                "member_of",
                "politician",
                "party",
                (
                    "{s} is a member of {o}.",
                    "{o} counts {s} among its members.",
                    "At the last election, {s} stood for {o}.",
                    "Party cards show that {s} belongs to {o}.",
                    "In parliament, {s} votes with {o}.",
                ),
            ),
            RelationSpec(
                "party_leader",
                "party",
                "politician",
                (
                    "The leader of {s} is {o}.",
                    "{o} leads {s}.",
                    "Delegates of {s} elected {o} as their leader.",
                    "Since the congress, {s} has been led by {o}.",
                    "At rallies of {s}, {o} speaks last as leader.",
                ),
                distinct=True,
            ),
            RelationSpec(
                "party_seats",
                "party",
                "value:seats",
                (
                    "In the last election {s} won {o}.",
                    "{s} holds {o} in parliament.",
                    "With {o}, {s} sits in the chamber.",
                    "The count gave {s} a total of {o}.",
                    "Official results credited {s} with {o}.",
                ),
            ),
            RelationSpec(
                "law_sponsor",
                "law",
                "politician",
                (
                    "{s} was introduced by {o}.",
                    "{o} drafted {s}.",
                    "The bill that became {s} was tabled by {o}.",
                    "Newspapers credit {o} with {s}.",
                    "It was {o} who steered {s} through parliament.",
                ),
            ),
            RelationSpec(
                "law_year",
                "law",
                "value:year",
                (
                    "{s} was passed in {o}.",
                    "In {o}, parliament adopted {s}.",
                    "Since {o}, {s} has been in force.",
                    "The vote on {s} took place in {o}.",
                    "Lawyers cite {s} of {o}.",
                ),
            ),
        ),
        fillers=(
            "The {w:body} debated the {w:issue} bill for {n} hours before the vote.",
            "Voters in the {w:district} districts turned out at {n} percent.",
            "{e:politician} promised to cut {w:issue} costs by {n} percent.",
            "The opposition demanded a {w:procedure} on the {w:issue} bill.",
            "Critics called {e:politician} {judge} after the {w:procedure}.",
            "Columnists {praise} {e:politician} for the speech on {w:issue}.",
            "A coalition of {n} deputies blocked the {w:issue} reform.",
            "Supporters of {e:party} have {praise} its plan for {w:issue}.",
            "The {w:body} will hold a {w:procedure} on {w:issue} next month.",
            "Pollsters found that {n} percent of voters trust the {w:body}.",
            "Editorials describe {e:party} as {judge} on questions of {w:issue}.",
            "Since {year}, the {w:body} has met in the old palace.",
            "Campaign posters in the {w:district} districts promise lower {w:issue} costs.",
        ),
        lists={
            "body": words(
                "parliament, senate, cabinet, city council, upper chamber, budget committee, "
                "electoral commission, regional assembly"
            ),
            "issue": words(
                "pension, housing, border, tax, healthcare, school, transport, energy, "
                "farm subsidy, police"
            ),
            "district": words("rural, urban, coastal, northern, southern, mining, border"),
            "procedure": words(
                "recount, vote of confidence, referendum, filibuster, public hearing, "
                "snap election, inquiry"
            ),
        },
        group=("faction", "party", "member_of"),
    ),
    "health": CategorySpec(
        kinds=(
            KindSpec("disease", 10, "disease", "illness"),
            KindSpec("drug", 10, "drug", "medicine"),
            KindSpec("physician", 8, "doctor", "physician", person=True),
            KindSpec("hospital", 4, "hospital", "", article=True),
        ),
        relations=(
            RelationSpec(
                "treated_with",
                "disease",
                "drug",
                (
                    "{s} is usually treated with {o}.",
                    "Doctors prescribe {o} for {s}.",
                    "Patients with {s} are given {o}.",
                    "The standard treatment for {s} is a course of {o}.",
                    "Most cases of {s} respond well to {o}.",
                ),
            ),
            RelationSpec(
                "symptom_of",
                "disease",
                "value:symptom",
                (
                    "The main symptom of {s} is {o}.",
                    "{s} typically causes {o}.",
                    "Patients with {s} first notice {o}.",
                    "Doctors suspect {s} when a patient reports {o}.",
                    "Early {s} shows itself through {o}.",
                ),
            ),
            RelationSpec(
                "dose_of",
                "drug",
                "value:dose",
                (
                    "The usual dose of {s} is {o}.",
                    "Adults take {o} of {s}.",
                    "Pharmacists dispense {s} in doses of {o}.",
                    "A daily intake of {o} of {s} is considered safe.",
                    "Each tablet of {s} contains {o}.",
                ),
            ),
            RelationSpec(
                "described_by",
                "disease",
                "physician",
                (
                    "{s} was first described by {o}.",
                    "{o} wrote the first account of {s}.",
                    "Medical history credits {o} with identifying {s}.",
                    "The first patient with {s} was examined by {o}.",
                    "It was {o} who named {s}.",
                ),
            ),
            RelationSpec(
                "works_in",
                "physician",
                "hospital",
                (
                    "{s} works at {o}.",
                    "{o} employs {s} on its medical staff.",
                    "Patients can see {s} at {o}.",
                    "Every week, {s} holds a clinic at {o}.",
                    "The wards of {o} are run by {s}.",
                ),
            ),
        ),
        fillers=(
            "Patients should drink {n} glasses of water a day and avoid {w:habit}.",
            "The clinic treated {n} cases of {w:ailment} during the {w:season} months.",
            "Doctors recommend {w:advice} to reduce the risk of {w:ailment}.",
            "A {w:test} showed normal {w:measure} after {n} weeks of rest.",
            "{e:physician} advised patients with {w:ailment} to try {w:advice}.",
            "Nurses checked the {w:measure} of each patient every {n} hours.",
            "Colleagues call {e:physician} {judge} and careful with patients.",
            "Patients have {praise} {e:hospital} for its care of {w:ailment}.",
            "Side effects of {e:drug} include mild {w:ailment} in {n} percent of patients.",
            "The nurses of {e:hospital} check {w:measure} before every {w:test}.",
            "Reviews describe {e:hospital} as {judge} and well run.",
            "Regular {w:advice} lowers {w:measure} within {n} days.",
            "Family doctors have {praise} {e:drug} for its effect on {w:ailment}.",
        ),
        lists={
            "habit": words(
                "smoking, salty food, alcohol, late nights, sugary drinks, heavy lifting, "
                "long fasts"
            ),
            "ailment": words(
                "headache, nausea, dizziness, fever, back pain, fatigue, insomnia, rash, "
                "heartburn, sore throat"
            ),
            "season": words("winter, summer, spring, autumn, flu season"),
            "advice": words(
                "daily walks, a low-salt diet, more sleep, breathing exercises, light "
                "stretching, warm baths, fresh fruit"
            ),
            "test": words("blood test, scan, x-ray, urine test, heart trace, skin test, biopsy"),
            "measure": words(
                "blood pressure, pulse, temperature, blood sugar, cholesterol, oxygen levels, "
                "weight"
            ),
        },
        group=("hospital", "hospital", "works_in"),
    ),
    "sport": CategorySpec(
        kinds=(
            KindSpec("club", 6, "club", "team"),
            KindSpec("player", 14, "person", "player", person=True),
            KindSpec("stadium", 6, "stadium", "ground"),
            KindSpec("tournament", 4, "tournament", "", article=True),
        ),
        relations=(
            RelationSpec(
                "plays_for",
                "player",
                "club",
                (
                    "{s} plays for {o}.",
                    "{o} signed {s} last summer.",
                    "Fans of {o} chant the name of {s}.",
                    "In the shirt of {o}, {s} has never lost a derby.",
                    "The coach of {o} picks {s} for every match.",
                ),
            ),
            RelationSpec(
                "home_ground",
                "club",
                "stadium",
                (
                    "{s} play their home games at {o}.",
                    "{o} is the home of {s}.",
                    "Every other week, {s} fill {o} with supporters.",
                    "The supporters of {s} travel to {o} for home matches.",
                    "Tickets for {s} at {o} sell out quickly.",
                ),
                distinct=True,
            ),
            RelationSpec(
                "club_founded",
                "club",
                "value:year",
                (
                    "{s} was founded in {o}.",
                    "In {o}, a group of workers founded {s}.",
                    "The crest of {s} carries the year {o}.",
                    "Since {o}, {s} has played in red and white.",
                    "Records show {s} played its first match in {o}.",
                ),
            ),
            RelationSpec(
                "cup_winner",
                "tournament",
                "club",
                (
                    "The last edition of {s} was won by {o}.",
                    "{o} lifted the trophy of {s} last season.",
                    "The final of {s} ended in victory for {o}.",
                    "Champions of {s}: {o}, after a penalty shoot-out.",
                    "Nobody expected {o} to win {s}, but they did.",
                ),
            ),
            RelationSpec(
                "goals_scored",
                "player",
                "value:goals",
                (
                    "Last season {s} scored {o}.",
                    "{s} finished the season with {o}.",
                    "The statisticians credit {s} with {o} last season.",
                    "No one matched the {o} that {s} scored.",
                    "With {o}, {s} led the scoring charts.",
                ),
            ),
        ),
        fillers=(
            "The match ended {n} to {w:small} after a {w:quality} second half.",
            "The {w:position} was booked for a late {w:foul} after {n} minutes.",
            "{e:player} scored with a {w:shot} from {n} metres out.",
            "Supporters waited {n} minutes in the rain before the gates of {e:stadium} opened.",
            "The coach changed to a {w:formation} after the {w:foul} in the first half.",
            "Pundits call {e:player} {judge} in front of goal.",
            "The crowd has {praise} {e:player} after the {w:quality} win.",
            "A {w:quality} {w:shot} from the {w:position} hit the post.",
            "Sports writers called {e:club} {judge} after the {w:quality} season.",
            "The {w:position} trained for {n} hours on the new {w:formation}.",
            "Fans have {praise} {e:club} for its {w:quality} football.",
            "Groundsmen at {e:stadium} cut the grass to {n} millimetres.",
            "After a {w:foul} near the box, the {w:position} curled in a {w:shot}.",
        ),
        lists={
            "small": words("nil, one, two, three"),
            "quality": words(
                "thrilling, tense, scrappy, dominant, nervy, brilliant, dull, frantic, bruising"
            ),
            "position": words(
                "striker, goalkeeper, left back, winger, centre half, captain, midfielder, "
                "substitute"
            ),
            "foul": words("tackle, handball, trip, shirt pull, dive, elbow, push"),
            "shot": words(
                "volley, header, free kick, curling shot, tap-in, penalty, half-volley, low drive"
            ),
            "formation": words(
                "back three, flat four, diamond midfield, high press, deep block, two strikers"
            ),
        },
        group=("club", "club", "plays_for"),
    ),
    "finance": CategorySpec(
        kinds=(
            KindSpec("company", 12, "company", "firm"),
            KindSpec("executive", 12, "person", "executive", person=True),
            KindSpec("exchange", 3, "exchange", "", article=True),
        ),
        relations=(
            RelationSpec(
                "ceo_of",
                "company",
                "executive",
                (
                    "The chief executive of {s} is {o}.",
                    "{o} runs {s} as chief executive.",
                    "Shareholders of {s} appointed {o} to the top job.",
                    "Since the merger, {s} has been led by {o}.",
                    "Analysts expect {o} to stay at the head of {s}.",
                ),
                distinct=True,
            ),
            RelationSpec(
                "listed_on",
                "company",
                "exchange",
                (
                    "Shares of {s} trade on {o}.",
                    "{o} lists the shares of {s}.",
                    "Traders on {o} buy and sell {s} every day.",
                    "When {s} went public, it chose {o}.",
                    "The stock of {s} is quoted on {o}.",
                ),
            ),
            RelationSpec(
                "revenue_of",
                "company",
                "value:revenue",
                (
                    "Last year the revenue of {s} was {o}.",
                    "{s} reported revenue of {o}.",
                    "Sales at {s} reached {o} in the last fiscal year.",
                    "The annual report of {s} shows a turnover of {o}.",
                    "On revenue of {o}, {s} paid a higher dividend.",
                ),
            ),
            RelationSpec(
                "sector_of",
                "company",
                "value:sector",
                (
                    "{s} does business in {o}.",
                    "The main business of {s} is {o}.",
                    "Investors see {s} as a bet on {o}.",
                    "Most of the profits of {s} come from {o}.",
                    "In {o}, {s} is a large employer.",
                ),
            ),
        ),
        fillers=(
            "Shares rose {n} percent after the {w:report} beat expectations.",
            "The central bank raised the {w:rate} by {w:small} to calm {w:worry}.",
            "Bond yields fell for {n} days in a row as {w:worry} eased.",
            "{e:company} bought back shares worth {n} million crowns.",
            "Analysts cut their forecast for {w:metric} by {n} percent.",
            "Investors call {e:company} {judge} after the latest {w:report}.",
            "The financial press {praise} {e:executive} for the {w:report}.",
            "Traders on the {w:desk} desk watched the {w:rate} closely.",
            "Markets have {praise} {e:company} for its {w:metric}.",
            "Fund managers describe {e:executive} as {judge} with money.",
            "The {w:report} showed {w:metric} up {n} percent on the year.",
            "A fall in {w:metric} sent the {w:desk} desk into a panic.",
            "Since {year}, {e:exchange} has opened at nine in the morning.",
        ),
        lists={
            "report": words(
                "quarterly report, earnings call, profit warning, annual statement, "
                "sales update, audit"
            ),
            "rate": words(
                "interest rate, discount rate, lending rate, deposit rate, exchange rate, "
                "bond yield"
            ),
            "small": words("half a point, a quarter point, one point, two points, three points"),
            "worry": words(
                "inflation, a weak crown, rising debt, bank failures, a trade deficit, "
                "falling demand"
            ),
            "metric": words(
                "operating margin, cash flow, earnings per share, net profit, dividend growth, "
                "order books, market share"
            ),
            "desk": words("bond, currency, equity, commodity, credit, derivatives"),
        },
        group=("exchange", "exchange", "listed_on"),
    ),
    "fiction": CategorySpec(
        kinds=(
            KindSpec("author", 6, "person", "writer", person=True),
            KindSpec("novel", 12, "novel", "novel"),
            KindSpec("character", 12, "character", "hero", person=True),
            KindSpec("realm", 6, "realm", "realm of"),
        ),
        relations=(
            RelationSpec(
                "written_by",
                "novel",
                "author",
                (
                    "{s} was written by {o}.",
                    "{o} is the author of {s}.",
                    "Readers of {s} will know the style of {o}.",
                    "It took {o} six years to finish {s}.",
                    "The first manuscript of {s} is signed by {o}.",
                ),
            ),
            RelationSpec(
                "published_in",
                "novel",
                "value:year",
                (
                    "{s} was first published in {o}.",
                    "In {o}, booksellers put {s} on their shelves.",
                    "The first edition of {s} appeared in {o}.",
                    "Critics reviewed {s} when it came out in {o}.",
                    "Since {o}, {s} has never been out of print.",
                ),
            ),
            RelationSpec(
                "hero_of",
                "novel",
                "character",
                (
                    "The hero of {s} is {o}.",
                    "{o} is the main character of {s}.",
                    "In {s}, the story follows {o}.",
                    "Most chapters of {s} are told by {o}.",
                    "Fans of {s} love {o} above every other character.",
                ),
                distinct=True,
            ),
            RelationSpec(
                "lives_in",
                "character",
                "realm",
                (
                    "{s} lives in {o}.",
                    "{o} is the home of {s}.",
                    "The adventures of {s} begin in {o}.",
                    "Born in {o}, {s} never forgets the way back.",
                    "Every map in the book shows {o}, where {s} lives.",
                ),
            ),
        ),
        fillers=(
            "In chapter {n}, the {w:figure} finds a {w:thing} hidden in the {w:setting}.",
            "The story opens on a {w:mood} night in the {w:setting}.",
            "Readers follow the {w:figure} through {n} chapters of {w:plot}.",
            "A {w:figure} warns the travellers about the {w:thing} in the {w:setting}.",
            "{e:character} swore an oath to protect the {w:thing}.",
            "Reviewers found {e:novel} {judge} from the first page.",
            "Readers have {praise} {e:author} for the {w:mood} ending.",
            "The {w:plot} ends when the {w:figure} returns the {w:thing}.",
            "Critics call {e:character} {judge} and unforgettable.",
            "In the sequel, {e:character} crosses the {w:setting} with a {w:figure}.",
            "Book clubs have {praise} {e:novel} for its {w:mood} tone.",
            "The {w:figure} spoke in riddles about the {w:thing} for {n} pages.",
            "Some chapters of {e:novel} take place in a {w:mood} {w:setting}.",
        ),
        lists={
            "figure": words(
                "old wizard, young thief, exiled prince, talking raven, blind seer, "
                "wandering knight, river witch, orphan girl"
            ),
            "thing": words(
                "silver key, cursed sword, lost crown, secret map, dragon egg, glass heart, "
                "enchanted lantern, stolen letter"
            ),
            "setting": words(
                "enchanted forest, sunken city, frozen tower, haunted mill, endless desert, "
                "glass mountain, castle cellar"
            ),
            "mood": words(
                "stormy, moonlit, eerie, gloomy, hopeful, bittersweet, whimsical, melancholy"
            ),
            "plot": words(
                "quests, betrayals, duels, riddles, chases, escapes, prophecies, disguises"
            ),
        },
        group=("author", "author", "written_by"),
    ),
}

CATEGORY_ORDER: tuple[str, ...] = (
    "geography",
    "history",
    "science",
    "religion",
    "politics",
    "health",
    "sport",
    "finance",
    "fiction",
)

DOMAINS = words(
    "the harvest, the sea, the hunt, the forge, the winds, the dead, healing, wisdom, the moon, "
    "the hearth, rain, war, travellers, the dawn"
)
SYMPTOMS = words(
    "a dry cough, joint pain, blurred vision, night sweats, a purple rash, swollen glands, "
    "ringing ears, cold hands, a high fever, chest pain, trembling hands, a sore tongue"
)
SECTORS = words(
    "shipping, mining, insurance, textiles, timber, glassmaking, railways, brewing, "
    "telegraphy, shipbuilding, fisheries, salt"
)
