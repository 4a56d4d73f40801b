"""Prompt templates: the neutral sentences a new word is trained in.

The object and style sets are the paper's small sets (27 and 19 sentences, from the official
code); "{}" stands for the placeholder. Per-image tokens use the same sentences with " with {}"
appended, as the paper's "a photo of a {} with {}".

A template config gives either one list of sentences shared by all images, or each image its
own sentences (captions naming what else the image shows, so the word learns the concept
alone: a style word then does not take on its images' subjects).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import torch

from tirun.data import image_files

OBJECT_TEMPLATES = [
    "a photo of a {}",
    "a rendering of a {}",
    "a cropped photo of the {}",
    "the photo of a {}",
    "a photo of a clean {}",
    "a photo of a dirty {}",
    "a dark photo of the {}",
    "a photo of my {}",
    "a photo of the cool {}",
    "a close-up photo of a {}",
    "a bright photo of the {}",
    "a cropped photo of a {}",
    "a photo of the {}",
    "a good photo of the {}",
    "a photo of one {}",
    "a close-up photo of the {}",
    "a rendition of the {}",
    "a photo of the clean {}",
    "a rendition of a {}",
    "a photo of a nice {}",
    "a good photo of a {}",
    "a photo of the nice {}",
    "a photo of the small {}",
    "a photo of the weird {}",
    "a photo of the large {}",
    "a photo of a cool {}",
    "a photo of a small {}",
]

STYLE_TEMPLATES = [
    "a painting in the style of {}",
    "a rendering in the style of {}",
    "a cropped painting in the style of {}",
    "the painting in the style of {}",
    "a clean painting in the style of {}",
    "a dirty painting in the style of {}",
    "a dark painting in the style of {}",
    "a picture in the style of {}",
    "a cool painting in the style of {}",
    "a close-up painting in the style of {}",
    "a bright painting in the style of {}",
    "a cropped painting in the style of {}",
    "a good painting in the style of {}",
    "a close-up painting in the style of {}",
    "a rendition in the style of {}",
    "a nice painting in the style of {}",
    "a small painting in the style of {}",
    "a weird painting in the style of {}",
    "a large painting in the style of {}",
]

BUILTIN = {"object": OBJECT_TEMPLATES, "style": STYLE_TEMPLATES}


def builtin(kind: str) -> list[str]:
    """The paper's ``object`` or ``style`` sentences."""
    if kind not in BUILTIN:
        raise ValueError(f"template.kind={kind!r} is unknown; use one of {sorted(BUILTIN)}")
    return list(BUILTIN[kind])


def from_file(path: str) -> list[str]:
    """One template a line, each with exactly one "{}"; blank lines and "#" comments skipped."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ValueError(
            f"template.path={path!r} is not a file; give a text file, one template a line"
        )
    return _read(file)


def captions(path: str) -> list[list[str]]:
    """Each image's own sentences, from ``<image name>.txt`` beside each image of folder ``path``
    (same format as a template file)."""
    sentences = []
    for image in image_files(path):
        file = image.with_suffix(".txt")
        if not file.is_file():
            raise ValueError(
                f"template=captions needs {file.name} beside {image.name}: one sentence a line, each with one '{{}}' for the word"
            )
        sentences.append(_read(file))
    return sentences


def per_image(templates: list[str] | list[list[str]], num_images: int) -> list[list[str]]:
    """One list of sentences per training image: shared templates repeated, or the captions."""
    if templates and all(isinstance(t, str) for t in templates):
        return [list(templates)] * num_images
    if len(templates) != num_images:
        raise ValueError(
            f"the template config gives sentences for {len(templates)} images but the dataset has {num_images}; give one caption set per image"
        )
    return [list(t) for t in templates]


def _read(file: Path) -> list[str]:
    templates = [
        line.strip()
        for line in file.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    bad = [t for t in templates if t.count("{}") != 1]
    if bad or not templates:
        raise ValueError(
            f"template file {file}: every line needs exactly one '{{}}' for the word"
            + (f"; this one does not: {bad[0]!r}" if bad else "; the file has no templates")
        )
    return templates


def vectors_that_fit(
    tokenizer, sentence: str, word_ids: Collection[int] | None = None
) -> tuple[int, int]:
    """(how many of ``sentence``'s tokens are word vectors, the most that would fit).

    The text encoder reads ``tokenizer.model_max_length`` tokens (77 for CLIP), its start and
    end tokens included, and the tokenizer cuts the rest: vectors past the cut are never read,
    so they never train. ``sentence`` is as the tokenizer reads it (a word's vectors spelled
    out); ``word_ids`` are the vectors' ids, by default every added token that is not a
    special one (the words loaded into a pipeline).
    """
    if word_ids is None:
        word_ids = {i for i, t in tokenizer.added_tokens_decoder.items() if not t.special}
    ids = tokenizer(sentence, verbose=False).input_ids  # uncut: verbose=False, no warning
    held = sum(i in word_ids for i in ids)
    return held, tokenizer.model_max_length - (len(ids) - held)


def with_image_token(template: str) -> str:
    """The per-image form of a template: "a photo of a {}" -> "a photo of a {} with {}"."""
    return template + " with {}"


class PromptSampler:
    """Each training sample's sentence, drawn from its own image's templates, with the word in
    it (and, for the paper's per-image-token variant, sometimes the image's own token), turned
    into token ids for every tokenizer.

    It draws from the batch generator that the noise and timesteps also come from (one stream,
    so a run is a function of its seed); `state_dict` is that generator's state.

    Args:
        templates: one list of sentences per training image (see `per_image`).
        tokenizers: the model's tokenizers, which know the word's tokens.
        generator: the batch generator.
        image_tokens: the per-image tokens (empty: the variant is off).
        image_token_p: how often a sentence carries its image's token.
    """

    def __init__(
        self,
        templates: list[list[str]],
        tokenizers: list,
        generator: torch.Generator,
        image_tokens: list[str] | None = None,
        image_token_p: float = 0.0,
    ) -> None:
        self.templates = templates
        self.tokenizers = tokenizers
        self.generator = generator
        self.image_tokens = image_tokens or []
        self.image_token_p = image_token_p
        # A run draws the same few dozen sentences thousands of times: each is tokenized once.
        self.known: dict[str, list[torch.Tensor]] = {}

    def sentences(self, images: list[int], word: str) -> list[str]:
        """One sentence per sample of image index ``images``, with ``word`` in its hole."""
        prompts = []
        for image in images:
            options = self.templates[image]
            template = options[int(torch.randint(len(options), (1,), generator=self.generator))]
            if self.image_tokens and float(torch.rand(1, generator=self.generator)) < (
                self.image_token_p
            ):
                prompts.append(with_image_token(template).format(word, self.image_tokens[image]))
            else:
                prompts.append(template.format(word))
        return prompts

    def ids(self, prompts: list[str]) -> list[torch.Tensor]:
        """One [len(prompts), max_length] id tensor per tokenizer."""
        for prompt in prompts:
            if prompt not in self.known:
                self.known[prompt] = [
                    tok(
                        prompt,
                        padding="max_length",
                        max_length=tok.model_max_length,
                        truncation=True,
                        return_tensors="pt",
                    ).input_ids[0]
                    for tok in self.tokenizers
                ]
        rows = [self.known[p] for p in prompts]
        return [torch.stack(column) for column in zip(*rows, strict=True)]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
