"""Where norm control and Cross Initialization put a word in the toy text encoder, against
where the words pretraining taught sit.

    python -m experiments.encoder_scale [--out experiments/results/encoder_scale.md]
        [--words toybench_runs/v3-test-paper-3seeds]   # and where a run's words end

Norm control (`word.norm=vocab`) holds the word at the median row norm of the whole input
table; Cross Initialization (`word.init=encoder_output`) starts it at the encoder's output for
the initializer word. The toy encoder (2 layers, a 667-token table of which pretraining names a
few dozen words) is far from CLIP's: this prints where each puts a word, in norm and direction.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from tirun.models import load_pretrained
from tirun.toyworld.render import ATTRIBUTES
from tirun.word import starts as word_starts

RESULTS = Path(__file__).parent / "results" / "encoder_scale.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="tirun/assets/toy/model")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--words", type=Path, help="a ToyBench run: where its trained words end")
    args = parser.parse_args()
    components = load_pretrained(args.model, resolution=32)
    tokenizer, encoder = components.tokenizers[0], components.text_encoders[0]
    table = encoder.get_input_embeddings().weight.detach().float()
    names = sorted({name for values in ATTRIBUTES.values() for name in values})
    pieces = {n: tokenizer.tokenize(n) for n in names}
    named = [n for n in names if len(pieces[n]) == 1]
    ids = torch.tensor(tokenizer.convert_tokens_to_ids([pieces[n][0] for n in named]))
    vocab_median = float(table.norm(dim=-1).median())
    known = float(table[ids].norm(dim=-1).median())
    rows = [
        "| word | input row norm | Cross Init start norm | cos(input row, Cross Init start) |",
        "|---|---:|---:|---:|",
    ]
    starts = []
    for name, row in zip(named, table[ids], strict=True):
        start = word_starts(tokenizer, encoder, name, 1, init="encoder_output")[0]
        starts.append(start.norm())
        cos = float(torch.nn.functional.cosine_similarity(start, row, dim=0))
        rows.append(f"| {name} | {row.norm():.3f} | {starts[-1]:.3f} | {cos:+.3f} |")
    start_median = float(torch.stack(starts).median())
    lines = [
        "# The toy text encoder's scales",
        "",
        "Written by `python -m experiments.encoder_scale` on the packaged toy model "
        f"({encoder.config.num_hidden_layers} layers, width {encoder.config.hidden_size}, "
        f"{table.shape[0]} tokens).",
        "",
        "| quantity | norm |",
        "|---|---:|",
        f"| median row of the whole input table (what `word.norm=vocab` holds a word at) | {vocab_median:.3f} |",
        f"| median row of the {len(named)} attribute words pretraining names | {known:.3f} |",
        f"| median Cross Init start (the encoder's output at the word, `word.init=encoder_output`) | {start_median:.3f} |",
        "",
        f"Norm control holds a word at {vocab_median / known:.2f}× the "
        f"norm of the words the model knows; Cross Initialization starts it at "
        f"{start_median / known:.1f}× that norm, in a direction "
        "unrelated to the initializer's own row (cosines below).",
        "",
        *rows,
    ]
    if args.words:
        lines += ["", *trained_lines(args.words, tokenizer, encoder)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def trained_lines(run: Path, tokenizer, encoder) -> list[str]:
    """Where the run's one-vector words end: their norm, and their cosine and distance to the
    two starts (the initializer's input row, the paper's; the encoder's output, Cross Init's)."""
    measures: dict[str, list[float]] = {}
    for file in sorted(run.rglob("learned_embeds.safetensors")):
        initializer = OmegaConf.load(file.parent / "config.yaml").word.initializer
        word = next(iter(load_file(file).values()))[0].float()
        row = word_starts(tokenizer, encoder, initializer, 1)[0]
        cross = word_starts(tokenizer, encoder, initializer, 1, init="encoder_output")[0]
        for name, value in {
            "norm of the word": word.norm(),
            "its initializer's row norm": row.norm(),
            "cos(word, initializer's row)": torch.nn.functional.cosine_similarity(word, row, dim=0),
            "cos(word, Cross Init start)": torch.nn.functional.cosine_similarity(
                word, cross, dim=0
            ),
            "distance to the initializer's row": (word - row).norm(),
            "distance to the Cross Init start": (word - cross).norm(),
        }.items():
            measures.setdefault(name, []).append(float(value))
    if not measures:
        raise SystemExit(f"--words {run}: no learned_embeds.safetensors under it")
    count = len(next(iter(measures.values())))
    return [
        f"Where the {count} words of `{run}` end (the median over words, and the range):",
        "",
        "| quantity | median | min | max |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {statistics.median(values):+.3f} | {min(values):+.3f} | {max(values):+.3f} |"
          for name, values in measures.items()),
    ]  # fmt: skip


if __name__ == "__main__":
    main()
