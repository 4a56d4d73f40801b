"""The new pseudo-word: its tokens, its trainable vectors, and how they enter the text encoder.

The vectors are a parameter of their own, never rows of the embedding table: the optimizer's
state is the size of the word, and the table stays bit-for-bit what it was. They reach the
frozen text encoder through `PlaceholderEmbedding`, a module around the frozen token table that
substitutes the new rows; this needs no `inputs_embeds` and works for both SDXL encoders.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from tirun.embeddings import LearnedWord
from tirun.models import Components


class PlaceholderEmbedding(nn.Module):
    """A frozen `nn.Embedding` whose ids `first_id … first_id+k-1` read from `vectors` instead."""

    def __init__(self, table: nn.Embedding, first_id: int, vectors: nn.Parameter):
        super().__init__()
        self.table = table
        self.first_id = first_id
        self.vectors = vectors

    @property
    def weight(self) -> torch.Tensor:
        return self.table.weight

    @property
    def embedding_dim(self) -> int:
        return self.table.embedding_dim

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        index = input_ids - self.first_id
        is_new = (index >= 0) & (index < self.vectors.shape[0])
        rows = self.table(input_ids.clamp(max=self.table.num_embeddings - 1))
        # F.embedding, not `vectors[index]`: indexing's backward (index_put_ with accumulate)
        # adds rows in an order that differs between processes on several CPU threads, while
        # the embedding backward sums each row serially in index order.
        new_rows = F.embedding(index.clamp(0, self.vectors.shape[0] - 1), self.vectors)
        new_rows = new_rows.to(rows.dtype)
        return torch.where(is_new.unsqueeze(-1), new_rows, rows)


def _one_token(tokenizer, word: str) -> int:
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise ValueError(
            f"word.initializer={word!r} is {len(ids)} tokens ({' '.join(pieces)}), not one; "
            "choose a single-token word such as 'toy', 'cat' or 'painting'"
        )
    return ids[0]


class Word:
    """A placeholder `token` with `num_vectors` vectors per text encoder, plus optional
    per-image tokens (the paper's variant: one extra vector for each training image).

    Args:
        components: the model; its tokenizers gain the new tokens and its text encoders get
            a `PlaceholderEmbedding` each.
        token: the placeholder, e.g. `<cat-toy>`; refused if the tokenizer already knows it.
        initializer: a one-token word whose embedding every new vector starts from.
        num_vectors: vectors of the word (`token`, `token_1`, …).
        num_image_tokens: per-image tokens `token_img0`, … (0 to disable).
    """

    def __init__(
        self,
        components: Components,
        token: str,
        initializer: str,
        num_vectors: int = 1,
        num_image_tokens: int = 0,
    ):
        if num_vectors < 1:
            raise ValueError(f"word.num_vectors={num_vectors} must be at least 1")
        self.token = token
        self.num_vectors = num_vectors
        self.word_tokens = [token] + [f"{token}_{i}" for i in range(1, num_vectors)]
        self.image_tokens = [f"{token}_img{i}" for i in range(num_image_tokens)]
        self.original_tokenizers = [copy.deepcopy(t) for t in components.tokenizers]
        self.components = components
        self.vectors: list[nn.Parameter] = []
        self.initial: list[torch.Tensor] = []
        self.tables: list[nn.Embedding] = []
        new_tokens = self.word_tokens + self.image_tokens
        for tokenizer, encoder in zip(components.tokenizers, components.text_encoders, strict=True):
            # CLIP's vocabulary spells words "cat</w>": a token that encodes to one known id is
            # a word the model already has, and adding it would shadow that word.
            known = [
                t
                for t in new_tokens
                if t in tokenizer.get_vocab()
                or len(tokenizer(t, add_special_tokens=False).input_ids) == 1
            ]
            if known:
                raise ValueError(
                    f"word.token={token!r}: {known[0]!r} is already in the vocabulary; "
                    "choose a new placeholder such as '<my-concept>'"
                )
            init_id = _one_token(tokenizer, initializer)
            tokenizer.add_tokens(new_tokens)
            ids = tokenizer.convert_tokens_to_ids(new_tokens)
            if ids != list(range(ids[0], ids[0] + len(ids))):
                raise RuntimeError(f"tokenizer gave non-contiguous ids {ids} to the new tokens")
            table = encoder.get_input_embeddings()
            init = table.weight[init_id].detach().float().clone()
            vectors = nn.Parameter(init.repeat(len(new_tokens), 1))
            encoder.set_input_embeddings(PlaceholderEmbedding(table, ids[0], vectors))
            self.tables.append(table)
            self.vectors.append(vectors)
            self.initial.append(init)
        self.typical_norm = float(self.tables[0].weight.float().norm(dim=-1).median())

    def parameters(self) -> list[nn.Parameter]:
        return self.vectors

    def text(self, active: int | None = None) -> str:
        """What stands for the word in a prompt: its first `active` tokens."""
        return " ".join(self.word_tokens[: active or self.num_vectors])

    def keep_inactive(self, active: int) -> None:
        """Hold vectors not yet in use at their start value (AdamW's decay would move them)."""
        with torch.no_grad():
            for vectors, init in zip(self.vectors, self.initial, strict=True):
                vectors[active : self.num_vectors] = init

    def l2_to_initializer(self) -> torch.Tensor:
        """Mean squared distance of the word's vectors to the initializer embedding."""
        return sum(
            (v[: self.num_vectors] - init).pow(2).sum(-1).mean()
            for v, init in zip(self.vectors, self.initial, strict=True)
        )

    @torch.no_grad()
    def stats(self) -> dict[str, float]:
        """Norm of the word's vectors and their cosine to the initializer (first encoder)."""
        v = self.vectors[0][: self.num_vectors].float()
        cosine = torch.nn.functional.cosine_similarity(v, self.initial[0].expand_as(v), dim=-1)
        return {
            "word/norm": float(v.norm(dim=-1).mean()),
            "word/cosine_to_init": float(cosine.mean()),
            "word/shift": float((v - self.initial[0]).norm(dim=-1).max()),
        }

    def learned(self, step: int | None = None) -> LearnedWord:
        """The word's vectors as a file-format-independent `LearnedWord` (CPU, fp32)."""
        return LearnedWord(
            token=self.token,
            vectors=[v[: self.num_vectors].detach().float().cpu().clone() for v in self.vectors],
            step=step,
            checkpoint_name=self.components.name,
        )
