"""Numbers and data lists as people write them in prose, not only in brackets.

`read_numbers(text)` finds every number (signs, the Unicode minus, ".5", exponents, thousands separators
"1,250") and groups the ones written as a list into `Series`: numbers joined only by commas, semicolons,
tabs, line breaks, spaces, "and" or a repeated unit ("12.1 mm, 12.4 mm"), each with the label written before
it ("Machine 1:", "HT-A:", "before", "x =", "Group 2 is"). What is not in a list is a scalar: alpha, "95%",
a sample size, a year, a spec limit; the task reader gives scalars their roles by the words around them.

The rules, and the cases that decided them:
  - a list needs 3 numbers, or 2 when it is bracketed or labelled ("x = 1, 2"): "between 10 and 20" is a
    range, not data;
  - a number followed by ":" "=" or an unopened ")" is a label's ("Machine 1:", "Day 2: 9", "2) 20.3"), never
    data;
  - so is a whole number that a space, not a separator, joins to a list of three or more ("Plot 1 11.2,
    11.6, 12.9", "per lot of 80 9, 2, 4", "Reactor 1 .24 / .28 / .28");
  - "/" and "|" separate groups ("11, 12, 13 / 15, 16, 14"): "4/200" is a proportion; only a chain of
    three or more numbers joined by nothing but a spaced " / " is one list ("13.7 / 12.8 / 12.2");
  - "and" ends a list ("10.2, 10.4 and 10.1") unless a comma follows it, where it separates two lists
    ("5, 6, 7 and 8, 9, 10");
  - "1,250" is one thousand two hundred and fifty unless it sits in brackets written without spaces
    ("[100,200,300]" is three numbers), runs to five groups or more ("131,154,153,156,155" is five numbers,
    not 131 quadrillion), or the text joins numbers elsewhere with commas that cannot be thousands
    separators ("10.2,10.4,9.9" or "12,7,9": then "155,149,142" in it is three numbers too);
  - a percentage joins only other percentages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# A number: optional sign (ASCII or Unicode minus), digits with optional thousands groups, decimals, exponent.
# Not preceded by a letter, digit or dot: "t-test", "A2", "x1" and "2-sided"'s hyphen give no numbers.
_NUM_RE = re.compile(r"(?<![\w.])[-−+]?(?:\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?(?![\w])")
_NUM_LOOSE_RE = re.compile(r"[-−+]?(?:\d+(?:\.\d+)?|\.\d+)")
# What may stand between two items of one list: a separator, optionally after a repeated unit.
_UNIT = r"(?!(?:and|with|vs|or|to|from|on|in|at|of|the|for|is|was|by|times|plus|minus)\b)(?:[A-Za-z°µμΩ/]{1,6}\.?|°\s?[CF])"
_JOIN_RE = re.compile(rf"^\s*(?:{_UNIT}\s*)?(?P<sep>[,;])\s*(?:and\s+)?$|^\s*(?:{_UNIT}\s+)?(?P<and>and|&)\s*$|^\s+$|"
                      rf"^(?:\s*{_UNIT})?\s+(?P<slash>/)\s+$")
_LABEL_END_RE = re.compile(r"^\s*(?:[:=]|\))\s*[-−+\[(]?\.?\d")


@dataclass
class Num:
    """One number as written: its value, where it is, and whether it is a percentage."""

    value: float
    start: int
    end: int
    text: str
    percent: bool = False


@dataclass
class Series:
    """A list of numbers written together, with the label written before it (lower case, or None)."""

    values: list[float]
    label: str | None
    start: int
    end: int
    bracketed: bool = False
    items: list[Num] = field(default_factory=list, repr=False)


@dataclass
class Numbers:
    """Every number of a text, its lists, and the numbers outside any list (scalars)."""

    numbers: list[Num]
    series: list[Series]
    scalars: list[Num]

    def values(self) -> list[float]:
        return [n.value for n in self.numbers]


def _inside_brackets(text: str, pos: int) -> tuple[int, int] | None:
    """(open, close) of the [..] or (..) around `pos`, or None."""
    depth = 0
    for i in range(pos - 1, -1, -1):
        c = text[i]
        if c in ")]":
            depth += 1
        elif c in "([":
            if depth == 0:
                close = text.find("]" if c == "[" else ")", pos)
                return (i, close) if close >= 0 else None
            depth -= 1
    return None


# A comma between digits that no thousands separator writes: "10.2,10.4", "12,7", "1234,5678", "5,12".
_COMPACT_COMMA_RE = re.compile(r"\d\.\d+,\d|(?<![\d,])\d{4,},\d|\d,(?:\d{1,2}|\d{4,})(?![\d.])|\d,\d+\.\d+,\d")


def _tokens(text: str) -> list[Num]:
    out: list[Num] = []
    compact = _COMPACT_COMMA_RE.search(text) is not None  # the text writes lists as "1,2,3"
    for m in _NUM_RE.finditer(text):
        s = m.group(0)
        pieces = [(s, m.start())]
        if "," in s:
            box = _inside_brackets(text, m.start())
            if compact or s.count(",") >= 4 or (box is not None and ", " not in text[box[0]:box[1]]):
                # "[100,200,300]", "131,154,153,156,155": numbers of a list, not one number
                pieces = [(p.group(0), m.start() + p.start()) for p in _NUM_LOOSE_RE.finditer(s)]
        for piece, start in pieces:
            end = start + len(piece)
            try:
                value = float(piece.replace(",", "").replace("−", "-"))
            except ValueError:
                continue
            out.append(Num(value, start, end, piece, text[end:end + 2].lstrip().startswith("%")))
    return out


def _label(text: str, start: int, floor: int) -> str | None:
    """The label written just before a list ("machine 1", "ht-a", "before", "x"), lower case."""
    window = text[floor:start]
    window = re.split(r"[.!?](?:\s|$)|\n", window)[-1]
    window = re.sub(r"[\s\[(:=|\-–—]+$", "", window)
    window = re.sub(r"(?:^|\s+)(?:is|are|was|were|had|has|gave|of|with|vs|versus|against|and)$", "", window.strip(),
                    flags=re.IGNORECASE)
    words = re.findall(r"[A-Za-z][\w\-]*|\d+", window)
    if not words:
        return None
    tail = words[-3:]
    # "Machine 1" and "Group 2" keep their number; a label is at most three words
    return " ".join(tail).lower()


def read_numbers(text: str) -> Numbers:
    """The numbers of `text`, grouped into lists and scalars (see the module docstring)."""
    nums = _tokens(text)
    groups: list[list[Num]] = []
    joints: list[list[str]] = []  # per group, how each item joins the previous: "sep", "and", "space", "slash"
    for i, n in enumerate(nums):
        is_label = bool(_LABEL_END_RE.match(text[n.end:n.end + 8])) and not (
            text[n.end:n.end + 2].strip().startswith(")") and _inside_brackets(text, n.start))
        if is_label:
            groups.append([])  # a label's number stands alone and ends the list before it
            joints.append([])
            continue
        prev = nums[i - 1] if i else None
        gap = text[prev.end:n.start] if prev else None
        m = _JOIN_RE.match(gap) if gap is not None else None
        if m and groups and groups[-1] and groups[-1][-1] is prev and prev.percent == n.percent:
            groups[-1].append(n)
            joints[-1].append("and" if m.group("and") else "sep" if m.group("sep") else
                              "slash" if m.group("slash") else "space")
        else:
            groups.append([n])
            joints.append([])
    # "5, 6, 7 and 8, 9, 10": an "and" followed by more commas separates two lists; so does a "/" unless it
    # alone joins three or more numbers
    split: list[list[Num]] = []
    labels: set[int] = set()  # label numbers split off a list: the list's label still reads through them
    for g, js in zip(groups, joints):
        if len(js) >= 3 and js[0] == "space" and (
                ((set(js[1:]) <= {"sep", "and"} or set(js[1:]) == {"slash"}) and g[0].value.is_integer())
                or _named_row(text, g, js)):
            # "Plot 1 11.2, 11.6, 12.9" or "per lot of 80 9, 2, 4": the number before the commas is a label's;
            # so is "Reactor 1" before "21.30 28.40 27.50" (see _named_row)
            split.append(g[:1])
            labels.add(id(g[0]))
            g, js = g[1:], js[1:]
        cur = [g[0]] if g else []
        for k in range(1, len(g)):
            if (js[k - 1] == "and" and "sep" in js[k:]) or (js[k - 1] == "slash" and (set(js) != {"slash"} or len(g) < 3)):
                split.append(cur)
                cur = []
            cur.append(g[k])
        if cur:
            split.append(cur)
    series: list[Series] = []
    scalars: list[Num] = []
    floor = 0
    for g in split:
        start, end = g[0].start, g[-1].end
        box = _inside_brackets(text, start)
        bracketed = box is not None and box[1] >= end - 1
        label = _label(text, start, floor)
        marked = bool(re.search(r"[:=]\s*[\[(]?\s*$|\b(?:is|are|were|was|of)\s*$", text[max(floor, start - 12):start]))
        need = 2 if (bracketed or (label and marked)) else 3
        if len(g) >= need and not (g[0].percent and len(g) < 3):
            series.append(Series([n.value for n in g], label, start, end, bracketed, g))
        else:
            scalars += g
        if not (len(g) == 1 and id(g[0]) in labels):
            floor = end
    series = _merge_labelled_scalars(text, series, scalars)
    series = _counted_row_labels(text, series)
    in_series = {id(n) for s in series for n in s.items}
    scalars = [n for n in nums if id(n) not in in_series]
    return Numbers(nums, series, scalars)


def _named_row(text: str, g: list[Num], js: list[str]) -> bool:
    """"Reactor 1 21.30 28.40 27.50": a capitalised name and a small whole number, then three or more numbers
    joined by spaces alone and all written with the same number of decimals, which the first is not: the
    first is the row's label. ("Values 3 4.5 5.5 6.5" and "data 10 10.5 11" stay one list.)"""
    if set(js) != {"space"} or not g[0].text.isdigit() or int(g[0].text) > 99:
        return False
    decimals = {len(n.text.split(".")[1]) if "." in n.text else 0 for n in g[1:]}
    if len(decimals) != 1 or decimals == {0}:
        return False
    m = re.search(r"\b([A-Z][A-Za-z-]*)\s+$", text[max(0, g[0].start - 24):g[0].start])
    return m is not None and m.group(1).lower() not in _DATA_WORDS


