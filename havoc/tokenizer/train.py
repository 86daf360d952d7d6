"""Phase 0: train havoc's own tokenizer (SentencePiece BPE) and turn it into a `havoc.tokenizer.Tokenizer`.

    havoc tokenizer train --input 'corpus/*.txt' --output tok/ [--vocab-size 70000]

Special tokens sit at the fixed ids of DESIGN.md (`SPECIAL_TOKENS`); registered domain/DSL tokens follow
them. Text is normalized by `havoc.tokenizer.normalize` before SentencePiece sees it, and the same rules
are the normalizer of the saved tokenizer.json, so encode time sees what training saw.

Large corpora are never loaded whole: files are streamed line by line and a reservoir sample of at most
`max_sentences` lines (seeded, so the same corpus gives the same tokenizer) goes to SentencePiece.

The trained SentencePiece model is converted into a `tokenizers` BPE pipeline (vocabulary, merges ranked by
SentencePiece's scores, byte fallback) so that the rest of havoc — `Tokenizer.load`, `havoc generate`, the
streaming decoder — uses one tokenizer class. `tokenizer.model` (SentencePiece) is kept beside it; the
tests check the two give the same ids.

Files written into the output folder: tokenizer.json, tokenizer_config.json (what `Tokenizer.load`
reads), tokenizer.model (SentencePiece), havoc_tokenizer.json (special and domain tokens, normalization
rules, training settings).
"""

from __future__ import annotations

import glob
import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from havoc.errors import TokenizerError
from havoc.tokenizer.normalize import MATH_SYMBOLS, RULES, backend_normalizer, normalize

# DESIGN.md "Tokens": fixed ids. 5-9 are reserved (kept as tokens so later ids never move).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>", "<bos>", "<eos>", "<unk>", "<mask>",
    "<reserved_5>", "<reserved_6>", "<reserved_7>", "<reserved_8>", "<reserved_9>",
    "<reason>", "</reason>", "<tool>", "</tool>", "<advocate>", "</advocate>",
    "<attack>", "</attack>", "<pragmatist>", "</pragmatist>",
)
# Tokens that are control tokens (hidden by decode(skip_special_tokens=True)); the reasoning and tool
# tags are not: reasoning stays in the output (DESIGN.md "Above the model").
CONTROL_TOKENS = frozenset(SPECIAL_TOKENS[:10])

# Registered domain tokens: chat roles, then DSL/statistics vocabulary the tools speak, each one token.
DOMAIN_TOKENS: tuple[str, ...] = (
    "<|system|>", "<|user|>", "<|assistant|>",
    "full_factorial", "fractional_factorial", "plackett_burman", "box_behnken", "central_composite",
    "control_chart", "capability", "analyze_factorial", "t_test", "anova", "tukey_hsd", "regression",
    "chi_square", "normality", "Cpk", "Ppk", "UCL", "LCL", "p-value",
)

# Chat format of havoc's own models: role tokens, the turn ends with <eos>.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}<eos>{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

METADATA_FILE = "havoc_tokenizer.json"
SP_MODEL_FILE = "tokenizer.model"


@dataclass
class TokenizerTrainConfig:
    """Settings of `train_tokenizer` (also the `tokenizer:` block of a phase-0 YAML config)."""

    inputs: list[str] = field(default_factory=list)  # files or globs; .jsonl files contribute their "text"
    output: str = "tokenizer"
    vocab_size: int = 70000
    character_coverage: float = 0.9995
    max_sentences: int = 2_000_000  # reservoir sample size handed to SentencePiece
    max_sentence_length: int = 16384  # bytes; longer lines are cut into pieces of this length
    seed: int = 0
    domain_tokens: list[str] = field(default_factory=lambda: list(DOMAIN_TOKENS))
    num_threads: int = 2

    def __post_init__(self) -> None:
        if not isinstance(self.vocab_size, int) or self.vocab_size < 512:
            raise TokenizerError(f"vocab_size must be an integer >= 512, got {self.vocab_size!r}")
        if not 0.9 <= self.character_coverage <= 1.0:
            raise TokenizerError(f"character_coverage must be in [0.9, 1], got {self.character_coverage!r}")
        if self.max_sentences < 1:
            raise TokenizerError(f"max_sentences must be positive, got {self.max_sentences}")
        clash = set(self.domain_tokens) & set(SPECIAL_TOKENS)
        if clash:
            raise TokenizerError(f"domain tokens {sorted(clash)} clash with the fixed special tokens")


