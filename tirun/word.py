"""The new pseudo-word: its tokens, its trainable vectors, and how they enter the text encoder.

The vectors are a parameter of their own, never rows of the embedding table: the optimizer's
state is the size of the word, and the table stays bit-for-bit what it was. They reach the
frozen text encoder through `PlaceholderEmbedding`, a module around the frozen token table that
substitutes the new rows; this needs no `inputs_embeds` and works for both SDXL encoders.
"""

from __future__ import annotations

import copy
from collections.abc import Collection

import torch
import torch.nn.functional as F
from torch import nn

from tirun import embeddings
from tirun.choices import CHOICES
from tirun.embeddings import LearnedWord
from tirun.models import Components
from tirun.templates import vectors_that_fit, with_image_token
from tirun.xti import layer_tokens, per_layer_prompts


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


def _phrase_ids(tokenizer, phrase: str, num_vectors: int) -> list[int]:
    """The initializer's token ids: one token, or a phrase of up to ``num_vectors`` tokens."""
    ids = tokenizer(phrase, add_special_tokens=False).input_ids
    if 1 <= len(ids) <= num_vectors:
        return ids
    pieces = " ".join(tokenizer.convert_ids_to_tokens(ids))
    if num_vectors == 1:
        raise ValueError(
            f"word.initializer={phrase!r} is {len(ids)} tokens ({pieces}), not one; choose a "
            f"single-token word such as 'toy', 'cat' or 'painting', or spread it over "
            f"word.num_vectors={max(2, len(ids))}"
        )
    raise ValueError(
        f"word.initializer={phrase!r} is {len(ids)} tokens ({pieces}), more than "
        f"word.num_vectors={num_vectors}: shorten it or add vectors"
    )


INITS = CHOICES["word.init"]


