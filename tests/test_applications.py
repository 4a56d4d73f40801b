"""The six applications on tiny random models: files, metrics, determinism, errors, re-scoring."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import get_method
from PIL import Image

from tests.conftest import CONF, compose_config
from tirun import applications, embeddings, sampling, xti
from tirun import eval as tirun_eval
from tirun.applications import bld
from tirun.applications.context import Context
from tirun.embeddings import LearnedWord
from tirun.models import build_random
from tirun.toyworld.oracle import Oracle, OracleNet
from tirun.toyworld.render import ATTRIBUTES

APPLICATIONS = sorted(p.stem for p in Path(CONF, "application").glob("*.yaml"))
QUICK = ("application.sampling.samples=1", "application.sampling.steps=1")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread; on a busy shared machine its spin-waits
    cost ten times the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def oracle_dir(tmp_path_factory) -> Path:
    """A random oracle: real code path, arbitrary answers."""
    torch.manual_seed(0)
    classes = {k: list(v) for k, v in ATTRIBUTES.items()}
    folder = tmp_path_factory.mktemp("oracle")
    Oracle(OracleNet(classes, width=4), classes).save(folder)
    return folder


def save_word(folder: Path, token: str = "<concept>", seed: int = 0) -> Path:
    vectors = torch.randn(1, 32, generator=torch.Generator().manual_seed(seed))
    return embeddings.save(
        LearnedWord(token, [vectors]), folder / "learned_embeds.safetensors", "diffusers"
    )[0]


def apply(
    tmp_path: Path,
    app: str,
    *overrides: str,
    words: list[Path] | None = None,
    run_dir: Path | None = None,
) -> dict:
    """`python -m tirun application=APP embeddings=[...]` on the tiny model, toy purple star."""
    words = words or [save_word(tmp_path / "word")]
    cfg = compose_config(
        "model=tiny",
        "dataset=toy_object",
        "word.initializer=circle",
        f"application={app}",
        f"embeddings=[{','.join(str(w) for w in words)}]",
        *QUICK,
        *overrides,
    )
    return applications.run(cfg, run_dir or tmp_path / "run", {}, {})


@pytest.mark.parametrize("app", APPLICATIONS)
def test_every_application_config_names_a_function_and_only_its_arguments(app):
    name, _, _, params = applications._parts(compose_config(f"application={app}"))
    applications._check_keys(name, params)
    assert get_method(params["_target_"]).__module__ == f"tirun.applications.{app}"


def test_unknown_application_key_is_refused(tmp_path):
    cfg = compose_config("application=variation", "+application.bogus=1")
    with pytest.raises(ValueError, match=r"application.bogus is not an option of variation"):
        applications.run(cfg, tmp_path, {}, {})


def test_saved_words_load_into_a_pipeline_and_leave_the_model_as_it_was(tmp_path):
    components = build_random("tiny-sd1", seed=0)
    rows = components.text_encoders[0].get_input_embeddings().weight.shape[0]
    cfg = compose_config("model=tiny", f"embeddings=[{save_word(tmp_path)}]")
    ctx = Context(cfg, tmp_path, {}, {"components": components}, "variation", {})
    with ctx.pipeline("ddim") as (pipe, tokens):
        assert tokens == ["<concept>"] and "<concept>" in pipe.tokenizer.get_vocab()
    assert "<concept>" not in components.tokenizers[0].get_vocab()
    assert components.text_encoders[0].get_input_embeddings().weight.shape[0] == rows


def test_a_run_that_saved_no_word_is_refused(tmp_path):
    cfg = compose_config("model=tiny")
    with pytest.raises(ValueError, match="status 'diverged' and saved no word"):
        Context(cfg, tmp_path, {"status": "diverged"}, {}, "variation", {})
    with pytest.raises(ValueError, match="holds no learned word"):
        Context(cfg, tmp_path, {"status": "finished"}, {}, "variation", {})


def test_the_application_applies_the_word_just_saved_not_one_an_earlier_run_left(tmp_path):
    cfg = compose_config("model=tiny")
    earlier = save_word(tmp_path)  # learned_embeds.safetensors of a paper-recipe run before
    just_saved = tmp_path / xti.FILE_NAME
    metrics = {"status": "finished", "files": [str(just_saved)]}
    assert Context(cfg, tmp_path, metrics, {}, "variation", {}).sources == [just_saved]
    # Of the formats one run saved, the diffusers file is the one applied.
    metrics = {"status": "finished", "files": [str(tmp_path / "concept.pt"), str(earlier)]}
    assert Context(cfg, tmp_path, metrics, {}, "variation", {}).sources == [earlier]


def test_variation_on_a_saved_word_writes_grids_metrics_and_is_deterministic(tmp_path, oracle_dir):
    score = f"application.score.oracle={oracle_dir}"
    prompts = 'application.prompts=["a photo of a {}"]'
    metrics = apply(
        tmp_path,
        "variation",
        score,
        prompts,
        "application.sampling.samples=2",
        run_dir=tmp_path / "a",
    )
    apply(
        tmp_path,
        "variation",
        score,
        prompts,
        "application.sampling.samples=2",
        run_dir=tmp_path / "b",
    )
    result = metrics["applications"]["variation"]
    assert 0 <= result["concept_match"] <= 1 and 0 <= result["baseline_concept_match"] <= 1
    assert list(result["per_prompt"]) == ["a photo of a {}"]
    saved = json.loads((tmp_path / "a/metrics.json").read_text())
    assert saved["applications"]["variation"]["concept_match"] == result["concept_match"]
    assert (tmp_path / "a/config.yaml").is_file()
    for grid in ("word", "baseline", "comparison"):
        a = Image.open(tmp_path / f"a/samples/variation/{grid}.png")
        if grid != "comparison":  # a prompt label, then 2 samples of one prompt at 3x
            assert a.size == (sampling.LABEL_WIDTH + 2 * 96, 96)
        assert a.tobytes() == Image.open(tmp_path / f"b/samples/variation/{grid}.png").tobytes()
    assert metrics["oracle"] == {
        "concept_match": result["concept_match"],
        "initializer_concept_match": result["baseline_concept_match"],
    }


def test_after_training_the_application_uses_the_trained_word_and_keeps_training_metrics(
    tmp_path, oracle_dir
):
    from tirun.__main__ import run

    cfg = compose_config(
        "model=tiny",
        "tracker=none",
        "+exp=object",
        "train.max_steps=1",
        "train.batch_size=1",
        "train.checkpoint_every=0",
        f"application.score.oracle={oracle_dir}",
        *QUICK,
        'application.prompts=["a photo of a {}"]',
    )
    metrics = run(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run/metrics.json").read_text())
    assert saved["status"] == "finished" and saved["steps"] == 1
    assert set(saved["oracle"]) == {"concept_match", "initializer_concept_match"}
    assert saved == json.loads(json.dumps(metrics))


def test_sdxl_words_apply_and_bld_says_it_needs_one_text_encoder(tmp_path):
    vectors = [torch.randn(1, 32), torch.randn(1, 32)]
    files = embeddings.save(
        LearnedWord("<w>", vectors), tmp_path / "learned_embeds.safetensors", "diffusers"
    )
    common = ("model=tiny_sdxl", "application.score.oracle=null")
    metrics = apply(
        tmp_path, "variation", *common, 'application.prompts=["a photo of a {}"]', words=[files[0]]
    )
    assert metrics["applications"]["variation"]["samples"] == 1
    with pytest.raises(ValueError, match="bld runs on SD 1.x/2.x models"):
        apply(tmp_path, "bld", *common, words=[files[0]])


def test_synthesis_and_style_score_each_sentence(tmp_path, oracle_dir):
    score = f"application.score.oracle={oracle_dir}"
    synthesis = apply(
        tmp_path,
        "synthesis",
        score,
        'application.prompts=[{prompt:"a photo of a {} on sand",adds:{background:sand}}]',
    )
    assert list(synthesis["applications"]["synthesis"]["per_prompt"]) == ["a photo of a {} on sand"]
    style = apply(
        tmp_path,
        "style",
        score,
        'application.subjects=[{subject:"red circle",adds:{shape:circle,colour:red}}]',
    )
    assert list(style["applications"]["style"]["per_prompt"]) == [
        "a painting of a red circle in the style of {}"
    ]
    assert set(style["applications"]) == {"synthesis", "style"}  # one metrics.json, both merged


def test_prompts_and_templates_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"application.prompts: 'a photo' needs 1 '\{\}'"):
        apply(tmp_path, "variation", 'application.prompts=["a photo"]')
    with pytest.raises(ValueError, match=r"needs both \{subject\} and \{word\}"):
        apply(tmp_path, "style", 'application.template="a painting in the style of {word}"')


def test_composition_loads_two_words_and_refuses_clashing_tokens_and_concepts(tmp_path, oracle_dir):
    words = [save_word(tmp_path / "a", seed=1), save_word(tmp_path / "b", seed=2)]
    with pytest.raises(ValueError, match="clashes with"):
        apply(tmp_path, "composition", words=words)
    with pytest.raises(ValueError, match="needs two learned words"):
        apply(tmp_path, "composition", words=words[:1])
    with pytest.raises(ValueError, match="disagree on shape: no sample can show both"):
        apply(tmp_path, "composition", "application.concepts=[purple_star,unnamed_shape]",
              words=words)  # fmt: skip
    metrics = apply(
        tmp_path,
        "composition",
        f"application.score.oracle={oracle_dir}",
        'application.tokens=["<star>","<mosaic>"]',
        words=words,
    )
    result = metrics["applications"]["composition"]
    assert "concept_match" in result and "baseline_concept_match" in result


def test_bias_reports_a_distribution_and_its_kl_to_uniform(tmp_path, oracle_dir):
    metrics = apply(
        tmp_path,
        "bias",
        f"application.score.oracle={oracle_dir}",
        "dataset=toy_bias",
        "word.initializer=toy",
        'application.prompts=["a photo of a {}"]',
        "application.sampling.samples=2",
    )
    result = metrics["applications"]["bias"]
    assert result["plain_word"] == "toy" and result["samples"] == 2
    assert set(result["distribution"]) == set(ATTRIBUTES["colour"])
    assert sum(result["distribution"].values()) == pytest.approx(1.0)
    assert 0 <= result["kl_uniform"] <= np.log(6) + 1e-9 and "baseline_kl_uniform" in result


def test_bias_without_a_classifier_says_what_it_needs(tmp_path, image_folder):
    with pytest.raises(ValueError, match="bias needs a classifier"):
        apply(tmp_path, "bias", "dataset=folder", f"dataset.path={image_folder}")


def test_clip_scores_run_through_an_application(tmp_path, image_folder):
    from tests.test_metrics import save_tiny_clip

    folder = save_tiny_clip(tmp_path / "clip")
    metrics = apply(
        tmp_path,
        "variation",
        "dataset=folder",
        f"dataset.path={image_folder}",
        f"application.score.clip={folder}",
        'application.prompts=["a photo of a {}"]',
    )
    result = metrics["applications"]["variation"]
    assert set(result["clip"]) == {"reconstruction", "editability"}
    assert "concept_match" not in result  # a folder of real images has no oracle


def test_paper_scores_without_clip_weights_fail_before_sampling(tmp_path, image_folder):
    with pytest.raises(
        ValueError,
        match=r"application.score.clip='openai/clip-vit-base-patch32' could not be loaded",
    ):
        apply(
            tmp_path,
            "variation",
            "dataset=folder",
            f"dataset.path={image_folder}",
            "application/score=paper",
        )
    assert not (tmp_path / "run/samples").exists()


def source_files(tmp_path: Path, mask_size: int = 32, empty: bool = False) -> tuple[Path, Path]:
    image = Image.new("RGB", (32, 32), (40, 120, 40))
    image.paste((200, 30, 30), (4, 8, 14, 18))
    pixels = np.zeros((mask_size, mask_size), dtype=np.uint8)
    if not empty:
        pixels[6:20, 2:16] = 255
    image.save(tmp_path / "source.png")
    Image.fromarray(pixels).save(tmp_path / "mask.png")
    return tmp_path / "source.png", tmp_path / "mask.png"


def test_bld_refuses_bad_masks(tmp_path):
    image, mask = source_files(tmp_path, mask_size=20)
    with pytest.raises(ValueError, match=r"application.mask is 20x20 but the image is 32x32"):
        bld.load_source(image, mask, 32)
    image, mask = source_files(tmp_path, empty=True)
    with pytest.raises(ValueError, match="application.mask is empty"):
        bld.load_source(image, mask, 32)
    Image.new("L", (32, 32), 255).save(mask)
    with pytest.raises(ValueError, match="covers the whole image"):
        bld.load_source(image, mask, 32)
    tiny = np.zeros((32, 32), dtype=bool)
    tiny[0, 1] = True  # nearest resize to 16x16 samples even pixels only
    with pytest.raises(ValueError, match="vanishes at latent resolution"):
        bld.latent_masks(tiny, (16, 16), [0])
    with pytest.raises(ValueError, match="must be odd"):
        bld.latent_masks(np.ones((32, 32), dtype=bool), (16, 16), [4])
    with pytest.raises(ValueError, match="needs application.mask"):
        apply(tmp_path, "bld", f"application.image={image}")


def test_bld_keeps_the_source_latents_outside_the_mask_and_is_deterministic(tmp_path):
    pipe = build_random("tiny-sd1", seed=0).pipeline()
    source = bld.load_source(*source_files(tmp_path), 32)
    x = torch.from_numpy(np.asarray(source.image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    kwargs = dict(
        samples=2, steps=4, guidance=3.0, strength=0.75, blend_start=0.25, dilations=[3, 0], seed=0
    )
    latents, mask = bld.blend(pipe, "a photo of a toy", x, source.mask, **kwargs)
    again, _ = bld.blend(pipe, "a photo of a toy", x, source.mask, **kwargs)
    assert latents.shape == (2, 4, 16, 16) and torch.equal(latents, again)
    z0 = pipe.vae.encode(x * 2 - 1).latent_dist.mean * pipe.vae.config.scaling_factor
    outside = (mask == 0).expand_as(latents)
    assert torch.equal(latents[outside], z0.expand_as(latents)[outside])
    assert not torch.equal(latents[~outside], z0.expand_as(latents)[~outside])


def test_decoder_fix_raises_background_psnr(tmp_path):
    vae = build_random("tiny-sd1", seed=0).vae
    source = bld.load_source(*source_files(tmp_path), 32)
    x = torch.from_numpy(np.asarray(source.image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    mask = torch.tensor(source.mask)
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = bld.decode(vae, latents)
    fixed = bld.fit_decoder(
        vae, latents, plain, x, mask, steps=20, lr=1e-3, background_weight=100.0
    )
    with torch.no_grad():
        after = bld.decode(fixed, latents)
    from tirun.metrics.background import background_psnr

    assert background_psnr(after[0], x[0], mask) > background_psnr(plain[0], x[0], mask) + 1.0
    assert all(
        p.equal(q)
        for p, q in zip(
            vae.decoder.parameters(),
            build_random("tiny-sd1", seed=0).vae.decoder.parameters(),
            strict=True,
        )
    )


def tile(grid: Path, row: int, column: int, side: int = 32) -> np.ndarray:
    """One sample of a saved grid, at its own size (the grid shows it 3x, nearest-neighbour)."""
    scale = sampling.TILE // side
    pixels = np.asarray(Image.open(grid))
    top, left = row * side * scale, sampling.LABEL_WIDTH + column * side * scale
    return pixels[top : top + side * scale : scale, left : left + side * scale : scale]


def test_bld_on_files_writes_grids_and_background_metrics(tmp_path):
    image, mask = source_files(tmp_path)
    metrics = apply(
        tmp_path,
        "bld",
        f"application.image={image}",
        f"application.mask={mask}",
        "application.decoder_fix.steps=2",
        "application.score.oracle=null",
    )
    result = metrics["applications"]["bld"]
    assert result["sources"] == 1 and result["edits"] == 1
    assert {"background_psnr", "background_psnr_decoder_fix", "background_mse"} <= set(result)
    final = tile(tmp_path / "run/samples/bld/word.png", row=0, column=2)
    kept = ~bld.load_source(image, mask, 32).mask
    assert np.array_equal(final[kept], np.asarray(Image.open(image))[kept])  # the pixel blend


def test_bld_only_masked_edits_an_upscaled_crop_and_leaves_the_rest_of_the_image(tmp_path):
    image, mask = source_files(tmp_path)  # mask: rows 6..19, columns 2..15
    source = bld.load_source(image, mask, 32)
    window, box = bld.edit_window(source, padding=2)
    assert box == (0, 4, 18, 22)  # the mask's box grown by 2, clipped, square
    assert window.image.size == (32, 32) and window.mask.mean() > source.mask.mean()
    assert bld.edit_window(source, None) == (source, (0, 0, 32, 32))
    metrics = apply(
        tmp_path,
        "bld",
        f"application.image={image}",
        f"application.mask={mask}",
        "application.crop_padding=2",
        "application.pixel_blend=false",
        "application.decoder_fix.steps=0",
        "application.score.oracle=null",
    )
    assert metrics["applications"]["bld"]["edits"] == 1
    final = tile(tmp_path / "run/samples/bld/word.png", row=0, column=2)
    outside = np.ones((32, 32), dtype=bool)
    outside[4:22, 0:18] = False
    assert np.array_equal(final[outside], np.asarray(Image.open(image))[outside])
    assert not np.array_equal(final[~outside], np.asarray(Image.open(image))[~outside])
    with pytest.raises(ValueError, match="crop_padding=-1 must be >= 0"):
        apply(tmp_path, "bld", f"application.image={image}", f"application.mask={mask}",
              "application.crop_padding=-1")  # fmt: skip


def test_bld_on_toy_scenes_scores_the_concept_inside_the_mask(tmp_path, oracle_dir):
    metrics = apply(
        tmp_path,
        "bld",
        "application.scenes=1",
        "application.decoder_fix.steps=0",
        f"application.score.oracle={oracle_dir}",
    )
    result = metrics["applications"]["bld"]
    assert 0 <= result["concept_match"] <= 1 and 0 <= result["baseline_concept_match"] <= 1
    assert "background_psnr_decoder_fix" not in result


def test_eval_rescores_a_finished_run(tmp_path, oracle_dir, capsys):
    apply(
        tmp_path,
        "variation",
        f"application.score.oracle={oracle_dir}",
        'application.prompts=["a photo of a {}"]',
    )
    run_dir = tmp_path / "run"
    code = tirun_eval.main(
        [
            str(run_dir),
            "application=synthesis",
            f"application.score.oracle={oracle_dir}",
            'application.prompts=[{prompt:"a photo of a {} on sand",adds:{background:sand}}]',
            *QUICK,
        ]
    )
    assert code == 0
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert set(saved["applications"]) == {"variation", "synthesis"}
    assert tirun_eval.main([str(run_dir), "application.nope=1"]) == 2
    assert "names no key" in capsys.readouterr().err


def test_each_application_sentence_is_said_in_the_concepts_names(tmp_path):
    """experiments.applications' "from the names" column: the style preset's sentences become
    the purple mosaic named on each subject, composition names both concepts, bias none."""
    from omegaconf import OmegaConf

    from experiments.applications import named_expectations
    from tirun.toybench.ceiling import named_sentence

    def finished(name: str, application: dict, concept: str = "purple_mosaic") -> Path:
        folder = tmp_path / name
        (folder / ".hydra").mkdir(parents=True)
        config = {"dataset": {"concept": concept}, "application": application}
        OmegaConf.save(OmegaConf.create(config), folder / ".hydra" / "config.yaml")
        return folder

    style = finished(
        "style", {"subjects": ["cross", {"subject": "ring", "adds": {"shape": "ring"}}]}
    )
    expected = named_expectations("style", style)
    assert expected == [
        {"colour": "purple", "style": "mosaic"},
        {"colour": "purple", "style": "mosaic", "shape": "ring"},
    ]
    assert named_sentence(expected[1]) == "a painting of a purple ring in the style of mosaic"
    both = finished("composition", {"prompts": ["a painting of a {0} in the style of {1}"],
                                    "concepts": ["purple_star", "purple_mosaic"]})  # fmt: skip
    assert named_expectations("composition", both) == [
        {"shape": "star", "colour": "purple", "style": "mosaic"}
    ]
    assert named_expectations("bias", finished("bias", {}, "purple_star")) == []
