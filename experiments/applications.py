"""The six applications on the toy world, one `python -m tirun` command each, scored by the oracle.

    python -m experiments.applications [--out outputs/applications] [--threads 1] [--only bld ...] [OVERRIDES]
    python -m experiments.applications --only    # rerun nothing: read every folder back

Trains the purple-star object word (exp=variation), the purple-mosaic style word
(exp=style_transfer) and the inclusive "toy" (exp=bias); synthesis, composition and bld reuse
the saved words (`embeddings=[...]`); three commands run side by side. Each command's `metrics.json` is read back and the figures
go to experiments/results/applications.md:
- variation/synthesis/style/composition: oracle concept match vs the initializer baseline;
- bias: KL(colour distribution ‖ uniform) of the inclusive word vs the plain word;
- bld: background PSNR before any pixel blend, plain decoder vs fine-tuned decoder, and the
  concept inside the mask vs the plain word, editing a crop around the mask (bld) and the whole
  frame (bld_full).
Beside each learned word's concept match stands what the model draws with no word at all, from
the concept's attributes' names ("a painting of a purple ring in the style of mosaic"), on the
same seeds: the application's text ceiling, as ToyBench reads each concept against its own.
Needs the packaged toy model and oracle (`make toy-model`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results" / "applications.md"


# The first wave trains the three words; the second applies the saved ones.
WAVES = (
    ("variation", "style", "bias"),
    ("synthesis", "composition", "bld", "bld_full", "bld_names", "bld_full_names"),
)
# bld_full is Blended Latent Diffusion on the whole 32 px frame (no crop around the mask);
# bld*_names the same edits with the object's names ("purple star") as the plain word, whose
# baseline is then what the model draws into the mask with no learned word.
APPLICATION = {"bld_full": "bld", "bld_names": "bld", "bld_full_names": "bld"}
NAMES_RUNS = {"bld": "bld_names", "bld_full": "bld_full_names"}


def application(name: str) -> str:
    """The application a command runs (its key under `applications` in `metrics.json`)."""
    return APPLICATION.get(name, name)


def saved_word(folder: Path) -> Path:
    """The word a finished training command saved (its name depends on the recipe: an XTI word
    has a file of its own)."""
    metrics = folder / "metrics.json"
    return Path(json.loads(metrics.read_text())["files"][0]) if metrics.is_file() else folder


def named_object(preset: str) -> str:
    """The preset's object concept in its attributes' names ("purple star"), as a plain word."""
    from tirun import config
    from tirun.toybench.ceiling import object_name
    from tirun.toyworld.concepts import CONCEPTS

    return object_name(CONCEPTS[config.compose([preset]).dataset.concept].attributes)


def commands(out: Path) -> dict[str, list[str]]:
    """Each application's overrides; later ones read the words earlier ones saved (called again
    once they have)."""
    obj, style = saved_word(out / "variation"), saved_word(out / "style")
    names = f"word.initializer='{named_object('+exp=bld')}'"
    return {
        "variation": ["+exp=variation"],
        "style": ["+exp=style_transfer"],
        "synthesis": ["+exp=synthesis", f"embeddings=[{obj}]"],
        "composition": ["+exp=composition", f"embeddings=[{obj},{style}]"],
        "bias": ["+exp=bias"],
        "bld": ["+exp=bld", f"embeddings=[{obj}]"],
        "bld_full": ["+exp=bld", f"embeddings=[{obj}]", "application.crop_padding=null"],
        "bld_names": ["+exp=bld", f"embeddings=[{obj}]", names],
        "bld_full_names": [
            "+exp=bld",
            f"embeddings=[{obj}]",
            "application.crop_padding=null",
            names,
        ],
    }


def start(
    name: str, overrides: list[str], out: Path, threads: int
) -> tuple[subprocess.Popen, float, str]:
    """Start one `python -m tirun` command in its own folder (its log beside it), emptied first:
    a rerun must not find an earlier run's files there."""
    folder = out / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    argv = [sys.executable, "-m", "tirun", *overrides, "tracker=none", f"hydra.run.dir={folder}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TIRUN_DEBUG": "1"}
    command = "python -m tirun " + " ".join(o.replace(str(out), "OUT") for o in overrides)
    (folder / "command.txt").write_text(command + "\n")
    with (folder / "log.txt").open("w") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    return process, time.perf_counter(), command


