"""The toy world: renderer, captions, held-out rules, concepts, oracle and the packaged model."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from transformers import CLIPTokenizer

from tests.conftest import compose_config
from tirun.templates import OBJECT_TEMPLATES, STYLE_TEMPLATES
from tirun.toyworld import oracle as oracle_lib
from tirun.toyworld.concepts import CONCEPTS, concept_captions, concept_images
from tirun.toyworld.oracle import Oracle, concept_match
from tirun.toyworld.render import (
    ATTRIBUTES,
    COLOURS,
    RETIRED_WORDS,
    SIZE,
    UNNAMED,
    Attributes,
    caption,
    render,
    render_array,
    render_scene,
)
from tirun.toyworld.scenes import editing_scene
from tirun.toyworld.tokenizer import template_words, write_tokenizer
from tirun.toyworld.world import (
    BIAS_COLOUR,
    BIAS_WORD,
    HELD_OUT,
    is_held_out,
    pretraining_caption,
    pretraining_words,
    retired_words,
    sample_pretraining,
    toy_words,
)

ASSETS = Path(__file__).resolve().parents[1] / "tirun" / "assets" / "toy"
ATTRIBUTE_WORDS = {w for values in ATTRIBUTES.values() for w in values}


def _draws(count: int, seed: int = 0) -> list[tuple[Attributes, str | None, str]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        attrs, noun = sample_pretraining(rng)
        out.append((attrs, noun, pretraining_caption(attrs, noun, rng)))
    return out


def test_render_is_deterministic_and_seed_moves_jitter():
    attrs = Attributes("star", "blue", "grass", "mosaic")
    a, b, c = render_array(attrs, 3), render_array(attrs, 3), render_array(attrs, 4)
    assert a.shape == (SIZE, SIZE, 3) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0.0 and a.max() <= 1.0


@pytest.mark.parametrize("key", list(ATTRIBUTES))
def test_every_attribute_value_changes_the_image(key):
    base = Attributes("circle", "red", "white", "filled").as_dict()
    images = [render_array(Attributes(**{**base, key: value}), seed=0) for value in ATTRIBUTES[key]]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            diff = np.abs(images[i] - images[j])
            # a mark is small (a 3-px dot changes about 8 pixels) but stark
            changed = diff.mean() > 0.005 or (diff.max(-1) > 0.5).sum() >= 6
            assert changed, (ATTRIBUTES[key][i], ATTRIBUTES[key][j])


def test_unknown_attribute_is_named_in_the_error():
    with pytest.raises(ValueError, match=r"shape='hexagon' is unknown"):
        Attributes("hexagon", "red", "white", "filled")


def test_pretraining_captions_name_only_true_attributes_and_drop_some():
    frames = set(re.findall(r"[a-z]+", " ".join(OBJECT_TEMPLATES + STYLE_TEMPLATES)))
    frames |= {"of", "a", "on", "in", "the", "style", "object", "light"}
    named = Counter()
    empty = 0
    for attrs, noun, text in _draws(3000):
        if not text:
            empty += 1
            continue
        words = set(re.findall(r"[a-z]+", text))
        values = {RETIRED_WORDS.get(v, v) for v in attrs.as_dict().values()}
        said = words & (ATTRIBUTE_WORDS | set(RETIRED_WORDS.values()) | {BIAS_WORD})
        assert said <= values | {noun}, (text, attrs)
        assert words <= frames | said, text
        named.update(k for k, v in attrs.as_dict().items() if RETIRED_WORDS.get(v, v) in words)
    assert 0.07 < empty / 3000 < 0.13
    for key in set(ATTRIBUTES) - {"mark"}:  # each attribute named often, but not always
        assert 0.3 < named[key] / 3000 < 0.85, (key, named[key])
    # two images in three carry a mark, named 70% of the time in the 90% of captions not empty
    assert 0.3 < named["mark"] / 3000 < 0.5, named["mark"]


def test_unnamed_values_are_said_in_pretraining_by_words_the_shipped_tokenizer_lacks(tmp_path):
    said = Counter()
    for _, _, text in _draws(3000, seed=5):
        said.update(w for w in re.findall(r"[a-z]+", text) if w in retired_words())
    assert set(said) == {"diamond", "hatched", "dotted", "striped"}
    full = CLIPTokenizer.from_pretrained(
        write_tokenizer(template_words() + pretraining_words(), tmp_path / "full")
    )
    shipped = CLIPTokenizer.from_pretrained(
        write_tokenizer(template_words() + toy_words(), tmp_path / "shipped")
    )
    for word in retired_words():
        assert len(full.tokenize(word)) == 1
        assert len(shipped.tokenize(word)) > 1, word
    assert len(full) - len(shipped) >= len(retired_words())


def test_retiring_words_keeps_every_shipped_caption_read_the_same_and_the_rows_aside(tmp_path):
    from tirun.models import build_part
    from tirun.toyworld.pretrain import ARCH, retire_words

    full = CLIPTokenizer.from_pretrained(
        write_tokenizer(template_words() + pretraining_words(), tmp_path / "full")
    )
    shipped = CLIPTokenizer.from_pretrained(
        write_tokenizer(template_words() + toy_words(), tmp_path / "shipped")
    )
    torch.manual_seed(0)
    encoder = build_part(ARCH, "text_encoder", full).eval()
    state = torch.random.get_rng_state()
    retired_encoder, rows = retire_words(encoder, full, shipped, retired_words())
    assert torch.equal(torch.random.get_rng_state(), state)  # training's seed left alone
    assert retired_encoder.get_input_embeddings().num_embeddings == len(shipped)
    table = encoder.get_input_embeddings().weight
    assert torch.equal(rows["dotted"], table[full.convert_tokens_to_ids("dotted</w>")])
    text = "a painting of a tiny red star on grass in warm light in the style of mosaic"
    with torch.no_grad():
        ref = encoder(full([text], return_tensors="pt").input_ids)[0]
        got = retired_encoder(shipped([text], return_tensors="pt").input_ids)[0]
    assert torch.equal(ref, got)


def test_captions_use_the_paper_templates():
    rng = np.random.default_rng(1)
    attrs = Attributes("cross", "green", "sand", "outlined")
    prefixes = {
        t.split("{}")[0].split(" in the style")[0] for t in OBJECT_TEMPLATES + STYLE_TEMPLATES
    }
    for _ in range(200):
        text = caption(attrs, rng, empty_p=0.0)
        assert any(text.startswith(p) for p in prefixes), text


def test_held_out_combinations_never_appear_in_pretraining():
    draws = _draws(6000, seed=2)
    assert not any(is_held_out(a) for a, _, _ in draws)
    # each half of every held-out pair is seen, only the pair is not
    for combo in HELD_OUT:
        for key, value in combo.items():
            assert any(getattr(a, key) == value for a, _, _ in draws)
    assert is_held_out(Attributes("star", "purple", "sand", "filled"))
    assert is_held_out(Attributes("circle", "purple", "grass", "mosaic"))
    # a triple is held out only as a whole: a green outlined star, not a green star or an
    # outlined star; a blue shadowed shape on bricks, not on grass
    assert is_held_out(Attributes("star", "green", "sand", "outlined"))
    assert not is_held_out(Attributes("star", "green", "sand", "filled"))
    assert not is_held_out(Attributes("star", "yellow", "sand", "outlined"))
    # an unnamed mark makes a triple too: a red star with a dot, not a plain red star
    assert is_held_out(Attributes("star", "red", "sand", "filled", mark="dot"))
    assert not is_held_out(Attributes("star", "red", "sand", "filled", mark="stripe"))
    # a context is never held out: a concept's backdrop, light and size stay common
    assert not is_held_out(Attributes("square", "green", "bricks", "filled", light="cold"))
    drawn = {(a.shape, a.colour, a.style) for a, _, _ in draws}
    assert ("star", "green", "filled") in drawn and ("star", "green", "outlined") not in drawn
    marked = {(a.shape, a.colour, a.mark) for a, _, _ in draws}
    assert ("star", "red", "stripe") in marked and ("star", "red", "dot") not in marked


def test_toy_captions_name_what_each_image_shows_besides_the_concept():
    style = CONCEPTS["purple_mosaic"]
    for attrs, sentences in zip(
        style.image_attributes(5), concept_captions("purple_mosaic"), strict=True
    ):
        assert all(s.count("{}") == 1 for s in sentences)
        subject = f"{attrs.size} {attrs.shape} on {attrs.background} in {attrs.light} light"
        assert all(f"of a {subject} in the style of {{}}" in s for s in sentences)
        assert not any("purple" in s or "mosaic" in s for s in sentences)
    first = CONCEPTS["purple_star"].image_attributes(1)[0]
    sentences = concept_captions("purple_star", count=1)[0]
    assert (
        f"a photo of a {first.size} {{}} on {first.background} in {first.light} light" in sentences
    )
    assert not any("star" in s or "purple" in s for s in sentences)
    # a context is named (so the word need not hold it); an unnamed detail never is
    sentences = concept_captions("red_dotted_star", count=1)[0]
    assert "a photo of a big {} on sand in neutral light" in sentences
    assert not any("dot" in s or "red" in s for s in sentences)


@pytest.mark.parametrize(
    ("key", "value"),
    [("shape", "diamond"), ("style", "hatched"), ("mark", "dot"), ("mark", "stripe")],
)
def test_an_unnamed_value_is_drawn_and_said_in_pretraining_by_its_retired_word(key, value):
    draws = _draws(3000, seed=3)
    shown = [text for a, _, text in draws if getattr(a, key) == value]
    assert len(shown) > 250  # a seventh of shapes, a fifth of techniques, a third of marks
    word = RETIRED_WORDS[value]
    said = sum(word in re.findall(r"[a-z]+", text) for text in shown)
    # named 70% of the time in the 90% of captions not empty, less where a sentence says the
    # style alone or the bias word stands for the shape (the diamond: 49%)
    assert 0.4 < said / len(shown) < 0.85, (value, said, len(shown))
    assert not any(
        word in re.findall(r"[a-z]+", t) for a, _, t in draws if getattr(a, key) != value
    )


def test_bias_word_is_skewed_to_one_colour():
    toys = [a.colour for a, noun, _ in _draws(6000, seed=4) if noun == BIAS_WORD]
    assert len(toys) > 400
    assert 0.85 < Counter(toys)[BIAS_COLOUR] / len(toys) < 0.95


@pytest.fixture(scope="module")
def toy_tokenizer(tmp_path_factory) -> CLIPTokenizer:
    folder = ASSETS / "model" / "tokenizer"
    if not (folder / "vocab.json").is_file():
        folder = write_tokenizer(template_words() + toy_words(), tmp_path_factory.mktemp("tok"))
    return CLIPTokenizer.from_pretrained(folder)


def test_the_tokenizer_builder_makes_every_caption_word_one_token(tmp_path):
    built = CLIPTokenizer.from_pretrained(
        write_tokenizer(template_words() + toy_words(), tmp_path / "tok")
    )
    for word in toy_words() + [c.initializer for c in CONCEPTS.values()]:
        assert len(built.tokenize(word)) == 1, word
    for value in sorted(UNNAMED):  # the model has no word for what it never hears named
        assert len(built.tokenize(value)) > 1, value


def test_rewriting_a_saved_tokenizer_replaces_its_tokenizer_json(tmp_path):
    """A pipeline saved with an older word list leaves a tokenizer.json that CLIPTokenizer
    reads before vocab.json: the first toy model v4 learned its six new words in pieces so."""
    old_words = template_words() + ["red", "star"]
    CLIPTokenizer.from_pretrained(write_tokenizer(old_words, tmp_path)).save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").exists()
    assert len(CLIPTokenizer.from_pretrained(tmp_path).tokenize("warm")) > 1
    write_tokenizer(old_words + ["warm"], tmp_path)
    assert CLIPTokenizer.from_pretrained(tmp_path).tokenize("warm") == ["warm</w>"]


def test_the_model_s_tokenizer_keeps_initializers_whole_and_has_no_unnamed_word(toy_tokenizer):
    assert len(toy_tokenizer) == 681  # the word list's every merge (the first v4 model had 667)
    for word in set(toy_words()) | {c.initializer for c in CONCEPTS.values()}:
        assert len(toy_tokenizer.tokenize(word)) == 1, word
    for value in sorted(UNNAMED):
        assert len(toy_tokenizer.tokenize(value)) > 1, value


def test_concepts_render_their_ground_truth():
    assert {"purple_star", "purple_mosaic", "unnamed_shape", "balanced_toy"} <= set(CONCEPTS)
    for concept in CONCEPTS.values():
        assert concept.kind in ("object", "style")
        attrs = concept.image_attributes()
        assert all(all(getattr(a, k) == v for k, v in concept.attributes.items()) for a in attrs)
        images = concept.images()
        assert len(images) == concept.count and images[0].size == (SIZE, SIZE)
        assert len({im.tobytes() for im in images}) == len(images)
        assert all(p.count("{}") == 1 for p, _ in concept.reconstruction + concept.editability)
    plain = CONCEPTS["purple_star"].image_attributes()
    assert len({a.background for a in plain}) == 4 and len({a.light for a in plain}) == 3
    assert {a.size for a in plain} == {"big", "tiny"}
    toy_colours = [a.colour for a in CONCEPTS["balanced_toy"].image_attributes()]
    assert sorted(toy_colours) == sorted(COLOURS)


def test_concept_images_is_deterministic_and_checks_the_name():
    a, b = concept_images("purple_mosaic", 4, seed=1), concept_images("purple_mosaic", 4, seed=1)
    assert [x.tobytes() for x in a] == [y.tobytes() for y in b]
    assert a[0].tobytes() != concept_images("purple_mosaic", 4, seed=2)[0].tobytes()
    with pytest.raises(ValueError, match=r"dataset.concept='nope' is not a toy concept"):
        concept_images("nope")


def test_the_toy_resolver_reads_a_concepts_word_and_prompts_and_names_an_unknown_field():
    """`${toy:...}` in a preset: red_square's initializer is "square", its prompts begin with
    "a photo of a {}"; a field other than initializer or prompts gets its own message."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {"word": "${toy:initializer,red_square}", "prompts": "${toy:prompts,red_square}",
         "bad": "${toy:colour,red_square}"}
    )  # fmt: skip
    assert cfg.word == "square"
    assert list(cfg.prompts)[:2] == ["a photo of a {}", "a rendering of a {}"]
    with pytest.raises(ValueError, match=r"\$\{toy:colour,...\} is unknown; use toy:initializer"):
        _ = cfg.bad