def starts(
    tokenizer, encoder, phrase: str, num_vectors: int, init: str = "embedding", sdxl: bool = False
) -> torch.Tensor:
    """The word's starting vectors [num_vectors, width] on one text encoder.

    The phrase's tokens are spread over the vectors in order (two tokens over four vectors:
    the first two start from the first token), as AUTOMATIC1111 and invoke-training do.
    ``embedding`` starts from the tokens' rows of the input table (the paper);
    ``encoder_output`` from what the frozen encoder outputs at those tokens in the phrase
    (Cross Initialization, Pang et al. 2024: the state the UNet reads, so the word starts
    where the encoder would take it).
    """
    if init not in INITS:
        raise ValueError(f"word.init={init!r} is unknown; use one of {INITS}")
    ids = _phrase_ids(tokenizer, phrase, num_vectors)
    table = encoder.get_input_embeddings()
    if init == "embedding":
        rows = table.weight[ids].detach().float()
    else:
        full = tokenizer(
            phrase, padding="max_length", max_length=tokenizer.model_max_length,
            truncation=True, return_tensors="pt",
        ).input_ids.to(table.weight.device)  # fmt: skip
        with torch.no_grad():
            out = encoder(full, output_hidden_states=True)
        states = out.hidden_states[-2] if sdxl else out[0]  # what the UNet is given
        rows = states[0, 1 : 1 + len(ids)].detach().float()
    spread = [i * len(ids) // num_vectors for i in range(num_vectors)]
    return rows[spread].clone()


class Word:
    """A placeholder `token` with `num_vectors` vectors per text encoder, plus optional
    per-image tokens (the paper's variant: one extra vector for each training image).

    Args:
        components: the model; its tokenizers gain the new tokens and its text encoders get
            a `PlaceholderEmbedding` each.
        token: the placeholder, e.g. `<cat-toy>`; refused if the tokenizer already knows it.
        initializer: a one-token word (or a phrase of up to `num_vectors` tokens) the vectors
            start from (see `starts`).
        num_vectors: vectors of the word (`token`, `token_1`, …).
        num_image_tokens: per-image tokens `token_img0`, … (0 to disable).
        init: `embedding` (the paper) or `encoder_output` (Cross Initialization).
        init_file: a saved word to continue from (any format tirun reads); it must have
            `num_vectors` vectors of each encoder's width.
        per_layer: Extended Textual Inversion: one token per cross-attention layer, this many
            (`tirun.xti`); 0 for a plain word.
    """

    def __init__(
        self,
        components: Components,
        token: str,
        initializer: str,
        num_vectors: int = 1,
        num_image_tokens: int = 0,
        init: str = "embedding",
        init_file: str | None = None,
        per_layer: int = 0,
    ):
        if num_vectors < 1:
            raise ValueError(f"word.num_vectors={num_vectors} must be at least 1")
        if per_layer and (num_vectors != 1 or init_file):
            raise ValueError(
                "word.per_layer=true learns one vector per layer: leave word.num_vectors=1 "
                "and word.init_file unset"
            )
        self.token = token
        self.per_layer = per_layer
        self.num_vectors = per_layer or num_vectors
        self.word_tokens = [token] + [f"{token}_{i}" for i in range(1, num_vectors)]
        if per_layer:
            self.word_tokens = layer_tokens(token, per_layer)
        self.image_tokens = [f"{token}_img{i}" for i in range(num_image_tokens)]
        self.original_tokenizers = [copy.deepcopy(t) for t in components.tokenizers]
        self.components = components
        self.vectors: list[nn.Parameter] = []
        self.initial: list[torch.Tensor] = []
        self.tables: list[nn.Embedding] = []
        new_tokens = self.word_tokens + self.image_tokens
        saved = self._saved_start(init_file, components, num_vectors) if init_file else None
        encoders_ = list(zip(components.tokenizers, components.text_encoders, strict=True))
        for index, (tokenizer, encoder) in enumerate(encoders_):
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
            start = starts(tokenizer, encoder, initializer, num_vectors, init, len(encoders_) > 1)
            if saved is not None:
                start = saved[index]
            start = start.repeat(max(1, per_layer), 1)  # each layer starts alike
            tokenizer.add_tokens(new_tokens)
            ids = tokenizer.convert_tokens_to_ids(new_tokens)
            if ids != list(range(ids[0], ids[0] + len(ids))):
                raise RuntimeError(f"tokenizer gave non-contiguous ids {ids} to the new tokens")
            table = encoder.get_input_embeddings()
            image_starts = start.mean(0, keepdim=True).repeat(num_image_tokens, 1)
            vectors = nn.Parameter(torch.cat([start, image_starts]).to(table.weight.device))
            encoder.set_input_embeddings(PlaceholderEmbedding(table, ids[0], vectors))
            self.tables.append(table)
            self.vectors.append(vectors)
            self.initial.append(vectors.detach()[:num_vectors].clone())
        # each encoder's typical row norm: the norm the vectors are held at (`hold_norm`)
        self.typical_norms = [
            float(t.weight.detach().float().norm(dim=-1).median()) for t in self.tables
        ]
        self.typical_norm = self.typical_norms[0]
        # what the health check measures the word's growth against
        self.reference_norm = max(self.typical_norm, float(self.initial[0].norm(dim=-1).mean()))

    @staticmethod
    def _saved_start(path: str, components: Components, num_vectors: int) -> list[torch.Tensor]:
        saved = embeddings.load(path)
        widths = [v.shape[-1] for v in saved.vectors]
        if widths != components.widths or any(v.shape[0] != num_vectors for v in saved.vectors):
            raise ValueError(
                f"word.init_file={path!r} holds {[tuple(v.shape) for v in saved.vectors]}, not "
                f"{num_vectors} vectors of width {components.widths}: set word.num_vectors to "
                "its count, on the model it was learned on"
            )
        return [v.float() for v in saved.vectors]

    def parameters(self) -> list[nn.Parameter]:
        return self.vectors

    def text(self, active: int | None = None) -> str:
        """What stands for the word in a prompt: its first `active` tokens (a per-layer word:
        its first layer's token, which `tirun.xti` rewrites for each layer)."""
        if self.per_layer:
            return self.token
        return " ".join(self.word_tokens[: active or self.num_vectors])

    def check_fits(self, templates: Collection[str], key: str) -> None:
        """Refuse a word too long for the text encoder's context in ``templates`` (config
        ``key``): the prompt would be cut and the vectors past the cut would never train."""
        sentences = {t: t.format(self.text()) for t in templates}
        if self.image_tokens:  # the per-image form carries one more token
            sentences |= {
                with_image_token(t): with_image_token(t).format(self.text(), self.image_tokens[0])
                for t in templates
            }
        for tokenizer in self.components.tokenizers:
            ids = set(tokenizer.convert_tokens_to_ids(self.word_tokens))
            fits = {t: vectors_that_fit(tokenizer, s, ids) for t, s in sentences.items()}
            template = min(fits, key=lambda t: fits[t][1])
            held, most = fits[template]
            if held <= most:
                continue
            context = tokenizer.model_max_length
            if most < 1:
                raise ValueError(
                    f"{key}: {template!r} alone takes {context - most} of the text "
                    f"encoder's {context} tokens, leaving none for the word: shorten it"
                )
            raise ValueError(
                f"word.num_vectors={self.num_vectors} does not fit the text encoder's {context} "
                f"tokens: {key} {template!r} leaves room for {most} (it takes "
                f"{context - most} with the start and end tokens); use word.num_vectors={most} "
                "or fewer"
            )

    def layer_prompts(self, prompts: list[str]) -> list[str]:
        """The sentences as the text encoders read them: as they are, or for a per-layer word
        once per cross-attention layer, each with that layer's token (layer-major)."""
        if not self.per_layer:
            return prompts
        return per_layer_prompts(prompts, [self.token], self.per_layer)

    def keep_inactive(self, active: int) -> None:
        """Hold vectors not yet in use at their start value (AdamW's decay would move them)."""
        with torch.no_grad():
            for vectors, init in zip(self.vectors, self.initial, strict=True):
                vectors[active : self.num_vectors] = init[active:]

    def hold_norm(self) -> None:
        """Rescale every vector to its encoder's typical row norm (OneTrainer's
        `preserve_embedding_norm`): the direction learns, the length stays a word's."""
        with torch.no_grad():
            for vectors, norm in zip(self.vectors, self.typical_norms, strict=True):
                vectors.mul_(norm / vectors.norm(dim=-1, keepdim=True).clamp(min=1e-12))

    def l2_to_initializer(self) -> torch.Tensor:
        """Mean squared distance of the word's vectors to where they started."""
        return sum(
            (v[: self.num_vectors] - init).pow(2).sum(-1).mean()
            for v, init in zip(self.vectors, self.initial, strict=True)
        )

    @torch.no_grad()
    def stats(self) -> dict[str, float]:
        """Norm of the word's vectors and their cosine to the initializer (first encoder)."""
        v = self.vectors[0][: self.num_vectors].float()
        cosine = torch.nn.functional.cosine_similarity(v, self.initial[0], dim=-1)
        return {
            "word/norm": float(v.norm(dim=-1).mean()),
            "word/cosine_to_init": float(cosine.mean()),
            "word/shift": float((v - self.initial[0]).norm(dim=-1).max()),
        }

    def remove(self) -> None:
        """Give the model back as it was before the word: each text encoder its own table and
        each tokenizer its vocabulary without the word's tokens (the vectors stay readable)."""
        for encoder, table in zip(self.components.text_encoders, self.tables, strict=True):
            encoder.set_input_embeddings(table)
        self.components.tokenizers[:] = self.original_tokenizers

    def learned(self, step: int | None = None, vectors: list | None = None) -> LearnedWord:
        """The word's vectors (or ``vectors``, a kept copy of them) as a file-format-independent
        `LearnedWord` (CPU, fp32)."""
        source = [torch.as_tensor(v) for v in vectors] if vectors is not None else self.vectors
        return LearnedWord(
            token=self.token,
            vectors=[v[: self.num_vectors].detach().float().cpu().clone() for v in source],
            step=step,
            checkpoint_name=self.components.name,
        )
