"""How a saved word reaches a diffusers pipeline: the one road from a file to pictures.

`pipeline_with_words` gives a pipeline over the model as it was before any word was added,
with saved words loaded as users load them: plain words through diffusers' own
``load_textual_inversion`` (`load_into_pipeline`, which checks widths and names first), XTI
words through `xti.load_into_pipeline`. Validation previews, applications, evaluation and
ToyBench all draw through it (`sampling.sample`), so what they show is what the file gives.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from tirun import xti
from tirun.embeddings import LearnedWord, Source, load
from tirun.models import Components
from tirun.templates import vectors_that_fit


@contextmanager
def pipeline_with_words(
    components: Components,
    sources: Sequence,
    scheduler: str = "ddim",
    tokens: Sequence[str | None] | None = None,
    tokenizers: Sequence | None = None,
) -> Iterator[tuple]:
    """A pipeline over the model as it was before any word was added, with the *saved* words
    ``sources`` loaded by diffusers' own ``load_textual_inversion``; yields (pipe, tokens).

    This is the one road from a file to pictures, so a preview shows exactly what the file
    gives users. Inside the block the text encoders carry their untouched tables (a word being
    trained is set aside); afterwards everything comes back, rows included (transformers
    resizes a table in place when a pipeline loads a word into it).

    Args:
        components: the model (a trained word's wrappers may be on its text encoders).
        sources: word files (see `load_into_pipeline`) or `LearnedWord`s.
        scheduler: the sampling scheduler, `ddim` or `ddpm`.
        tokens: token names overriding the files', one per source.
        tokenizers: the tokenizers as they were before training added the word (default: the
            model's own, when no word was added to them).
    """
    encoders = components.text_encoders
    processors = components.unet.attn_processors  # an XTI word installs its own
    installed = [e.get_input_embeddings() for e in encoders]
    tables = [getattr(module, "table", module) for module in installed]
    sizes = [e.config.vocab_size for e in encoders]
    weights = [(t.weight.data, t.num_embeddings) for t in tables]
    for encoder, table in zip(encoders, tables, strict=True):
        encoder.set_input_embeddings(table)
    try:
        plain = [copy.deepcopy(t) for t in (tokenizers or components.tokenizers)]
        pipe = Components(**{**vars(components), "tokenizers": plain}).pipeline(scheduler)
        pipe.set_progress_bar_config(disable=True)
        yield pipe, _load_words(pipe, list(sources), tokens)
    finally:
        components.unet.set_attn_processor(processors)
        for encoder, module, size in zip(encoders, installed, sizes, strict=True):
            encoder.set_input_embeddings(module)
            encoder.config.vocab_size = size
        for table, (weight, rows) in zip(tables, weights, strict=True):
            table.weight.data = weight
            table.num_embeddings = rows


def _load_words(pipe, sources: list, tokens: Sequence[str | None] | None) -> list[str]:
    """Plain words through `load_into_pipeline`, XTI words through `xti`'s loader,
    each under its file's name or the one in ``tokens``."""
    names = list(tokens) if tokens is not None else [None] * len(sources)
    plain = [(i, s) for i, s in enumerate(sources) if not xti.is_xti_file(s)]
    loaded: dict[int, str] = {}
    if plain:
        added = load_into_pipeline(
            pipe, [s for _, s in plain], [names[i] for i, _ in plain] if tokens else None
        )
        loaded.update({i: name for (i, _), name in zip(plain, added, strict=True)})
    for i, source in enumerate(sources):
        if i not in loaded:
            loaded[i] = xti.load_into_pipeline(pipe, source, names[i])
    return [loaded[i] for i in range(len(sources))]


def load_into_pipeline(
    pipe: Any,
    sources: Source | LearnedWord | Sequence[Source | LearnedWord],
    tokens: Sequence[str | None] | None = None,
) -> list[str]:
    """Add learned words to a diffusers pipeline through its own ``load_textual_inversion``.

    Everything is checked before the pipeline is touched, so a refused word leaves it as it
    was. SDXL words are loaded once per encoder (``text_encoder=``/``tokenizer=``), as the
    diffusers docs do for SDXL. In prompts to the pipeline write ``word.token`` alone: the
    pipeline expands a multi-vector token itself (see `prompt_tokens`).

    Args:
        pipe: a `StableDiffusionPipeline`, `StableDiffusionXLPipeline` or a variant: anything
            with ``tokenizer``/``text_encoder`` (and ``tokenizer_2``/``text_encoder_2``) and
            ``load_textual_inversion``.
        sources: a path (file, diffusers folder, or a pair for SDXL), a `LearnedWord`, or a list
            of them.
        tokens: token names overriding those in the files, one per source (``None`` keeps one).

    Returns:
        The tokens added, one per word.
    """
    # 1. Read every word
    many = isinstance(sources, list) or (
        isinstance(sources, tuple) and not all(isinstance(s, (str, Path)) for s in sources)
    )
    items = list(sources) if many else [sources]
    names = list(tokens) if tokens is not None else [None] * len(items)
    if len(names) != len(items):
        raise ValueError(
            f"tokens has {len(names)} names for {len(items)} sources; give one per source"
        )
    words = []
    for item, name in zip(items, names, strict=True):
        if isinstance(item, LearnedWord):
            words.append(replace(item, token=name) if name else item)
        else:
            words.append(load(item, token=name))

    # 2. Check widths, encoder counts and names against the pipeline and each other
    encoders = _encoders(pipe)
    for word in words:
        _check_fits(word, encoders, type(pipe).__name__)
    _check_clashes(words, encoders)

    # 3. Load through diffusers, one call per text encoder
    for i, (_, tokenizer, encoder) in enumerate(encoders):
        pipe.load_textual_inversion(
            [w.vectors[i] for w in words],
            token=[w.token for w in words],
            tokenizer=tokenizer,
            text_encoder=encoder,
        )
    return [w.token for w in words]


def check_prompts_fit(pipe: Any, prompts: Sequence[str], where: str) -> None:
    """Refuse prompts whose loaded words do not fit the text encoder's context beside the rest
    of the prompt: the pipeline would cut the prompt and the words' last vectors would be lost.

    Args:
        pipe: a pipeline with the words loaded (`pipeline_with_words`).
        prompts: the prompts as given to the pipeline (a word by its bare token).
        where: what the prompts are, for the message (e.g. ``application=composition``).
    """
    for _, tokenizer, _ in _encoders(pipe):
        for prompt in prompts:
            # as the pipeline reads it: "<w>" -> "<w> <w>_1 ..." (an XTI word stays one token)
            held, most = vectors_that_fit(tokenizer, pipe.maybe_convert_prompt(prompt, tokenizer))
            if held > most:
                context = tokenizer.model_max_length
                raise ValueError(
                    f"embeddings: the words in {where}'s prompt {prompt!r} have {held} vectors "
                    f"and the text encoder's {context} tokens leave room for {most} beside the "
                    f"rest of the prompt; use words of at most {most} vectors in all, or "
                    "shorter prompts"
                )


def _encoders(pipe: Any) -> list[tuple[str, Any, Any]]:
    if getattr(pipe, "tokenizer", None) is None or getattr(pipe, "text_encoder", None) is None:
        raise ValueError(
            f"{type(pipe).__name__} has no tokenizer/text_encoder to add words to "
            "(an SDXL refiner has only the second encoder); use a base pipeline"
        )
    encoders = [("text_encoder", pipe.tokenizer, pipe.text_encoder)]
    if getattr(pipe, "text_encoder_2", None) is not None:
        encoders.append(("text_encoder_2", pipe.tokenizer_2, pipe.text_encoder_2))
    return encoders


def _check_fits(word: LearnedWord, encoders: list[tuple[str, Any, Any]], pipe_name: str) -> None:
    if len(word.vectors) != len(encoders):
        kind = {1: "SD1/SD2", 2: "SDXL"}
        raise ValueError(
            f"{word.token} is an {kind[len(word.vectors)]} word with vectors for "
            f"{len(word.vectors)} text encoder(s) but {pipe_name} has {len(encoders)}: load it "
            f"into an {kind[len(word.vectors)]} pipeline"
        )
    for (attr, _, encoder), width in zip(encoders, word.widths, strict=True):
        expected = encoder.get_input_embeddings().weight.shape[-1]
        if width != expected:
            where = "the text encoder" if len(encoders) == 1 else f"the text encoder ({attr})"
            raise ValueError(
                f"{word.token} has vectors of width {width} but {where} takes {expected}: "
                "it was trained for another model (e.g. SD1 vs SD2)"
            )


def _check_clashes(words: list[LearnedWord], encoders: list[tuple[str, Any, Any]]) -> None:
    """Refuse names diffusers would refuse or mix up when it expands multi-vector prompts.

    diffusers expands ``<t>`` to ``<t> <t>_1 ...`` while ``<t>_i`` is an added token, so the
    next name after a word's last vector must stay free too.
    """
    owner: dict[str, str] = {}
    for word in words:
        # CLIP's tokenizer lowercases the prompt before diffusers looks for "<T>_1", so a
        # capitalised multi-vector word would silently get its first vector only.
        if word.num_vectors() > 1 and word.token != word.token.lower():
            raise ValueError(
                f"{word.token} has {word.num_vectors()} vectors and capital letters; the "
                "pipeline lowercases prompts and would use only its first vector: name it "
                f"{word.token.lower()} (tokens=[...])"
            )
        for name in word.tokens():
            if name in owner:
                raise ValueError(
                    f"{word.token} clashes with {owner[name]}: both use the token {name}; "
                    "rename one with tokens=[...]"
                )
            owner[name] = word.token
    for word in words:
        after = f"{word.token}_{word.num_vectors()}"
        if after in owner:
            raise ValueError(
                f"{owner[after]} clashes with {word.token}: the pipeline would read {after} as "
                f"one more vector of {word.token}; rename one with tokens=[...]"
            )
    for attr, tokenizer, _ in encoders:
        vocab = tokenizer.get_vocab()
        for word in words:
            for name in [*word.tokens(), f"{word.token}_{word.num_vectors()}"]:
                if name in vocab:
                    raise ValueError(
                        f"{name} is already in the tokenizer of {attr}: choose another token "
                        "(tokens=[...]) or remove it with pipe.unload_textual_inversion"
                    )
