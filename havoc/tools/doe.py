"""Design of experiments: the designs, coded and natural units, randomised run order, and the analysis
of two-level factorials.

Conventions, checked against the NIST/SEMATECH e-Handbook of Statistical Methods (section 5.3.3):
- Two-level designs are listed in standard (Yates) order: the first factor alternates fastest.
- Factor letters are A, B, C, ... by position, skipping I (which names the identity in a defining
  relation), as NIST and Minitab do.
- Fractional factorials are built from an explicit generator table (`generators=["D=ABC"]`). Without one,
  the design comes from NIST's table of useful fractional factorial designs (the same generators Minitab
  lists), never from a search: some automatic pickers return designs of lower resolution than the best.
- Centre points default to the e-Handbook's counts: Box-Behnken 3 factors 15 runs (3 centre points), 4 → 27
  (3), 5 → 46 (6), 6 → 54 (6), 7 → 62 (6); central composite 2 factors 13 runs (5), 3 → 20 (6), 4 → 30 (6),
  5 → 52 (10), 6 → 91 (15), and with a half-fraction cube 5 → 33 (7), 6 → 54 (10). Libraries differ here
  (pyDOE3's `ccdesign` defaults to 4 + 4 centre points and the "orthogonal" alpha; its `bbdesign` builds
  a 66-run design for 6 factors where Box and Behnken's has 54), which is why these are written out.
- Central composite alpha is stated in every result: rotatable = (factorial runs)^(1/4), orthogonal,
  face-centred (1), or a number; inscribed designs scale the whole design by 1/alpha.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

from havoc.errors import ToolError
from havoc.tools._common import as_vector, check_alpha, fmt, fmt_p, jsonable, names_unique

LETTERS = "ABCDEFGHJKLMNOPQRSTUVWXYZ"  # no I: it is the identity in a defining relation
MAX_FACTORS = 23  # a 24-run Plackett-Burman design screens 23
MAX_RUNS = 4096

# NIST/SEMATECH e-Handbook 5.3.3.4.7, "Summary tables of useful fractional factorial designs".
FRACTION_TABLE: dict[int, dict[int, list[str]]] = {
    3: {4: ["C=AB"]},
    4: {8: ["D=ABC"]},
    5: {8: ["D=AB", "E=AC"], 16: ["E=ABCD"]},
    6: {8: ["D=AB", "E=AC", "F=BC"], 16: ["E=ABC", "F=BCD"], 32: ["F=ABCDE"]},
    7: {8: ["D=AB", "E=AC", "F=BC", "G=ABC"], 16: ["E=ABC", "F=BCD", "G=ACD"], 32: ["F=ABCD", "G=ABDE"],
        64: ["G=ABCDEF"]},
    8: {16: ["E=BCD", "F=ACD", "G=ABC", "H=ABD"], 32: ["F=ABC", "G=ABD", "H=BCDE"], 64: ["G=ABCD", "H=ABEF"],
        128: ["H=ABCDEFG"]},
}

# Plackett & Burman (1946): the first row of each cyclic design; the other rows are its cyclic shifts and
# the last row is all minus.
PB_GENERATORS = {
    8: "+++-+--",
    12: "++-+++---+-",
    16: "++++-+-++--+---",
    20: "++--++++-+-+----++-",
    24: "+++++-+-++--++--+-+----",
}

BB_CENTER = {3: 3, 4: 3, 5: 6, 6: 6, 7: 6}
# Box & Behnken (1960): 6 and 7 factors use three-factor blocks (for 7, the Fano plane), not all pairs.
BB_BLOCKS = {
    6: [(0, 1, 3), (1, 2, 4), (2, 3, 5), (0, 3, 4), (1, 4, 5), (0, 2, 5)],
    7: [(3, 4, 5), (0, 5, 6), (1, 4, 6), (0, 1, 3), (2, 3, 6), (0, 2, 4), (1, 2, 5)],
}
CCD_CENTER_FULL = {2: 5, 3: 6, 4: 6, 5: 10, 6: 15}
CCD_CENTER_HALF = {5: 7, 6: 10}
CCD_HALF_GENERATORS = {5: ["E=ABCD"], 6: ["F=ABCDE"], 7: ["G=ABCDEF"], 8: ["H=ABCDEFG"]}


# ------------------------------------------------------------------------------------------ factors

def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ToolError(f"{what} must be a finite number, got {v!r:.40}")
    return float(v)


def parse_factors(factors: Any, *, two_level: bool = True) -> list[dict]:
    """Validated factor specs: [{"name", "low", "high"}] (or {"name", "levels": [...]} when not two_level).

    Args:
        factors: list of {"name": str, "low": number, "high": number} or, for full factorials,
            {"name": str, "levels": [values]}.
        two_level: whether every factor must have numeric low/high.

    Returns:
        The factor dicts with floats; a ToolError names the first bad one.
    """
    if not isinstance(factors, Sequence) or isinstance(factors, (str, bytes)) or not factors:
        raise ToolError("factors must be a non-empty list of {name, low, high}")
    if len(factors) > MAX_FACTORS:
        raise ToolError(f"at most {MAX_FACTORS} factors, got {len(factors)}")
    out = []
    for i, f in enumerate(factors):
        if not isinstance(f, dict) or not isinstance(f.get("name"), str) or not f["name"].strip():
            raise ToolError(f"factor {i + 1} needs a name")
        name = f["name"].strip()
        if "levels" in f and not two_level:
            levels = f["levels"]
            if not isinstance(levels, Sequence) or isinstance(levels, (str, bytes)) or not 2 <= len(levels) <= 50:
                raise ToolError(f"factor {name!r}: levels must be a list of 2 to 50 values")
            for v in levels:
                if isinstance(v, bool) or not isinstance(v, (int, float, str)) or (isinstance(v, float) and not math.isfinite(v)):
                    raise ToolError(f"factor {name!r}: levels must be numbers or strings")
            if len({str(v) for v in levels}) != len(levels):
                raise ToolError(f"factor {name!r}: levels repeat")
            out.append({"name": name, "levels": list(levels)})
            continue
        if "low" not in f or "high" not in f:
            raise ToolError(f"factor {name!r} needs low and high" + ("" if two_level else " (or levels)"))
        low, high = _number(f["low"], f"factor {name!r} low"), _number(f["high"], f"factor {name!r} high")
        if not low < high:
            raise ToolError(f"factor {name!r}: low ({low:g}) must be below high ({high:g})")
        out.append({"name": name, "low": low, "high": high})
    names_unique([f["name"] for f in out], "factor")
    return out


def to_natural(coded: float, low: float, high: float) -> float:
    """Coded level to natural units.

    Args:
        coded: the coded level (-1 = low, +1 = high, 0 = centre; axial points beyond).
        low: the factor's low setting.
        high: the factor's high setting.

    Returns:
        The setting in the factor's own units.
    """
    # Measured from low, so coded -1 gives low exactly (centre + coded * half-range loses it to cancellation).
    # Quarters keep high - low finite on a range as wide as floats allow (+-1.7e308).
    return low + (coded + 1) * 2 * (high / 4 - low / 4)


def to_coded(natural: float, low: float, high: float) -> float:
    """Natural units to the coded scale.

    Args:
        natural: a setting in the factor's units.
        low: the factor's low setting.
        high: the factor's high setting.

    Returns:
        The coded level (-1 = low, +1 = high).
    """
    # In quarters, as in `to_natural`: (natural - low) and (high - low) overflow on a +-1.7e308 range,
    # and x / inf would say 0.
    return 2 * ((natural / 4 - low / 4) / (high / 4 - low / 4)) - 1


def convert_units(factors: Any, point: dict, to: str) -> dict:
    """Convert one design point between coded and natural units.

    Args:
        factors: the factors' {name, low, high}.
        point: {factor name: value}.
        to: "natural" or "coded".

    Returns:
        {"point": {name: converted}, "method", "interpretation"}.
    """
    fs = {f["name"]: f for f in parse_factors(factors)}
    if to not in ("natural", "coded"):
        raise ToolError("to must be 'natural' or 'coded'")
    if not isinstance(point, dict) or not point:
        raise ToolError("point must be an object {factor: value}")
    out = {}
    for name, v in point.items():
        if name not in fs:
            raise ToolError(f"unknown factor {name!r}")
        f = fs[name]
        v = _number(v, f"value of {name!r}")
        out[name] = to_natural(v, f["low"], f["high"]) if to == "natural" else to_coded(v, f["low"], f["high"])
    return jsonable({"point": out, "to": to, "method": "natural = centre + coded x half-range",
                     "interpretation": ", ".join(f"{k} = {fmt(v)}" for k, v in out.items()) + f" ({to} units)"})


# ---------------------------------------------------------------------------------------- utilities

def _yates(k: int) -> np.ndarray:
    """2^k runs in standard order: column j alternates every 2^j runs (A fastest)."""
    idx = np.arange(2 ** k)
    return np.column_stack([np.where((idx >> j) & 1, 1.0, -1.0) for j in range(k)]) if k else np.zeros((1, 0))


def _seed(seed: Any) -> int:
    if seed is None:
        # Report the seed actually used, so any randomised order can be replayed.
        return int(np.random.SeedSequence().entropy % (2 ** 32))
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 63:
        raise ToolError("seed must be a non-negative whole number")
    return seed


def _check_int(v: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ToolError(f"{what} must be a whole number from {lo} to {hi}, got {v!r:.40}")
    return v


def _result(design: str, factors: list[dict], coded: np.ndarray, *, randomize: bool, seed: Any,
            replicates: int = 1, interpretation: str, **extra: Any) -> dict:
    coded = np.tile(coded, (replicates, 1)) if replicates > 1 else coded
    n = coded.shape[0]
    if n > MAX_RUNS:
        raise ToolError(f"the design would have {n} runs; at most {MAX_RUNS}")
    used_seed = _seed(seed) if randomize else None
    order = np.random.default_rng(used_seed).permutation(n) if randomize else np.arange(n)
    runs = []
    for run_no, std in enumerate(order, start=1):
        row = coded[std]
        runs.append({
            "run": run_no, "std_order": int(std) + 1,
            "coded": {f["name"]: float(v) for f, v in zip(factors, row)},
            "natural": {f["name"]: to_natural(float(v), f["low"], f["high"]) for f, v in zip(factors, row)},
        })
    out = {"design": design, "factors": factors, "n_runs": n, "replicates": replicates, "randomized": randomize,
           "seed": used_seed, "runs": runs,
           "letters": {LETTERS[i]: f["name"] for i, f in enumerate(factors)}}
    out.update(extra)
    out["interpretation"] = interpretation
    return jsonable(out)


def _with_center(coded: np.ndarray, center: int) -> np.ndarray:
    return np.vstack([coded, np.zeros((center, coded.shape[1]))]) if center else coded


# ------------------------------------------------------------------------------------------ designs

def full_factorial(factors: Any, replicates: int = 1, center: int = 0, randomize: bool = True,
                   seed: int | None = None) -> dict:
    """Full factorial over all level combinations; factors may have any number of levels (mixed).

    Args:
        factors: [{"name", "low", "high"}] (two levels) or [{"name", "levels": [...]}] (any levels).
        replicates: copies of the whole design.
        center: centre points (two-level numeric designs only).
        randomize: shuffle the run order.
        seed: seed of the shuffle (the one used is reported).

    Returns:
        design dict: runs (run order, standard order, coded and natural settings), n_runs, seed, method,
        interpretation.
    """
    fs = parse_factors(factors, two_level=False)
    replicates = _check_int(replicates, "replicates", 1, 100)
    center = _check_int(center, "center", 0, 100)
    if all("low" in f for f in fs):
        if 2 ** len(fs) * replicates > MAX_RUNS:
            raise ToolError(f"a 2^{len(fs)} full factorial has {2 ** len(fs) * replicates} runs; at most {MAX_RUNS}")
        coded = _with_center(_yates(len(fs)), center)
        return _result("full_factorial", fs, coded, randomize=randomize, seed=seed, replicates=replicates,
                       method="2^k in standard (Yates) order",
                       interpretation=f"2^{len(fs)} full factorial: {coded.shape[0] * replicates} runs"
                                      f"{f' including {center} centre points' if center else ''}")
    if center:
        raise ToolError("centre points need every factor to be numeric with low/high")
    from pyDOE3 import fullfact

    levels = [f["levels"] if "levels" in f else [f["low"], f["high"]] for f in fs]
    count = math.prod(len(lv) for lv in levels)  # exact integer: no array is built before the check
    if count * replicates > MAX_RUNS:
        raise ToolError(f"the design would have {count * replicates} runs; at most {MAX_RUNS}")
    idx = fullfact([len(lv) for lv in levels]).astype(int)  # first factor fastest, as Yates order
    idx = np.tile(idx, (replicates, 1))
    n = idx.shape[0]
    used_seed = _seed(seed) if randomize else None
    order = np.random.default_rng(used_seed).permutation(n) if randomize else np.arange(n)
    runs = []
    for run_no, std in enumerate(order, start=1):
        setting, coded = {}, {}
        for f, lv, i in zip(fs, levels, idx[std]):
            setting[f["name"]] = lv[i]
            nums = all(isinstance(v, (int, float)) for v in lv)
            # Numeric levels are coded evenly on [-1, 1] by rank; categorical levels have no coded value.
            coded[f["name"]] = (-1 + 2 * i / (len(lv) - 1)) if nums else None
        runs.append({"run": run_no, "std_order": int(std) + 1, "coded": coded, "natural": setting})
    shape = " x ".join(str(len(lv)) for lv in levels)
    return jsonable({"design": "full_factorial", "factors": fs, "levels_per_factor": [len(lv) for lv in levels],
                     "n_runs": n, "replicates": replicates, "randomized": randomize, "seed": used_seed, "runs": runs,
                     "method": "mixed-level full factorial (pyDOE3 fullfact, first factor fastest)",
                     "interpretation": f"{shape} full factorial: {n} runs"})


_GEN = re.compile(r"^\s*([A-HJ-Z])\s*=\s*([+-]?)\s*([A-HJ-Z]+)\s*$")


def _word(letters: str) -> frozenset:
    return frozenset(letters)


def _name(word: frozenset) -> str:
    return "".join(sorted(word, key=LETTERS.index)) or "I"


def alias_structure(k: int, generators: Sequence[str]) -> dict:
    """Defining relation, resolution and aliases of a 2^(k-p) design from its generators.

    Args:
        k: number of factors (letters A.. by position, no I).
        generators: e.g. ["D=AB", "E=-AC"].

    Returns:
        {"defining_relation": ["I = ABD", ...], "resolution": int, "aliases": [{"effect", "aliases"}],
         "generated": letters, "base": letters, "signs": {word: sign}}.
    """
    letters = LETTERS[:k]
    gens = []
    for g in generators:
        m = _GEN.match(g) if isinstance(g, str) else None
        if not m:
            raise ToolError(f"generator {g!r} is not like 'D=ABC' (letters A-Z without I, by factor position)")
        lhs, sign, rhs = m.group(1), -1 if m.group(2) == "-" else 1, m.group(3)
        if len(set(rhs)) != len(rhs):
            raise ToolError(f"generator {g!r} repeats a letter")
        for ch in lhs + rhs:
            if ch not in letters:
                raise ToolError(f"generator {g!r} names factor {ch}, but there are only {k} factors ({letters})")
        gens.append((lhs, sign, rhs))
    generated = [g[0] for g in gens]
    if len(set(generated)) != len(generated):
        raise ToolError("two generators define the same factor")
    base = [ch for ch in letters if ch not in generated]
    for lhs, _, rhs in gens:
        if any(ch in generated for ch in rhs):
            raise ToolError(f"generator {lhs}={rhs} must be written in the base factors {''.join(base)} only")
    # The defining relation: every product of generator words, with its sign.
    words: dict[frozenset, int] = {}
    for r in range(1, len(gens) + 1):
        for combo in itertools.combinations(gens, r):
            w: frozenset = frozenset()
            s = 1
            for lhs, sign, rhs in combo:
                w = w ^ _word(lhs + rhs)
                s *= sign
            words[w] = s
    short = [w for w in words if len(w) < 3]
    if short:
        raise ToolError(f"the generators make main effects aliased with each other (I = {_name(short[0])}): "
                        "resolution below III; choose other generators")
    resolution = min(len(w) for w in words)
    aliases = []
    effects = [frozenset(c) for c in letters] + [frozenset(p) for p in itertools.combinations(letters, 2)]
    for e in effects:
        als = sorted((_name(e ^ w) for w in words if len(e ^ w) <= 3), key=lambda s: (len(s), s))
        aliases.append({"effect": _name(e), "aliases": als,
                        "text": f"{_name(e)} = " + " = ".join(als) if als else _name(e)})
    relation = ["I = " + ("-" if s < 0 else "") + _name(w) for w, s in sorted(words.items(), key=lambda x: (len(x[0]), _name(x[0])))]
    return {"defining_relation": relation, "resolution": resolution, "aliases": aliases,
            "generated": "".join(generated), "base": "".join(base), "_gens": gens}


def _roman(n: int) -> str:
    return ["", "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X"][n] if n <= 10 else str(n)


def fractional_factorial(factors: Any, generators: Sequence[str] | None = None, runs: int | None = None,
                         center: int = 0, replicates: int = 1, randomize: bool = True,
                         seed: int | None = None) -> dict:
    """Two-level fractional factorial 2^(k-p) from a generator table, with resolution and aliases.

    Args:
        factors: [{"name", "low", "high"}], k of them (letters A, B, ... by position, no I).
        generators: e.g. ["D=AB", "E=AC"]; when omitted, NIST's table entry for (k, runs), or the smallest
            resolution-IV-or-better fraction there.
        runs: number of runs for the table lookup (4, 8, 16, 32, 64, 128).
        center: centre points.
        replicates: copies of the factorial part.
        randomize: shuffle the run order.
        seed: seed of the shuffle.

    Returns:
        design dict with generators, defining_relation, resolution, aliases (main effects and two-factor
        interactions, aliases to third order), runs, method, interpretation.
    """
    fs = parse_factors(factors)
    k = len(fs)
    center = _check_int(center, "center", 0, 100)
    replicates = _check_int(replicates, "replicates", 1, 100)
    source = "explicit generators"
    if generators is None:
        table = FRACTION_TABLE.get(k)
        if not table:
            raise ToolError(f"no tabled fraction for {k} factors: give generators explicitly")
        if runs is not None:
            if runs not in table:
                raise ToolError(f"NIST's table has {k}-factor fractions of {sorted(table)} runs, not {runs!r}")
            generators = table[runs]
        else:
            good = [r for r, g in sorted(table.items()) if alias_structure(k, g)["resolution"] >= 4]
            if not good:
                raise ToolError(f"every tabled {k}-factor fraction is resolution III; give runs= to accept one, "
                                "or use a full factorial")
            generators = table[good[0]]
        source = "NIST/SEMATECH e-Handbook table of useful fractional factorials"
    if not isinstance(generators, Sequence) or isinstance(generators, str) or not generators:
        raise ToolError("generators must be a non-empty list like ['D=ABC']")
    info = alias_structure(k, generators)
    gens = info.pop("_gens")
    p = len(gens)
    base_idx = [LETTERS.index(ch) for ch in info["base"]]
    if 2 ** len(base_idx) * replicates > MAX_RUNS:
        raise ToolError(f"2^({k}-{p}) has {2 ** len(base_idx) * replicates} runs; at most {MAX_RUNS}: add generators")
    base = _yates(len(base_idx))
    coded = np.zeros((base.shape[0], k))
    coded[:, base_idx] = base
    for lhs, sign, rhs in gens:
        coded[:, LETTERS.index(lhs)] = sign * np.prod([coded[:, LETTERS.index(ch)] for ch in rhs], axis=0)
    if runs is not None and coded.shape[0] != runs:
        raise ToolError(f"{p} generators for {k} factors give {coded.shape[0]} runs, not {runs}")
    coded = _with_center(coded, center)
    res = info["resolution"]
    return _result(
        "fractional_factorial", fs, coded, randomize=randomize, seed=seed, replicates=replicates,
        generators=list(generators), resolution=res, resolution_roman=_roman(res),
        defining_relation=info["defining_relation"], aliases=info["aliases"],
        method=f"2^({k}-{p}) from {source}: base factors {info['base']} in standard order, generated columns "
               f"{info['generated']} as products",
        interpretation=f"2^({k}-{p}) resolution {_roman(res)} design, {2 ** (k - p)} runs"
                       f"{f' + {center} centre points' if center else ''}: " +
                       {3: "main effects are aliased with two-factor interactions",
                        4: "main effects are clear of two-factor interactions; two-factor interactions are aliased with each other"}
                       .get(res, "main effects and two-factor interactions are clear of each other"))


def plackett_burman(factors: Any, runs: int | None = None, center: int = 0, randomize: bool = True,
                    seed: int | None = None) -> dict:
    """Plackett-Burman screening design (8, 12, 16, 20 or 24 runs, up to runs - 1 factors).

    Args:
        factors: [{"name", "low", "high"}].
        runs: run count; default the smallest that fits the factors.
        center: centre points.
        randomize: shuffle the run order.
        seed: seed of the shuffle.

    Returns:
        design dict (runs in Plackett and Burman's cyclic order before randomisation), method,
        interpretation.
    """
    fs = parse_factors(factors)
    k = len(fs)
    center = _check_int(center, "center", 0, 100)
    sizes = sorted(PB_GENERATORS)
    if runs is None:
        fitting = [n for n in sizes if n - 1 >= k]
        if not fitting:
            raise ToolError(f"Plackett-Burman designs here go up to 23 factors, got {k}")
        runs = fitting[0]
    elif runs not in PB_GENERATORS or runs - 1 < k:
        raise ToolError(f"runs must be one of {sizes} with at least factors + 1 runs")
    gen = np.array([1.0 if ch == "+" else -1.0 for ch in PB_GENERATORS[runs]])
    rows = [np.roll(gen, i) for i in range(runs - 1)] + [-np.ones(runs - 1)]
    coded = _with_center(np.array(rows)[:, :k], center)
    return _result("plackett_burman", fs, coded, randomize=randomize, seed=seed,
                   method=f"Plackett-Burman {runs}-run design: cyclic shifts of {PB_GENERATORS[runs]}, last row all low",
                   interpretation=f"{runs}-run Plackett-Burman design for {k} factors"
                                  f"{f' + {center} centre points' if center else ''}: main effects only, "
                                  "each partially aliased with two-factor interactions")


def box_behnken(factors: Any, center: int | None = None, randomize: bool = True, seed: int | None = None) -> dict:
    """Box-Behnken response-surface design for 3 to 7 factors.

    Args:
        factors: [{"name", "low", "high"}], 3 to 7.
        center: centre points (default per the e-Handbook: 3 for 3-4 factors, 6 for 5-7).
        randomize: shuffle the run order.
        seed: seed of the shuffle.

    Returns:
        design dict with center_points, method, interpretation.
    """
    fs = parse_factors(factors)
    k = len(fs)
    if k not in BB_CENTER:
        raise ToolError(f"Box-Behnken designs take 3 to 7 factors, got {k}")
    center = BB_CENTER[k] if center is None else _check_int(center, "center", 0, 100)
    blocks = BB_BLOCKS.get(k) or list(itertools.combinations(range(k), 2))
    rows = []
    for blk in blocks:
        sub = _yates(len(blk))
        for s in sub:
            r = np.zeros(k)
            r[list(blk)] = s
            rows.append(r)
    coded = _with_center(np.array(rows), center)
    return _result("box_behnken", fs, coded, randomize=randomize, seed=seed, center_points=center,
                   method=("Box-Behnken (1960): +-1 factorial on each pair of factors, others at centre"
                           if k <= 5 else "Box-Behnken (1960): +-1 factorials on balanced three-factor blocks"),
                   interpretation=f"Box-Behnken design for {k} factors: {coded.shape[0]} runs including "
                                  f"{center} centre points; three levels per factor, no corner runs")


def central_composite(factors: Any, kind: str = "circumscribed", alpha: Any = "rotatable",
                      center: int | None = None, fraction: bool = False, randomize: bool = True,
                      seed: int | None = None) -> dict:
    """Central composite design: circumscribed, inscribed or face-centred, alpha stated.

    Args:
        factors: [{"name", "low", "high"}], 2 to 8.
        kind: "circumscribed" (axial points beyond the cube), "inscribed" (design scaled into [-1, 1]) or
            "faced" (alpha = 1).
        alpha: "rotatable" (default), "orthogonal", or a positive number (circumscribed/inscribed only).
        center: centre points (default from the e-Handbook table for 2-6 factors).
        fraction: use a resolution-V half fraction as the cube (5 or more factors).
        randomize: shuffle the run order.
        seed: seed of the shuffle.

    Returns:
        design dict with alpha, axial_distance_coded, center_points, cube_runs, rotatable, method,
        interpretation.
    """
    fs = parse_factors(factors)
    k = len(fs)
    if not 2 <= k <= 8:
        raise ToolError(f"central composite designs take 2 to 8 factors, got {k}")
    if kind not in ("circumscribed", "inscribed", "faced"):
        raise ToolError("kind must be 'circumscribed', 'inscribed' or 'faced'")
    if fraction:
        if k < 5:
            raise ToolError("a half-fraction cube needs 5 or more factors (resolution V)")
        cube = fractional_factorial(fs, CCD_HALF_GENERATORS[k], randomize=False)
        cube_coded = np.array([[r["coded"][f["name"]] for f in fs] for r in cube["runs"]])
    else:
        cube_coded = _yates(k)
    n_f = cube_coded.shape[0]
    if center is None:
        table = CCD_CENTER_HALF if fraction else CCD_CENTER_FULL
        if k not in table:
            raise ToolError(f"no tabled centre-point count for {k} factors{' (half fraction)' if fraction else ''}: give center")
        center = table[k]
    center = _check_int(center, "center", 0, 100)
    if kind == "faced":
        if alpha not in ("rotatable", "faced", 1, 1.0):
            raise ToolError("a face-centred design has alpha = 1")
        a = 1.0
        how = "face-centred: alpha = 1"
    elif alpha == "rotatable":
        a = n_f ** 0.25
        how = f"rotatable: alpha = (cube runs {n_f})^(1/4)"
    elif alpha == "orthogonal":
        total = n_f + 2 * k + center
        a = ((math.sqrt(total) - math.sqrt(n_f)) ** 2 * n_f / 4) ** 0.25
        how = "orthogonal: alpha = ((sqrt(N) - sqrt(F))^2 F / 4)^(1/4)"
    else:
        a = _number(alpha, "alpha")
        if not 0 < a <= 10:
            raise ToolError("alpha must be between 0 and 10")
        how = f"alpha = {a:g} as given"
    axial = np.zeros((2 * k, k))
    for j in range(k):
        axial[2 * j, j], axial[2 * j + 1, j] = -a, a
    coded = np.vstack([cube_coded, axial, np.zeros((center, k))])
    axial_coded = a
    if kind == "inscribed":
        coded = coded / a  # axial points at the limits, the cube inside them
        axial_coded = 1.0
    rotatable = kind != "faced" and abs(a - n_f ** 0.25) < 1e-12
    name = {"circumscribed": "CCC", "inscribed": "CCI", "faced": "CCF"}[kind]
    return _result("central_composite", fs, coded, randomize=randomize, seed=seed, kind=kind, alpha=a,
                   axial_distance_coded=axial_coded, cube_runs=n_f, axial_runs=2 * k, center_points=center,
                   rotatable=rotatable,
                   method=f"{name}: {'half-fraction ' if fraction else ''}2^{k - int(fraction)} cube + {2 * k} axial + "
                          f"{center} centre; {how}",
                   interpretation=f"{name} design for {k} factors: {coded.shape[0]} runs, alpha = {a:.4f}"
                                  f"{' (rotatable)' if rotatable else ''}" +
                                  ("; axial points lie outside the low/high limits" if kind == "circumscribed" and a > 1 else ""))


# ------------------------------------------------------------------------------------------ analysis

def _lenth(effects: np.ndarray, alpha: float) -> tuple[float, float]:
    """Lenth's (1989) pseudo standard error and margin of error for unreplicated two-level designs."""
    abs_e = np.abs(effects)
    s0 = 1.5 * np.median(abs_e)
    trimmed = abs_e[abs_e < 2.5 * s0]
    pse = 1.5 * np.median(trimmed) if trimmed.size else s0
    d = effects.size / 3
    return float(pse), float(sps.t.ppf(1 - alpha / 2, d) * pse)


def analyze_factorial(factors: Sequence[str], coded: Sequence[Sequence[float]], response: Sequence[float],
                      max_order: int | None = None, alpha: float = 0.05) -> dict:
    """Effects and interactions of a two-level factorial (full or fractional), with the ANOVA of the model.

    Effects are mean(response at +1) - mean(response at -1) over the factorial runs; centre points (all
    zeros) add error degrees of freedom and a curvature check. Aliased terms (identical columns in a
    fraction) are estimated once, under the first name, with the aliases listed. Without error degrees of
    freedom (an unreplicated saturated design) Lenth's pseudo standard error judges the effects instead.

    Args:
        factors: factor names in column order.
        coded: the runs' coded settings (-1, +1, or 0 for centre points), one row per response.
        response: measured response of each run.
        max_order: highest interaction order in the model (default: all that the runs can estimate).
        alpha: significance level.

    Returns:
        effects [{term, effect, coefficient, ss, aliases, f, p | active}], anova table, r_squared,
        curvature (with centre points), method, interpretation.
    """
    alpha = check_alpha(alpha)
    names = names_unique([str(f) for f in factors], "factor")
    k = len(names)
    if not 1 <= k <= 15:
        raise ToolError("analysis takes 1 to 15 factors")
    y = as_vector(response, "response", min_len=2, max_len=MAX_RUNS)
    if not isinstance(coded, Sequence) or len(coded) != y.size:
        raise ToolError(f"coded must have one row per response ({y.size})")
    x = np.array([as_vector(r, f"coded row {i + 1}", min_len=k, max_len=k) for i, r in enumerate(coded)])
    is_center = np.all(x == 0, axis=1)
    fact = ~is_center
    if not np.all(np.isin(x[fact], (-1.0, 1.0))):
        raise ToolError("coded settings must be -1 or +1 (or all 0 for a centre point)")
    xf, yf = x[fact], y[fact]
    nf = xf.shape[0]
    if nf < 2:
        raise ToolError("need at least two factorial runs")
    max_order = k if max_order is None else _check_int(max_order, "max_order", 1, k)
    letters = LETTERS[:k]
    terms, columns, aliases = [], [], {}
    seen: dict[bytes, str] = {}
    for order in range(1, max_order + 1):
        for combo in itertools.combinations(range(k), order):
            col = np.prod(xf[:, combo], axis=1)
            label = "".join(letters[i] for i in combo)
            if np.all(col == col[0]):
                continue  # confounded with the mean
            key = col.tobytes()
            neg = (-col).tobytes()
            if key in seen or neg in seen:
                aliases.setdefault(seen.get(key) or seen[neg], []).append(("-" if neg in seen else "") + label)
                continue
            seen[key] = label
            terms.append(label)
            columns.append(col)
    if not terms:
        raise ToolError("no effect can be estimated from these runs")
    m = np.column_stack(columns)
    if np.abs(m.T @ m - nf * np.eye(len(terms))).max() > 1e-9:
        raise ToolError("the factorial runs are not an orthogonal two-level design (unbalanced or incomplete)")
    if len(terms) > nf - 1:
        raise ToolError(f"{len(terms)} terms cannot be estimated from {nf} factorial runs; lower max_order")
    ybar_f = float(np.mean(yf))
    contrasts = m.T @ (yf - ybar_f)
    effects = 2 * contrasts / nf
    ss = contrasts ** 2 / nf
    ss_total = float(np.sum((y - np.mean(y)) ** 2))
    ss_model = float(np.sum(ss))
    n = y.size
    df_err = n - 1 - len(terms)
    ss_err = max(ss_total - ss_model, 0.0)
    curvature = None
    nc = int(is_center.sum())
    if nc:
        yc = y[is_center]
        ss_curv = nf * nc * (ybar_f - float(np.mean(yc))) ** 2 / (nf + nc)
        pure = float(np.sum((yc - np.mean(yc)) ** 2))
        curvature = {"ss": ss_curv, "df": 1, "centre_mean": float(np.mean(yc)), "factorial_mean": ybar_f}
        if nc > 1 and pure > 0:
            f_c = ss_curv / (pure / (nc - 1))
            curvature.update({"f": f_c, "p": float(sps.f.sf(f_c, 1, nc - 1)), "error": "pure error of the centre points"})
    term_names = ["".join(names[letters.index(ch)] + ("*" if i < len(t) - 1 else "") for i, ch in enumerate(t)) for t in terms]
    rows = []
    if df_err > 0 and ss_err > 0:
        mse = ss_err / df_err
        for t, tn, e, s in zip(terms, term_names, effects, ss):
            f = s / mse
            rows.append({"term": t, "factors": tn, "effect": e, "coefficient": e / 2, "ss": s, "df": 1, "f": f,
                         "p": float(sps.f.sf(f, 1, df_err)), "aliases": aliases.get(t, [])})
        active = [r["term"] for r in rows if r["p"] < alpha]
        judged = f"F tests against the residual mean square ({df_err} df)"
        anova = [{"source": r["term"], "df": 1, "ss": r["ss"], "ms": r["ss"], "f": r["f"], "p": r["p"]} for r in rows]
        anova += [{"source": "residual", "df": df_err, "ss": ss_err, "ms": mse}, {"source": "total", "df": n - 1, "ss": ss_total}]
    else:
        pse, me = _lenth(effects, alpha)
        for t, tn, e, s in zip(terms, term_names, effects, ss):
            rows.append({"term": t, "factors": tn, "effect": e, "coefficient": e / 2, "ss": s, "df": 1,
                         "active": bool(abs(e) > me), "aliases": aliases.get(t, [])})
        active = [r["term"] for r in rows if r["active"]]
        judged = f"no error degrees of freedom: Lenth's method, PSE = {fmt(pse)}, margin of error = {fmt(me)}"
        anova = [{"source": r["term"], "df": 1, "ss": r["ss"], "ms": r["ss"]} for r in rows]
        anova += [{"source": "total", "df": n - 1, "ss": ss_total}]
    biggest = sorted(rows, key=lambda r: -abs(r["effect"]))[:3]
    text = (f"At alpha = {alpha:g}, active effects: {', '.join(active)}" if active else
            f"At alpha = {alpha:g}, no effect stands out") + "; largest " + ", ".join(
        f"{r['term']} = {fmt(r['effect'])}" for r in biggest)
    if curvature and curvature.get("p") is not None:
        text += f"; curvature {fmt_p(curvature['p'])}"
    return jsonable({
        "factors": names, "letters": {letters[i]: names[i] for i in range(k)}, "n": n, "factorial_runs": nf,
        "centre_points": nc, "grand_mean": float(np.mean(y)), "effects": rows, "anova": anova,
        "r_squared": ss_model / ss_total if ss_total > 0 else None, "curvature": curvature, "alpha": alpha,
        "method": "effects = 2 x contrast / factorial runs; SS = contrast^2 / runs; " + judged,
        "interpretation": text,
    })
