"""XTI's object–style mixing (P+, Voynov et al. 2023): one word's vectors in the layers that
carry shape, another's in the layers that carry appearance; against plain TI's "S1 in the style
of S2" on the same pair, on the same seeds.

The shape layers are the UNet's coarsest cross-attention layers (`shape_layers: coarsest`) or
the listed indices. A right sample shows the first concept's shape and the second's colour
(and style, for a style concept).
"""

from __future__ import annotations

from tirun import xti
from tirun.applications.context import Context, check_templates, with_baseline
from tirun.metrics.clip import without_words
from tirun.sampling import Sampling
from tirun.toyworld.concepts import CONCEPTS


def coarsest(unet, layers: list[str]) -> list[int]:
    """Indices of the cross-attention layers that run at the UNet's lowest resolution."""
    sizes = xti.layer_sizes(unet)
    smallest = min(sizes[name] for name in layers)
    return [i for i, name in enumerate(layers) if sizes[name] == smallest]


def run(
    ctx: Context,
    *,
    prompt: str,
    shape_layers: str | list[int],
    concepts: list[str] | None,
    ti_embeddings: list[str] | None,
    ti_prompt: str,
    sampling: dict,
) -> dict:
    """Samples of the mixed word, and (with ``ti_embeddings``) of TI's composition.

    Args:
        ctx: the application's context; its words are `embeddings=[shape_word, style_word]`, two
            XTI files learned on the same model.
        prompt: the sentence for the mixed word, one "{}".
        shape_layers: `coarsest`, or the indices of the layers that take the first word.
        concepts: the toy concepts of the two words (scored: the first's shape, the second's
            colour and style), or null on real models.
        ti_embeddings: plain TI words for the same two concepts (null: no comparison).
        ti_prompt: TI's sentence with "{0}" and "{1}".
        sampling: `application.sampling`.
    """
    settings = Sampling(**sampling)
    check_templates([prompt], "prompt")
    if len(ctx.sources) != 2:
        raise ValueError(
            f"mixing needs two XTI words, got {len(ctx.sources)}: embeddings=[shape,style]"
        )
    shape, style = (xti.load(s) for s in ctx.sources)
    if shape.layers != style.layers:
        raise ValueError("the two XTI words were learned on different UNets")
    unet = ctx.components.unet
    picks = coarsest(unet, shape.layers) if shape_layers == "coarsest" else list(shape_layers)
    if not picks or any(not 0 <= i < len(shape.layers) for i in picks):
        raise ValueError(
            f"application.shape_layers={shape_layers!r}: give layer indices in [0, {len(shape.layers)})"
        )
    vectors = style.vectors.clone()
    vectors[picks] = shape.vectors[picks]
    mixed = ctx.run_dir / "samples" / ctx.name / "mixed_xti.safetensors"
    xti.save(xti.XTIWord("<mixed>", vectors, shape.layers), mixed)

    expected = None
    if concepts:
        unknown = [c for c in concepts if c not in CONCEPTS]
        if unknown or len(concepts) != 2:
            raise ValueError(f"application.concepts needs two toy concepts; unknown: {unknown}")
        first, second = (CONCEPTS[c].attributes for c in concepts)
        expected_attrs = {k: v for k, v in second.items() if k != "shape"}
        if "shape" in first:
            expected_attrs["shape"] = first["shape"]
        expected = [expected_attrs]
    with ctx.pipeline(settings.scheduler, [mixed]) as (pipe, tokens):
        written = [prompt.format(tokens[0])]
        rows = ctx.sample(pipe, written, settings)
    result = {"shape_layers": picks, "layers": len(shape.layers), "samples": len(rows[0])}
    word = ctx.scores(rows, [prompt], expected, [without_words(prompt)])
    if ti_embeddings:
        if len(ti_embeddings) != 2:
            raise ValueError("application.ti_embeddings needs the two concepts' plain TI words")
        check_templates([ti_prompt], "ti_prompt", holes=2)
        with ctx.pipeline(settings.scheduler, list(ti_embeddings), ["<ti_a>", "<ti_b>"]) as (
            pipe,
            names,
        ):
            ti_written = [ti_prompt.format(*names)]
            base = ctx.sample(pipe, ti_written, settings)
        ctx.save_comparison(rows, base, written, ti_written)
        result.update(
            with_baseline(word, ctx.scores(base, [ti_prompt], expected, [without_words(ti_prompt)]))
        )
    else:
        ctx.save_grid(rows, "word", written)
        result.update(word)
    return result