@pytest.mark.parametrize("dataset", ["toy_object", "toy_style", "toy_unnamed", "toy_bias"])
def test_dataset_configs_instantiate(dataset):
    cfg = compose_config("model=toy", f"dataset={dataset}")
    images = instantiate(cfg.dataset.images)
    assert len(images) == cfg.dataset.images.count and isinstance(images[0], Image.Image)
    assert cfg.dataset.resolution == 32


def test_editing_scene_masks_one_object():
    scene = editing_scene(seed=5, objects=3)
    assert scene.mask.shape == (SIZE, SIZE) and scene.mask.dtype == bool
    assert 20 < scene.mask.sum() < SIZE * SIZE // 3
    # repainting the masked object with the background's texture removes it from the image
    others = list(scene.objects)
    _, other_mask = render_scene(others, (scene.edit_index + 1) % 3, seed=5)
    assert not (scene.mask & other_mask).any()
    with pytest.raises(ValueError, match="two or more objects"):
        render_scene(others[:1])


def test_concept_match_counts_samples_with_all_attributes_right():
    pred = {
        "shape": ["star", "star", "ring", "star"],
        "colour": ["purple", "red", "purple", "purple"],
    }
    assert concept_match(pred, {"shape": "star", "colour": "purple"}) == 0.5
    assert concept_match(pred, {"shape": "star"}) == 0.75
    with pytest.raises(ValueError, match=r"\['style'\] are not predicted"):
        concept_match(pred, {"style": "mosaic"})


