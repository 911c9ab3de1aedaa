"""Slot error rate (SER): does an output say what its MR says, no more and no less?

BLEU and friends reward fluent overlap with references and barely notice a dropped or invented
fact, so E2E papers also report SER. This is a rule-based checker for the eight E2E slots: each
slot value has regular expressions for its usual wordings ("familyFriendly[no]" -> "not
family-friendly", "adults only"; "priceRange[cheap]" -> "low price", "inexpensive"). For one output:

* **missing**: an MR value the output never expresses;
* **wrong**: an MR slot expressed with another value ("expensive" for priceRange[cheap]);
* **added**: a slot value the MR does not contain (a hallucinated fact);

and SER = (missing + wrong + added) / number of MR slot values, over a corpus.

Values on one scale are treated as the same fact: cheap = less than £20, moderate = £20-25,
high = more than £30 (priceRange), and low = 1 out of 5, average = 3 out of 5, high = 5 out of 5
(customer rating). "restaurant" is a generic word, so it satisfies eatType[restaurant] but never
counts as a wrong or added eatType. Rules can miss rare paraphrases; the tests list what they cover.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from superlora.tasks.e2e.data import parse_mr_pairs

# Venue names of the E2E data (name and near values). They are found first and masked, so words
# inside them ("Café Rouge", "Raja Indian Cuisine", "Burger King") are not read as slot values.
KNOWN_VENUES: tuple[str, ...] = (
    "Alimentum", "Aromi", "Bibimbap House", "Blue Spice", "Browns Cambridge", "Clowns", "Cocum", "Cotto",
    "Fitzbillies", "Giraffe", "Green Man", "Loch Fyne", "Midsummer House", "Strada", "Taste of Cambridge",
    "The Cambridge Blue", "The Cricketers", "The Dumpling Tree", "The Eagle", "The Golden Curry",
    "The Golden Palace", "The Mill", "The Olive Grove", "The Phoenix", "The Plough", "The Punter",
    "The Rice Boat", "The Twenty Two", "The Vaults", "The Waterman", "The Wrestlers",
    "Travellers Rest Beefeater", "Wildwood", "Zizzi", "All Bar One", "Avalon", "Burger King",
    "Café Adriatic", "Café Brazil", "Café Rouge", "Café Sicilia", "Clare Hall", "Crowne Plaza Hotel",
    "Express by Holiday Inn", "Rainbow Vegetarian Café", "Raja Indian Cuisine", "Ranch", "The Bakers",
    "The Portland Arms", "The Six Bells", "The Sorrento", "Yippee Noodle Bar",
)  # fmt: skip

# MR values that name the same point of a scale (see module docstring).
CANONICAL: dict[str, dict[str, str]] = {
    "priceRange": {
        "cheap": "low", "less than £20": "low", "moderate": "mid", "£20-25": "mid",
        "high": "high", "more than £30": "high",
    },
    "customer rating": {
        "low": "low", "1 out of 5": "low", "average": "average", "3 out of 5": "average",
        "high": "high", "5 out of 5": "high",
    },
    "food": {v: v for v in ("chinese", "english", "fast food", "french", "indian", "italian", "japanese")},
    "eatType": {"coffee shop": "coffee shop", "pub": "pub", "restaurant": "restaurant"},
    "area": {"city centre": "city centre", "riverside": "riverside"},
    "familyFriendly": {"yes": "yes", "no": "no"},
}  # fmt: skip
# Found values that satisfy an MR value but are never wrong or added on their own.
WEAK = {("eatType", "restaurant")}

_NUM = {word: str(i) for i, word in enumerate(("one", "two", "three", "four", "five"), 1)} | {
    str(i): str(i) for i in range(1, 6)
}
_STARS = {"1": "low", "2": "2 of 5", "3": "average", "4": "4 of 5", "5": "high"}
_NEG = r"(?:\bnot\b|\bnon\b|n't\b|\bnever\b|\bno\b)"
_ADV = r"(?:(?:very|really|so|too|that|particularly|exactly|a|an|the|at all|overly)\s+)*"
_KIDS = r"(?:famil(?:y|ies)|kids?|child(?:ren)?|children's|kid's|child's)"
_RATING = r"(?:(?:customer|user|consumer|guest)\s+)?(?:ratings?|rate[sd]?|reviews?|reviewed|scores?|feedback)"
_PRICE = r"(?:price[sd]?|pricing|cost(?:s|ing)?|price\s+range|price\s+point|price\s+bracket)"
_BE = r"(?:(?:is|are|was|were|being|of|as|at|it)\s+)?"

# slot -> list of (canonical value, pattern). Patterns run on lowercased, accent-free text.
_PATTERNS: dict[str, list[tuple[str, str]]] = {
    "eatType": [
        ("coffee shop", r"\bcoffee[- ]?(?:shop|house|bar)s?\b|\bcafes?\b|\bcoffee\s+places?\b"),
        ("pub", r"\b(?:gastro)?pubs?\b|\btaverns?\b|\bbars?\b"),
        ("restaurant", r"\brestaurants?\b|\beater(?:y|ies)\b|\bbistros?\b|\bdiners?\b"),
    ],
    "food": [
        ("chinese", r"\bchinese\b"),
        ("english", r"\benglish\b|\bbritish\b"),
        ("fast food", r"\bfast[- ]?foods?\b"),
        ("french", r"\bfrench\b"),
        ("indian", r"\bindian\b|\bcurr(?:y|ies)\b"),
        ("italian", r"\bitalian\b|\bpasta\b|\bpizzas?\b"),
        ("japanese", r"\bjapanese\b|\bsushi\b"),
    ],
    "priceRange": [
        ("low", r"\bcheap(?:ly|er|est)?\b|\binexpensive(?:ly)?\b|\baffordabl[ey]\b|\bbudget\b"),
        ("low", rf"\blow(?:er)?[- ]?(?:{_PRICE}|priced)\b|\b{_PRICE}\s+{_BE}{_ADV}low\b|\bpriced\s+{_ADV}low\b"),
        ("low", rf"{_NEG}\s+{_ADV}(?:expensive|pricey|high[- ]priced)\b|\bless\s+expensive\b"),
        (
            "low",
            r"\b(?:less\s+than|under|below|lower\s+than|up\s+to|no\s+more\s+than|cheaper\s+than)\s+(?:about\s+)?"
            r"(?:£\s*|l)?(?:20|twenty)\b|£\s*20\s+or\s+(?:less|under)\b",
        ),
        (
            "mid",
            rf"\bmoderate(?:ly)?\b(?!\s*(?:customer\s+)?rat)|\b(?:mid|middle|medium|average|reasonabl[ey]|fair(?:ly)?|"
            rf"mid[- ]range|mid[- ]priced)[- ]?(?:{_PRICE}|priced|range)\b|\b{_PRICE}\s+{_BE}{_ADV}"
            r"(?:moderate|average|medium|mid[- ]range|reasonable)\b",
        ),
        ("mid", r"(?:£\s*|\b)20\s*(?:-|to|and)\s*(?:£\s*)?25\b|\btwenty\s+(?:to|and)\s+twenty[- ]five\b"),
        (
            "high",
            rf"\bhigh(?:er|ly)?[- ]?(?:{_PRICE}|priced|end)\b|\b{_PRICE}\s+{_BE}{_ADV}high\b"
            rf"|\bpriced\s+{_ADV}high(?:ly)?\b",
        ),
        ("high", r"\bexpensive\b|\bpric(?:e)?y\b|\bcostly\b|\bupscale\b|\bluxur(?:y|ious)\b"),
        (
            "high",
            r"\b(?:more\s+than|over|above|greater\s+than|in\s+excess\s+of|at\s+least|upwards\s+of|exceeding)\s+"
            r"(?:£\s*|l)?(?:30|thirty)\b|£\s*30\s*(?:\+|plus\b|or\s+(?:more|above|over)\b)",
        ),
    ],
    "customer rating": [
        (
            "low",
            rf"\b(?:low(?:ly)?|poor(?:ly)?|bad(?:ly)?|terrible|negative)[- ]?{_RATING}\b|\b{_RATING}\s+{_BE}{_ADV}"
            r"(?:low(?:ly)?|poor(?:ly)?|bad(?:ly)?)\b",
        ),
        (
            "average",
            rf"\baverage(?:ly)?[- ]?{_RATING}\b|\b{_RATING}\s+{_BE}{_ADV}(?:average|mediocre|moderate(?:ly)?|ok|okay)\b"
            r"|\bmediocre\b",
        ),
        (
            "high",
            rf"\b(?:high(?:ly)?|good|great|excellent|top|well|positive|outstanding)[- ]?{_RATING}\b|\b{_RATING}\s+{_BE}"
            rf"{_ADV}(?:high(?:ly)?|well|good|great|excellent)\b",
        ),
        (
            "stars",
            r"\b([1-5]|one|two|three|four|five)(?:[- ]stars?)?\s*(?:out\s+of|/|of)\s*(?:5|five)\b"
            r"|\b([1-5]|one|two|three|four|five)[- ]stars?\b",
        ),
    ],
    "area": [
        (
            "city centre",
            r"\b(?:city|town)[- ]?cent(?:re|er)\b|\bcent(?:re|er)\s+of\s+(?:the\s+)?(?:city|town)\b"
            r"|\bdowntown\b|\bcentral(?:ly)?\b|\bin\s+the\s+cent(?:re|er)\b",
        ),
        ("riverside", r"\briver(?:[- ]?(?:side|front|bank))?\b|\bwaterfront\b"),
    ],
    "familyFriendly": [
        ("yes", rf"\b{_KIDS}[- ]?(?:friendly|oriented|orientated|welcoming)\b"),
        ("yes", rf"\b(?:welcom(?:es?|ing)|allows?|accepts?|caters?\s+(?:to|for))\s+(?:the\s+)?(?:whole\s+)?{_KIDS}\b"),
        ("yes", rf"\b{_KIDS}\s+(?:are\s+|is\s+)?(?:welcome[d]?|allowed|permitted)\b"),
        (
            "yes",
            rf"\b(?:good|great|suitable|ideal|perfect|fit|appropriate|fine|place|fun|somewhere|option)\s+for\s+"
            rf"(?:the\s+)?(?:whole\s+)?(?:a\s+)?{_KIDS}\b",
        ),
        ("no", rf"{_NEG}[- ]?{_ADV}{_KIDS}[- ]?(?:friendly|oriented|orientated)\b"),
        ("no", rf"\badults?[- ]only\b|\b(?:no|without)\s+{_KIDS}\b|\bchild[- ]?free\b|\b{_KIDS}[- ]unfriendly\b"),
        (
            "no",
            rf"{_NEG}\s+{_ADV}(?:suitable|good|ideal|appropriate|recommended|great|meant|intended|geared|aimed|"
            rf"welcoming|catered|for)\s+(?:to(?:wards)?\s+|for\s+|at\s+)?(?:the\s+)?(?:whole\s+)?{_KIDS}\b",
        ),
        ("no", rf"\b{_KIDS}\s+(?:are\s+|is\s+)?{_NEG}\s+{_ADV}(?:welcome[d]?|allowed|permitted)\b"),
        ("no", rf"{_NEG}\s+(?:allow|welcome|cater\s+(?:to|for)|accept|permit)\s+(?:the\s+)?{_KIDS}\b"),
    ],
}
_COMPILED = {slot: [(value, re.compile(p)) for value, p in pats] for slot, pats in _PATTERNS.items()}
# A negation earlier in the same clause flips a "yes" family mention ("is not really a family place").
_CLAUSE_NEGATION = re.compile(rf"{_NEG}\b(?![^,.;!?]*\b(?:and|but|while|although)\b)[^,.;!?]*$")


def normalize(text: str) -> str:
    """Lowercase, strip accents (café -> cafe), unify apostrophes, collapse whitespace."""
    text = unicodedata.normalize("NFKD", text.replace("’", "'").replace("‘", "'"))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return " ".join(text.lower().split())


def _venue_pattern(venue: str) -> re.Pattern[str]:
    words = normalize(venue).replace("'", "").split()
    if words and words[0] == "the":
        words = words[1:]
        prefix = r"(?:the\s+)?"
    else:
        prefix = ""
    # "Browns" may be written "Brown's"; words may be joined by spaces or hyphens.
    body = r"[\s-]+".join(re.escape(w[:-1]) + "'?s" if w.endswith("s") else re.escape(w) for w in words)
    return re.compile(rf"\b{prefix}{body}\b")


@dataclass
class SlotCheck:
    """Slot errors of one output. Entries read ``slot[value]`` (wrong: ``slot[value] -> said``)."""

    missing: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    slots: int = 0

    @property
    def errors(self) -> int:
        return len(self.missing) + len(self.wrong) + len(self.added)


@dataclass
class SERReport:
    """Corpus slot error rate with its parts and the per-output checks."""

    rate: float
    missing: int
    wrong: int
    added: int
    slots: int
    examples: list[SlotCheck]

    def summary(self) -> dict[str, float | int]:
        return {
            "SER": self.rate,
            "missing": self.missing,
            "wrong": self.wrong,
            "added": self.added,
            "slots": self.slots,
        }


def _find(text: str) -> dict[str, list[str]]:
    """Canonical values mentioned per slot; where matches overlap the longest wins."""
    spans: list[tuple[int, int, str, str]] = []
    for slot, patterns in _COMPILED.items():
        for value, pattern in patterns:
            for m in pattern.finditer(text):
                found = value
                if value == "stars":
                    found = _STARS[_NUM[m.group(1) or m.group(2)]]
                elif slot == "familyFriendly" and value == "yes" and _CLAUSE_NEGATION.search(text[: m.start()]):
                    found = "no"
                spans.append((m.start(), m.end(), slot, found))
    spans.sort(key=lambda s: (-(s[1] - s[0]), s[0]))
    taken: list[tuple[int, int]] = []
    found_by_slot: dict[str, list[str]] = {}
    for start, end, slot, value in spans:
        if any(start < e and s < end for s, e in taken):
            continue
        taken.append((start, end))
        found_by_slot.setdefault(slot, [])
        if value not in found_by_slot[slot]:
            found_by_slot[slot].append(value)
    return found_by_slot


def _check_venues(mr: list[tuple[str, str]], text: str, check: SlotCheck) -> str:
    """Match name/near values and other known venues; returns the text with venues masked."""
    mr_venues = {normalize(v) for s, v in mr if s in ("name", "near")}
    candidates = sorted({*KNOWN_VENUES, *(v for s, v in mr if s in ("name", "near"))}, key=len, reverse=True)
    found: set[str] = set()
    others: list[str] = []
    for venue in candidates:
        pattern = _venue_pattern(venue)
        if pattern.search(text):
            key = normalize(venue)
            if key in mr_venues:
                found.add(key)
            elif venue not in others:
                others.append(venue)
            text = pattern.sub(" _ ", text)
    has = {s for s, _ in mr}
    for slot, value in mr:
        if slot not in ("name", "near") or normalize(value) in found:
            continue
        if others:
            check.wrong.append(f"{slot}[{value}] -> {others.pop(0)}")
        else:
            check.missing.append(f"{slot}[{value}]")
    for venue in others:
        check.added.append(f"{'name' if 'name' not in has else 'near'}[{venue}]")
    return text


def check_output(mr: str | Iterable[tuple[str, str]], output: str) -> SlotCheck:
    """Missing, wrong and added slot values of one output for its MR (string or (slot, value) pairs)."""
    pairs = parse_mr_pairs(mr) if isinstance(mr, str) else list(mr)
    check = SlotCheck(slots=len(pairs))
    text = _check_venues(pairs, normalize(output), check)
    said = _find(text)
    for slot in CANONICAL:
        wanted = [(v, CANONICAL[slot].get(v.lower(), v.lower())) for s, v in pairs if s == slot]
        heard = list(said.get(slot, []))
        unmatched = []
        for value, canon in wanted:
            if canon in heard:
                heard.remove(canon)
            else:
                unmatched.append(value)
        strong = [h for h in heard if (slot, h) not in WEAK]
        for value in unmatched:
            if strong:
                check.wrong.append(f"{slot}[{value}] -> {strong.pop(0)}")
            else:
                check.missing.append(f"{slot}[{value}]")
        check.added.extend(f"{slot}[{h}]" for h in strong)
    return check


def slot_error_rate(mrs: Sequence[str], outputs: Sequence[str]) -> SERReport:
    """Corpus SER: all errors over all MR slot values, plus each output's check."""
    if len(mrs) != len(outputs):
        raise ValueError(f"{len(outputs)} outputs for {len(mrs)} MRs")
    checks = [check_output(mr, out) for mr, out in zip(mrs, outputs, strict=True)]
    slots = sum(c.slots for c in checks)
    missing = sum(len(c.missing) for c in checks)
    wrong = sum(len(c.wrong) for c in checks)
    added = sum(len(c.added) for c in checks)
    rate = (missing + wrong + added) / slots if slots else 0.0
    return SERReport(rate, missing, wrong, added, slots, checks)
