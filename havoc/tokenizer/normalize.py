"""Text normalization for havoc's own tokenizers: one rule table, applied identically at training time (by
`normalize`, in Python, before SentencePiece sees the corpus) and at encode time (by the `tokenizers`
normalizer that `backend_normalizer` builds from the same table and that is saved in tokenizer.json).

The rules are deliberately few and only fold characters that mean the same thing into one spelling, so
the model does not spend vocabulary and data on variants:

- line endings: CRLF and lone CR become LF;
- unicode spaces (no-break, en/em/thin/hair spaces, ideographic space, ...) become a plain space;
  tabs and newlines are kept (code indentation matters), runs of spaces are kept;
- engineering and maths symbols with compatibility twins fold onto the canonical character:
  MICRO SIGN µ -> GREEK SMALL MU μ, OHM SIGN Ω -> GREEK CAPITAL OMEGA Ω, ANGSTROM SIGN Å -> Å,
  DEGREE CELSIUS ℃ -> °C, DEGREE FAHRENHEIT ℉ -> °F, ≦/≧ -> ≤/≥, fullwidth ＋ － ＝ ＜ ＞ -> ASCII.

Symbols such as ±, ×, ÷, σ, μ, ≤, ≥, ≠, ≈, °, √, ∑, ∫, ∂, ∞ are kept and are guaranteed single tokens
(`MATH_SYMBOLS` goes to SentencePiece's `required_chars`).

`normalize` is idempotent, and `decode(encode(s)) == normalize(s)` for every string s.
"""

from __future__ import annotations

# (from, to), applied in this order. Every `from` is a literal string (no regex), so Python's str.replace
# and the tokenizers library's Replace normalizer agree exactly.
RULES: tuple[tuple[str, str], ...] = (
    ("\r\n", "\n"),
    ("\r", "\n"),
    *((ch, " ") for ch in (
        "\u00a0", "\u1680", "\u2000", "\u2001", "\u2002", "\u2003", "\u2004", "\u2005", "\u2006",
        "\u2007", "\u2008", "\u2009", "\u200a", "\u202f", "\u205f", "\u3000",
    )),
    ("\u00b5", "\u03bc"),  # MICRO SIGN -> GREEK SMALL LETTER MU
    ("\u2126", "\u03a9"),  # OHM SIGN -> GREEK CAPITAL LETTER OMEGA
    ("\u212b", "\u00c5"),  # ANGSTROM SIGN -> LATIN CAPITAL LETTER A WITH RING ABOVE
    ("\u2103", "\u00b0C"),  # DEGREE CELSIUS
    ("\u2109", "\u00b0F"),  # DEGREE FAHRENHEIT
    ("\u2266", "\u2264"),  # LESS-THAN OVER EQUAL TO -> LESS-THAN OR EQUAL TO
    ("\u2267", "\u2265"),
    ("\uff0b", "+"),
    ("\uff0d", "-"),
    ("\uff1d", "="),
    ("\uff1c", "<"),
    ("\uff1e", ">"),
)

# Characters every havoc tokenizer has as a token of its own (statistics, DOE, SPC, engineering).
MATH_SYMBOLS = "±×÷·σμΣΔδαβγλπθρχηεΩ≤≥≠≈≡∝°√∑∏∫∂∇∞∈∉⊂∩∪→←↔⇒⇔∀∃¬∧∨′″²³¹½¼¾‰"


def normalize(text: str) -> str:
    """Apply `RULES` to `text` (what the tokenizer's normalizer does at encode time)."""
    for old, new in RULES:
        if old in text:
            text = text.replace(old, new)
    return text


def backend_normalizer():
    """The `tokenizers` normalizer equivalent to `normalize` (stored in tokenizer.json)."""
    from tokenizers import normalizers

    return normalizers.Sequence([normalizers.Replace(old, new) for old, new in RULES])