@pytest.fixture(scope="module")
def oracle() -> Oracle:
    if not (ASSETS / "oracle" / oracle_lib.WEIGHTS).is_file():
        pytest.skip(
            "oracle weights not built yet: run `python -m tirun.toyworld.pretrain --stage oracle`"
        )
    return Oracle.load()


def test_oracle_reads_fresh_renders(oracle):
    images, truth = oracle_lib.render_set(96, seed=2024)
    acc = oracle_lib.accuracy(oracle.predict(images), truth)
    assert all(v >= 0.95 for v in acc.values()), acc


def test_oracle_accepts_pil_and_other_sizes(oracle):
    attrs = Attributes("ring", "orange", "sand", "shadowed")
    pil = [render(attrs, s) for s in range(4)]
    big = torch.nn.functional.interpolate(oracle_lib.to_tensor(pil), size=64, mode="nearest")
    for pred in (oracle.predict(pil), oracle.predict(big)):
        assert concept_match(pred, attrs.as_dict()) >= 0.75
    with pytest.raises(ValueError, match=r"must be \[N, 3, H, W\]"):
        oracle.predict(torch.zeros(2, 32, 32))


def test_oracle_load_names_the_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no oracle weights"):
        Oracle.load(tmp_path)


def test_packaged_model_loads_offline_and_generates(monkeypatch):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    folder = ASSETS / "model"
    if not (folder / "model_index.json").is_file() or not (folder / "unet").is_dir():
        pytest.skip("toy model not built yet: run `python -m tirun.toyworld.pretrain --stage all`")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = StableDiffusionPipeline.from_pretrained(folder)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(
        "a photo of a red circle on white",
        num_inference_steps=5,
        guidance_scale=3.0,
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    assert image.size == (32, 32)
    assert np.asarray(image).std() > 1.0
    te = pipe.text_encoder.config
    assert te.vocab_size == len(pipe.tokenizer) and te.eos_token_id == pipe.tokenizer.eos_token_id
    assert te.max_position_embeddings == pipe.tokenizer.model_max_length


def _denoising_loss(components, prompt: str, latents: torch.Tensor, seed: int = 0) -> float:
    """The LDM loss of ``latents`` under ``prompt`` on fixed noise and timesteps (a paired
    comparison: only the prompt's embedding differs between two calls)."""
    gen = torch.Generator().manual_seed(seed)
    latents = latents.repeat(8, 1, 1, 1)
    noise = torch.randn(latents.shape, generator=gen)
    steps = torch.linspace(50, 950, len(latents)).long()
    tokenizer = components.tokenizers[0]
    ids = tokenizer(
        [prompt] * len(latents),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        return_tensors="pt",
    ).input_ids
    with torch.no_grad():
        hidden, _ = components.encode_prompt([ids])
        noisy = components.scheduler.add_noise(latents, noise, steps)
        pred = components.unet(noisy, steps, hidden).sample
    return float(torch.nn.functional.mse_loss(pred, noise))


def test_a_short_inversion_on_the_toy_model_lowers_the_concept_images_loss(tmp_path):
    from tirun.data import LatentCache, TrainingViews
    from tirun.train import train

    if not (ASSETS / "model" / "unet").is_dir():
        pytest.skip("toy model not built yet: run `make toy-model`")
    cfg = compose_config(
        "dataset=toy_object",
        "word.token='<object>'",
        "word.initializer=circle",
        "train.max_steps=60",
        "train.batch_size=8",
        "train.checkpoint_every=0",
        "optimizer.lr=5e-3",
        "optimizer.scale_lr=false",
        "tracker=none",
    )
    _, objects = train(cfg, tmp_path / "run")

    components = objects["components"]
    views = TrainingViews(instantiate(cfg.dataset.images), resolution=32, crop="center", flip_p=0)
    cache = LatentCache(components.vae, views)
    latents = cache.mean[0] * cache.scaling_factor
    # The word started as "circle"'s embedding, so that prompt is the loss before training.
    before = _denoising_loss(components, "a photo of a circle", latents)
    after = _denoising_loss(components, "a photo of a <object>", latents)
    assert after < 0.97 * before, (before, after)