def resolve_inputs(patterns: Sequence[str]) -> list[Path]:
    """Files named by `patterns` (paths or globs), sorted within each pattern; an empty match is an error."""
    if not patterns:
        raise TokenizerError("no input files given")
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        matches = [m for m in matches if Path(m).is_file()]
        if not matches:
            raise TokenizerError(f"input {pattern!r} matches no file")
        files.extend(Path(m) for m in matches)
    return files


def iter_lines(files: Iterable[Path], max_len: int = 16384) -> Iterator[str]:
    """Normalized, non-empty lines of the files, streamed (JSONL: the "text" field of each record)."""
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for raw in f:
                    if path.suffix == ".jsonl":
                        try:
                            raw = json.loads(raw).get("text", "")
                        except (json.JSONDecodeError, AttributeError):
                            raise TokenizerError(f"{path}: a line is not a JSON object") from None
                    for line in normalize(raw).split("\n"):
                        while line.strip():
                            yield line[:max_len]
                            line = line[max_len:]
        except OSError as e:
            raise TokenizerError(f"cannot read {path}: {e}") from None


def reservoir_sample(lines: Iterable[str], k: int, seed: int) -> list[str]:
    """At most k lines, uniformly sampled in one pass (Algorithm R); deterministic for a seed."""
    rng = random.Random(seed)
    sample: list[str] = []
    for i, line in enumerate(lines):
        if i < k:
            sample.append(line)
        else:
            j = rng.randrange(i + 1)
            if j < k:
                sample[j] = line
    return sample


def train_tokenizer(cfg: TokenizerTrainConfig):
    """Train SentencePiece BPE on `cfg.inputs`, write the tokenizer folder `cfg.output`, return the `Tokenizer`."""
    import sentencepiece as spm

    files = resolve_inputs(cfg.inputs)
    sample = reservoir_sample(iter_lines(files, cfg.max_sentence_length), cfg.max_sentences, cfg.seed)
    if not sample:
        raise TokenizerError(f"the inputs {cfg.inputs} hold no text")
    from havoc.io.atomic import check_destination

    out = check_destination(cfg.output, "output", folder=True)
    out.mkdir(parents=True, exist_ok=True)
    user_defined = [*SPECIAL_TOKENS[4:], *cfg.domain_tokens]
    model_prefix = out / "_sp"
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sample),
            model_prefix=str(model_prefix),
            model_type="bpe",
            vocab_size=cfg.vocab_size,
            character_coverage=cfg.character_coverage,
            byte_fallback=True,  # any unicode string encodes: unseen characters become UTF-8 byte tokens
            split_digits=True,
            allow_whitespace_only_pieces=True,
            normalization_rule_name="identity",  # havoc normalizes itself (normalize.py), identically at encode
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            pad_id=0, bos_id=1, eos_id=2, unk_id=3,
            pad_piece="<pad>", bos_piece="<bos>", eos_piece="<eos>", unk_piece="<unk>",
            user_defined_symbols=user_defined,
            required_chars=MATH_SYMBOLS,
            max_sentence_length=cfg.max_sentence_length * 4,
            input_sentence_size=cfg.max_sentences,
            shuffle_input_sentence=True,
            seed_sentencepiece_size=min(1_000_000, 10 * cfg.vocab_size),
            num_threads=cfg.num_threads,
            minloglevel=2,
        )
    except RuntimeError as e:  # e.g. "Vocabulary size too high (70000). Please set it to a value <= 5123."
        raise TokenizerError(f"SentencePiece training failed: {e}") from None
    sp_file = out / SP_MODEL_FILE
    Path(f"{model_prefix}.model").replace(sp_file)
    Path(f"{model_prefix}.vocab").unlink(missing_ok=True)
    sp = spm.SentencePieceProcessor(model_file=str(sp_file))
    for i, token in enumerate(SPECIAL_TOKENS):
        if sp.id_to_piece(i) != token:
            raise TokenizerError(f"SentencePiece put {sp.id_to_piece(i)!r} at id {i}, expected {token!r}")
    tok = tokenizer_from_sentencepiece(sp, user_defined)
    tok.save(out)
    from havoc.io.atomic import atomic_write_text

    meta = {
        "special_tokens": {t: i for i, t in enumerate(SPECIAL_TOKENS)},
        "domain_tokens": {t: sp.piece_to_id(t) for t in cfg.domain_tokens},
        "normalization_rules": [list(r) for r in RULES],
        "required_chars": MATH_SYMBOLS,
        "train": {**asdict(cfg), "files": [str(f) for f in files], "sampled_lines": len(sample)},
        "vocab_size": sp.get_piece_size(),
    }
    atomic_write_text(out / METADATA_FILE, json.dumps(meta, indent=2, ensure_ascii=False))
    return tok


