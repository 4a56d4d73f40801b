"""Build small CLIP-format tokenizers (vocab.json + merges.txt) offline.

A CLIP BPE tokenizer only forms a whole word when the merges that build it exist: with an empty
merges file "toy" splits into letters even if ``toy</w>`` is in the vocabulary. So a word list is
turned into merges by training a byte-level BPE on it until every word is one token, then the
vocabulary is laid out as CLIP's is: 256 byte symbols, the same with ``</w>``, one entry per
merge, then ``<|startoftext|>`` and ``<|endoftext|>``.

    python -m tirun.toyworld.tokenizer OUT_DIR  # rebuilds the tokenizer the tiny models ship with
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer, models, trainers

from tirun.templates import OBJECT_TEMPLATES, STYLE_TEMPLATES
from tirun.toyworld.world import toy_words

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"

# Words the tiny test models know besides the templates and the toy world's: common
# initializers and subjects.
TINY_WORDS = [
    "toy",
    "cat",
    "dog",
    "sculpture",
    "painting",
    "statue",
    "object",
    "thing",
    "style",
    "art",
    "drawing",
    "photo",
    "picture",
    "person",
    "doctor",
    "man",
    "woman",
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "orange",
    "white",
    "black",
    "circle",
    "square",
    "triangle",
    "ring",
    "star",
    "cross",
    "on",
    "the",
    "beach",
    "in",
    "forest",
    "street",
    "city",
    "snow",
    "grass",
    "sky",
    "water",
    "wall",
    "with",
    "and",
    "of",
    "a",
    "an",
    "in",
    "by",
    "at",
]


@lru_cache(maxsize=1)
def byte_symbols() -> dict[int, str]:
    """CLIP's (and GPT-2's) printable stand-in for each byte, in CLIP's vocabulary order."""
    byte_values = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = byte_values[:]
    unprintable = [b for b in range(256) if b not in byte_values]
    byte_values += unprintable
    codes += [256 + n for n in range(len(unprintable))]
    return {b: chr(c) for b, c in zip(byte_values, codes, strict=True)}


def _symbols(word: str) -> str:
    table = byte_symbols()
    return "".join(table[b] for b in word.encode("utf-8"))


def build_vocab(words: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Return (vocab, merges) in which every word of ``words`` is exactly one token."""
    # Split as CLIP's pre-tokenizer does (letters, single digits, other runs): "close-up" is
    # three words to it, so training on the whole string would never form "close".
    pieces = {p for w in words for p in re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]+", w.lower())}
    corpus = sorted(_symbols(p) for p in pieces)
    alphabet = list(byte_symbols().values())
    trainer = trainers.BpeTrainer(
        vocab_size=100_000,
        min_frequency=1,
        show_progress=False,
        initial_alphabet=alphabet,
        end_of_word_suffix=END_OF_WORD,
        special_tokens=[],
    )
    bpe = Tokenizer(models.BPE(end_of_word_suffix=END_OF_WORD))
    bpe.train_from_iterator(corpus, trainer=trainer)
    trained = json.loads(bpe.to_str())["model"]["merges"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained]

    vocab: dict[str, int] = {}
    for symbol in alphabet + [s + END_OF_WORD for s in alphabet]:
        vocab.setdefault(symbol, len(vocab))
    kept: list[tuple[str, str]] = []
    for left, right in merges:
        # every merge is kept, even one whose result an earlier merge made: a word may be
        # reachable only through it
        vocab.setdefault(left + right, len(vocab))
        kept.append((left, right))
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return vocab, kept


def write_tokenizer(words: Iterable[str], out_dir: str | Path, max_length: int = 77) -> Path:
    """Write a CLIP tokenizer folder that ``CLIPTokenizer.from_pretrained`` reads offline, and
    check that it makes every word of ``words`` one token (a ValueError names those it splits:
    the first toy model v4's tokenizer, written without this check, split six of its words)."""
    words = list(words)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # a saved pipeline's tokenizer.json is read before vocab.json and merges.txt: one left from
    # an earlier model (v3's, 667 entries) is what split the toy model v4's six new words
    for stale in ("tokenizer.json", "added_tokens.json"):
        (out / stale).unlink(missing_ok=True)
    vocab, merges = build_vocab(words)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0))
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (out / "merges.txt").write_text("\n".join(lines) + "\n")
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": max_length,
                "bos_token": BOS,
                "eos_token": EOS,
                "unk_token": EOS,
                "pad_token": EOS,
                "do_lower_case": True,
            },
            indent=2,
        )
    )
    (out / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS})
    )
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(out)
    pieces = {p for w in words for p in re.findall(r"[a-z]+", w.lower())}
    split = sorted(p for p in pieces if len(tokenizer.tokenize(p)) != 1)
    if split:
        raise ValueError(f"the tokenizer written to {out} splits {split}; rebuild it")
    return out


def template_words() -> list[str]:
    words: list[str] = []
    for template in OBJECT_TEMPLATES + STYLE_TEMPLATES:
        words += template.replace("{}", " ").replace(",", " ").replace(".", " ").split()
    return words


def main() -> None:
    out = (
        sys.argv[1]
        if len(sys.argv) > 1
        else str(Path(__file__).parents[1] / "assets" / "tokenizer")
    )
    write_tokenizer(template_words() + TINY_WORDS + toy_words(), out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