def run_wave(
    names: list[str], all_commands: dict, out: Path, threads: int, extra: list[str]
) -> dict:
    """Run commands side by side (a busy shared machine gets more done with 1-thread processes);
    returns {name: (metrics, wall time, command)}."""
    started = {name: start(name, all_commands[name] + extra, out, threads) for name in names}
    results = {}
    for name, (process, t0, command) in started.items():
        if process.wait() != 0:
            raise SystemExit(f"{name} failed; see {out / name / 'log.txt'}")
        metrics = json.loads((out / name / "metrics.json").read_text())
        seconds = time.perf_counter() - t0
        (out / name / "wall_time.txt").write_text(f"{seconds:.1f}\n")
        results[name] = (metrics, f"{seconds:.0f} s", command)
        print(
            f"{name}: {json.dumps(metrics['applications'][application(name)], default=str)[:300]}",
            flush=True,
        )
    return results


def named_expectations(name: str, folder: Path) -> list[dict[str, str]]:
    """What a right sample shows for each of a finished command's sentences (its concept's
    attributes and what the sentence adds), read from its Hydra config; [] for the
    applications whose sentences a caption cannot say (bias, bld)."""
    from omegaconf import OmegaConf

    from tirun.applications.context import with_adds
    from tirun.toyworld.concepts import CONCEPTS

    app = OmegaConf.to_container(OmegaConf.load(folder / ".hydra" / "config.yaml"))
    concept = CONCEPTS[app["dataset"]["concept"]].attributes
    app = app["application"]
    if name in ("variation", "synthesis"):
        adds = with_adds(app["prompts"], "prompts", "prompt")[1]
    elif name == "style":
        adds = with_adds(app["subjects"], "subjects", "subject")[1]
    elif name == "composition":
        first, second = (CONCEPTS[c].attributes for c in app["concepts"])
        return [{**first, **second}] * len(app["prompts"])
    else:
        return []
    return [{**concept, **a} for a in adds]


