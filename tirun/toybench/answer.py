"""The answer a toy concept's word is looking for, known because the toy model was built so.

Pretraining named every value a concept defines: the named ones with words the shipped tokenizer
keeps, the unnamed ones (the diamond, hatching, the marks) with words it then retired, whose
embedding rows the model folder keeps in ``retired_words.safetensors``. So each concept has an
answer in the text encoder's input space, the rows of its defining words, and a learned word's
distance to it can be read off directly, as no benchmark on real images can:

- ``answer_cosine``: for each defining word, the best cosine of any learned vector to its row,
  averaged over the concept's words (1.0: every word the concept needs is among the vectors);
- ``retired_cosine``: the same over its unnamed values only (None where it has none).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tirun.toyworld.concepts import CONCEPTS
from tirun.toyworld.render import RETIRED_WORDS

RETIRED_FILE = "retired_words.safetensors"
_TABLE_KEY = "embeddings.token_embedding.weight"


def answer_words(attributes: dict[str, str]) -> list[str]:
    """The words pretraining said for ``attributes``: "red", "dotted", "star"."""
    return [RETIRED_WORDS.get(value, value) for value in attributes.values()]


@lru_cache(maxsize=4)
def answer_rows(model_dir: Path) -> dict[str, torch.Tensor]:
    """Every word's input row in ``model_dir``'s text encoder, the retired words' beside the
    shipped ones; {} for a model without retired words (nothing to measure against)."""
    retired_path = Path(model_dir) / RETIRED_FILE
    if not retired_path.is_file():
        return {}
    vocab = json.loads((Path(model_dir) / "tokenizer" / "vocab.json").read_text())
    path = Path(model_dir) / "text_encoder" / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        table = f.get_tensor(_TABLE_KEY).float()
    rows = {token.removesuffix("</w>"): table[i] for token, i in vocab.items()
            if token.endswith("</w>")}  # fmt: skip
    return rows | {w: v.float() for w, v in load_file(str(retired_path)).items()}


def cosines(vectors: torch.Tensor, words: list[str], rows: dict[str, torch.Tensor]) -> float:
    """The mean over ``words`` of the best cosine of any of ``vectors`` ([k, dim]) to its row."""
    table = torch.stack([rows[w] for w in words])
    sims = torch.nn.functional.cosine_similarity(vectors[:, None, :], table[None], dim=-1)
    return float(sims.max(0).values.mean())


def word_vectors(file: Path) -> torch.Tensor:
    """The [k, dim] vectors of a diffusers-format word file (one key)."""
    (tensor,) = load_file(str(file)).values()
    return tensor.float().reshape(-1, tensor.shape[-1])


def distance(concept: str, vectors: torch.Tensor, model_dir: Path) -> dict[str, float | None]:
    """``answer_cosine`` and ``retired_cosine`` of ``vectors`` for toy concept ``concept``;
    both None where the model keeps no answer, lacks one of the concept's words, or the word is
    not in its space."""
    rows = answer_rows(Path(model_dir))
    words = answer_words(CONCEPTS[concept].attributes)
    known = rows and all(w in rows for w in words)
    if not known or not words or vectors.shape[-1] != next(iter(rows.values())).shape[-1]:
        return {"answer_cosine": None, "retired_cosine": None}
    retired = [w for w in words if w in set(RETIRED_WORDS.values())]
    return {
        "answer_cosine": cosines(vectors, words, rows),
        "retired_cosine": cosines(vectors, retired, rows) if retired else None,
    }