def tokenizer_from_sentencepiece(sp, user_defined: Iterable[str] = ()):
    """A havoc `Tokenizer` whose `tokenizers` BPE pipeline encodes as the SentencePiece BPE model `sp` does.

    SentencePiece's space marker U+2581 becomes a real space in the pieces (so a literal U+2581 in text
    stays itself, through byte fallback); merges are every split of a piece into two pieces, ranked by
    the merged piece's id (SentencePiece BPE orders ids by merge priority). `user_defined` are the
    user-defined symbols it was trained with (the Python API cannot tell their type).
    """
    from tokenizers import AddedToken, decoders
    from tokenizers import Tokenizer as Backend
    from tokenizers.models import BPE

    from havoc.tokenizer.tokenizer import Tokenizer

    n = sp.get_piece_size()
    user_defined = frozenset(user_defined)
    vocab: dict[str, int] = {}
    added: list[tuple[int, str]] = []
    normal: dict[str, int] = {}
    for i in range(n):
        piece = sp.id_to_piece(i)
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i) or sp.id_to_piece(i) in user_defined:
            vocab[piece] = i
            added.append((i, piece))
        elif sp.is_byte(i):
            vocab[piece] = i  # "<0xAB>": the BPE model's byte fallback looks these up by name
        else:
            text = piece.replace("\u2581", " ")
            vocab[text] = i
            normal[text] = i
    merges = []
    for text, i in normal.items():
        for cut in range(1, len(text)):
            left, right = text[:cut], text[cut:]
            if left in normal and right in normal:
                merges.append((i, normal[left], normal[right], left, right))
    merges.sort()
    backend = Backend(BPE(vocab=vocab, merges=[(m[3], m[4]) for m in merges], unk_token="<unk>",
                          byte_fallback=True, fuse_unk=True))
    backend.normalizer = backend_normalizer()
    backend.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    backend.add_special_tokens([AddedToken(p, special=True, normalized=False) for i, p in added if p in CONTROL_TOKENS])
    backend.add_tokens([AddedToken(p, special=False, normalized=False) for i, p in added if p not in CONTROL_TOKENS])
    for i, p in added:
        if backend.token_to_id(p) != i:
            raise TokenizerError(f"token {p!r} landed at id {backend.token_to_id(p)}, expected {i}")
    return Tokenizer(backend, bos_id=1, eos_id=2, pad_id=0, unk_id=3, add_bos=False, chat_template=CHAT_TEMPLATE)



def load_tokenizer_config(path: str | Path, **overrides) -> TokenizerTrainConfig:
    """A `TokenizerTrainConfig` from YAML (or a bare name of a shipped config, e.g. `phase0_tokenizer_tiny`).

    `pkg:REL` inputs name files inside the installed package. Unknown keys are an error.
    """
    import dataclasses

    from havoc.data.sources import resolve_path
    from havoc.train.config import CONFIG_DIR

    path = Path(path)
    if not path.suffix and not path.exists():
        path = CONFIG_DIR / f"{path}.yaml"
    if not path.is_file():
        raise TokenizerError(f"tokenizer config not found: {path}")
    from havoc.safeparse import load_yaml, read_text

    data = load_yaml(read_text(path, "tokenizer config", TokenizerError), str(path), TokenizerError) or {}
    known = {f.name for f in dataclasses.fields(TokenizerTrainConfig)}
    if not isinstance(data, dict) or set(data) - known:
        bad = sorted(set(data) - known) if isinstance(data, dict) else data
        raise TokenizerError(f"{path}: unknown keys {bad}; known keys are {sorted(known)}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    data["inputs"] = [resolve_path(p) for p in data.get("inputs", [])]
    return TokenizerTrainConfig(**data)