def from_names(results: dict[str, tuple[dict, str, str]], out: Path) -> dict[str, float]:
    """Each application's concept match with no word: one sentence naming each of its prompts'
    expected attributes as pretraining captions do, on the command's own sampler and seeds; for
    bld, the baseline of its `_names` run (the same edits, the names as the plain word)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from tirun import config, sampling
    from tirun.metrics import oracle as oracle_metrics
    from tirun.toybench.ceiling import named_sentence

    rates = {
        name: results[run][0]["applications"]["bld"]["baseline_concept_match"]
        for name, run in NAMES_RUNS.items()
        if name in results and run in results
    }
    expected = {n: named_expectations(n, out / n) for n in results if n not in NAMES_RUNS.values()}
    expected = {n: e for n, e in expected.items() if e}
    if not expected:
        return rates
    components = instantiate(config.compose(["model=toy"]).model)
    components.freeze()
    pipe = components.pipeline("ddim")
    pipe.set_progress_bar_config(disable=True)
    oracle = oracle_metrics.load()
    for name, rows_expected in expected.items():
        settings = OmegaConf.load(out / name / ".hydra" / "config.yaml").application.sampling
        sentences = [named_sentence(e) for e in rows_expected]
        rows = sampling.sample(pipe, sentences, settings.samples, settings.steps, settings.guidance,
                               settings.seed, components.resolution, settings.batch_size)  # fmt: skip
        hits = [oracle_metrics.match_rate(oracle, row, e)
                for row, e in zip(rows, rows_expected, strict=True)]  # fmt: skip
        rates[name] = sum(hits) / len(hits)
        print(f"{name} from names: {rates[name]:.3f} ({'; '.join(sentences)})", flush=True)
    return rates


def read_back_time(folder: Path, metrics: dict, name: str) -> str:
    """A command read back from its folder: the wall time its run measured, or, for a folder
    written before that was kept, its training and application seconds from `metrics.json`."""
    if (folder / "wall_time.txt").is_file():
        return f"{float((folder / 'wall_time.txt').read_text()):.0f} s"
    inside = (
        metrics.get("wall_time_s", 0.0) + metrics["applications"][application(name)]["wall_time_s"]
    )
    ran = time.strftime("%Y-%m-%d %H:%M", time.gmtime((folder / "metrics.json").stat().st_mtime))
    return f"{inside:.0f} s (training + application; read back, ran {ran} UTC)"


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def report(results: dict[str, tuple[dict, str, str]], threads: int, names: dict[str, float]) -> str:
    """Markdown: one table of figures (with each application's `from_names`), then each
    command."""
    lines = [
        "# Applications on the toy world",
        "",
        f"Written by `python -m experiments.applications` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{threads} thread(s) on a shared 2-core CPU). Scores: the oracle reads shape, colour, "
        "background and style off every sample; a sample matches when every attribute that "
        "defines the concept (and every attribute the sentence adds) is right. The baseline is "
        "the same sentences with the initializer word (plain word for bias and bld), same seeds.",
        "",
        f"Model: {model_note()}",
        "",
        "| application | learned word | baseline | from the names, no word | samples | wall time |",
        "|---|---|---|---|---|---|",
    ]
    shown = {n: r for n, r in results.items() if n not in NAMES_RUNS.values()}
    for name, (metrics, seconds, _) in shown.items():
        m = metrics["applications"][application(name)]
        if name == "bias":
            word = f"KL {m['kl_uniform']:.3f}"
            base = f"KL {m['baseline_kl_uniform']:.3f}"
            count = m["samples"]
        elif application(name) == "bld":
            word = (
                f"concept in mask {pct(m.get('concept_match'))}; background PSNR "
                f"{m['background_psnr']:.1f} dB, decoder fix {m.get('background_psnr_decoder_fix', float('nan')):.1f} dB"
            )
            base = f"concept in mask {pct(m.get('baseline_concept_match'))}"
            count = m["edits"]
        else:
            word = f"concept match {pct(m.get('concept_match'))}"
            base = f"concept match {pct(m.get('baseline_concept_match'))}"
            count = m["samples"]
        what = "concept in mask" if application(name) == "bld" else "concept match"
        named = f"{what} {pct(names[name])}" if name in names else "—"
        lines.append(f"| {name} | {word} | {base} | {named} | {count} | {seconds} |")
    lines += [
        "",
        "From the names: no learned word; each sentence's expected attributes named as "
        'pretraining captions name them (`tirun.toybench.ceiling.named_sentence`, e.g. "a '
        "painting of a purple ring in the style of mosaic\"), on the command's sampler and "
        'seeds; for bld, the same edits with "purple star" as the plain word '
        "(`word.initializer='purple star'`, the `bld*_names` folders). What the model itself "
        "draws of the concept: the ceiling a word is read against.",
        "",
        "## Checks",
        "",
        *checks(results),
        "",
        "## Details",
        "",
    ]
    for name, (metrics, _, command) in shown.items():
        m = metrics["applications"][application(name)]
        lines += [f"### {name}", "", f"`{command}`", ""]
        if "per_prompt" in m:
            lines += ["| prompt / source | learned word | baseline |", "|---|---|---|"]
            for prompt, value in m["per_prompt"].items():
                lines.append(
                    f"| {prompt} | {pct(value)} | {pct(m['baseline_per_prompt'].get(prompt))} |"
                )
        if "attribute_match" in m:
            for label, key in (("learned word", ""), ("baseline", "baseline_")):
                rates = ", ".join(
                    f"{k} {pct(v)}" for k, v in m.get(f"{key}attribute_match", {}).items()
                )
                lines.append(f"\nEach attribute alone, {label}: {rates}.")
        if name == "bias":
            classes = list(m["distribution"])
            lines += [
                "| word | " + " | ".join(classes) + " | KL to uniform |",
                "|---" * (len(classes) + 2) + "|",
            ]
            for label, key in (("inclusive", ""), (f"plain ({m['plain_word']})", "baseline_")):
                shares = " | ".join(pct(m[f"{key}distribution"][c]) for c in classes)
                lines.append(f"| {label} | {shares} | {m[f'{key}kl_uniform']:.3f} |")
        if application(name) == "bld":
            lines.append("")
            lines.append(
                f"Background outside the mask before the pixel blend: PSNR {m['background_psnr']:.2f} dB / "
                f"MSE {m['background_mse']:.5f} (plain decoder); "
                f"{m.get('background_psnr_decoder_fix', float('nan')):.2f} dB / "
                f"{m.get('background_mse_decoder_fix', float('nan')):.5f} (decoder fine-tuned per edit)."
            )
            if m.get("crop_padding") is not None:
                lines.append(
                    f"Edited only masked: a square crop {m['crop_padding']} px around each mask, "
                    "upscaled to 32 px; these scores compare the edited crop with the source's "
                    "crop, and outside the crop the image is the source's pixels."
                )
        if (
            name in metrics.get("applications", {})
            and "oracle" in metrics
            and name in ("variation", "style")
        ):
            lines += ["", f"Run-level `oracle`: {json.dumps(metrics['oracle'])}"]
        lines.append("")
    return "\n".join(lines)


def model_note() -> str:
    """How far the packaged toy model was pretrained (the last denoiser lines of its log)."""
    log = Path(__file__).resolve().parents[1] / "tirun" / "assets" / "toy" / "pretrain_log.txt"
    lines = [ln for ln in log.read_text().splitlines() if "denoiser" in ln] if log.is_file() else []
    steps = [ln.split("] ", 1)[-1] for ln in lines if "denoiser step" in ln or "stopped" in ln]
    return (
        f"the packaged toy model; pretraining log: `{steps[-1]}`"
        if steps
        else "the packaged toy model"
    )


# The bars each application's learned word must reach (concept match), and the ones that need
# only beat their baseline.
BARS = {"variation": 0.8, "synthesis": 0.7, "style": 0.7, "bld": 0.7, "bld_full": 0.5}


def checks(results: dict[str, tuple[dict, str, str]]) -> list[str]:
    """The bars, each marked met or not met."""
    out = []

    def mark(ok: bool, text: str) -> None:
        out.append(f"- {'met' if ok else 'NOT met'}: {text}")

    for name in ("variation", "synthesis", "style", "composition"):
        if name in results:
            m = results[name][0]["applications"][name]
            word, base = m.get("concept_match"), m.get("baseline_concept_match")
            if word is not None:
                mark(word > base, f"{name}: learned word {pct(word)} > initializer {pct(base)}")
                if name in BARS:
                    mark(
                        word >= BARS[name], f"{name}: learned word {pct(word)} ≥ {pct(BARS[name])}"
                    )
    if "bias" in results:
        m = results["bias"][0]["applications"]["bias"]
        mark(
            m["kl_uniform"] < m["baseline_kl_uniform"],
            f"bias: KL inclusive {m['kl_uniform']:.3f} < plain {m['baseline_kl_uniform']:.3f}",
        )
    for name in ("bld", "bld_full"):
        if name not in results:
            continue
        m = results[name][0]["applications"]["bld"]
        fixed = m.get("background_psnr_decoder_fix", float("nan"))
        mark(
            fixed > m["background_psnr"],
            f"{name}: decoder fix raises background PSNR {m['background_psnr']:.1f} → {fixed:.1f} dB",
        )
        word, base = m.get("concept_match"), m.get("baseline_concept_match")
        if word is not None:
            mark(
                word >= BARS[name],
                f"{name}: concept inside the mask {pct(word)} ≥ {pct(BARS[name])} "
                f"(plain word {pct(base)})",
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/applications"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads per command")
    parser.add_argument(
        "--only",
        nargs="*",
        help="run only these (the others' folders are read back; none listed: rerun nothing)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("overrides", nargs="*", help="extra overrides for every command")
    args = parser.parse_args()
    out = args.out.resolve()
    all_commands = commands(out)
    results = {}
    for wave in WAVES:
        all_commands = commands(out)
        todo = [n for n in wave if args.only is None or n in args.only]
        results.update(run_wave(todo, all_commands, out, args.threads, list(args.overrides)))
        for name in set(wave) - set(todo):
            folder = out / name
            if (folder / "metrics.json").is_file():
                metrics = json.loads((folder / "metrics.json").read_text())
                results[name] = (metrics, read_back_time(folder, metrics, name),
                                 (folder / "command.txt").read_text().strip())  # fmt: skip
    ordered = {n: results[n] for n in all_commands if n in results}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    names = from_names(ordered, out)
    args.results.write_text(report(ordered, args.threads, names) + "\n")
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