# Words that introduce data rather than name a row: "Values 3 4.5 5.5" is four values.
_DATA_WORDS = frozenset({"data", "values", "readings", "measurements", "observations", "samples", "sample",
                         "times", "results", "numbers", "scores", "counts", "weights", "x", "y"})


def _merge_labelled_scalars(text: str, series: list[Series], scalars: list[Num]) -> list[Series]:
    """"Day 1: 7, Day 2: 9, Day 3: 6": one value per label, the labels counting up, is one list."""
    pattern = re.compile(r"([A-Za-z]+)\s*(\d+)\s*[:=]\s*([-−+]?(?:\d+(?:\.\d+)?|\.\d+))")
    hits = list(pattern.finditer(text))
    if len(hits) < 3 or len({h.group(1).lower() for h in hits}) != 1:
        return series
    if [int(h.group(2)) for h in hits] != list(range(int(hits[0].group(2)), int(hits[0].group(2)) + len(hits))):
        return series
    items = [n for h in hits for n in scalars if n.start == h.start(3)]
    if len(items) != len(hits):
        return series
    return [Series([n.value for n in items], hits[0].group(1).lower(), items[0].start, items[-1].end, False, items)] + \
        [s for s in series if not (items[0].start <= s.start <= items[-1].end)]


def _counted_row_labels(text: str, series: list[Series]) -> list[Series]:
    """"Plant 1 8.2 8.5 ... / Plant 2 9.0 9.2 ...": rows that open with the same word and a count 1, 2, 3 keep the
    count in their label, not in their data."""
    heads = []
    for s in series:
        m = re.search(r"([A-Za-z]+)\s+$", text[max(0, s.start - 30):s.start])
        first = s.items[0]
        if not m or not first.value.is_integer() or len(s.values) < 3:
            return series
        heads.append((m.group(1).lower(), int(first.value)))
    if len(heads) < 2 or len({w for w, _ in heads}) != 1 or [k for _, k in heads] != list(range(1, len(heads) + 1)):
        return series
    return [Series(s.values[1:], f"{w} {k}", s.items[1].start, s.end, s.bracketed, s.items[1:])
            for s, (w, k) in zip(series, heads)]
