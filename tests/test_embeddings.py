"""Word files: every format round-trips and hostile pickles are refused."""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import tirun_process
from tirun import embeddings as E
from tirun.embeddings import LearnedWord


def sd1_word(k: int = 1, width: int = 32, token: str = "<cat-toy>") -> LearnedWord:
    g = torch.Generator().manual_seed(k * 100 + width)
    return LearnedWord(
        token, [torch.randn(k, width, generator=g)], step=500, checkpoint_name="v1-5"
    )


def sdxl_word(
    k: int = 2, token: str = "<xl-toy>", widths: tuple[int, int] = (768, 1280)
) -> LearnedWord:
    g = torch.Generator().manual_seed(7)
    vectors = [torch.randn(k, w, generator=g) for w in widths]
    return LearnedWord(token, vectors, step=1200, checkpoint_name="sdxl-base")


def target(tmp_path: Path, word: LearnedWord, fmt: str) -> Path:
    sdxl = len(word.vectors) == 2
    names = {
        "diffusers": "out",
        "a1111": "cat-toy.safetensors" if sdxl else "cat-toy.pt",
        "official": "embeddings.pt",
        "kohya": "cat-toy.safetensors",
    }
    return tmp_path / names[fmt]


def assert_same(a: LearnedWord, b: LearnedWord) -> None:
    assert a.token == b.token
    assert len(a.vectors) == len(b.vectors)
    for x, y in zip(a.vectors, b.vectors, strict=True):
        assert torch.equal(x, y)


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# Files


WORDS = {"sd1-k1": lambda: sd1_word(1), "sd1-k3": lambda: sd1_word(3), "sdxl-k2": sdxl_word}


@pytest.mark.parametrize("fmt", E.FORMATS)
@pytest.mark.parametrize("kind", list(WORDS))
def test_round_trip(tmp_path, fmt, kind):
    word = WORDS[kind]()
    if fmt == "official" and kind.startswith("sdxl"):
        with pytest.raises(ValueError, match="SDXL word .* official format holds one"):
            E.save(word, target(tmp_path, word, fmt), fmt)
        return
    paths = E.save(word, target(tmp_path, word, fmt), fmt)
    assert all(p.is_file() for p in paths)
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temporaries
    back = E.load(paths[0])
    assert_same(word, back)
    if fmt != "official":  # the official format has no step or model name
        assert (back.step, back.checkpoint_name) == (word.step, word.checkpoint_name)


def test_diffusers_layout_and_sdxl_pair(tmp_path):
    word = sdxl_word(3)
    paths = E.save(word, tmp_path / "run", "diffusers")
    assert [p.name for p in paths] == ["learned_embeds.safetensors", "learned_embeds_2.safetensors"]
    for path, vectors in zip(paths, word.vectors, strict=True):
        assert list(load_file(path)) == ["<xl-toy>"]
        assert torch.equal(load_file(path)["<xl-toy>"], vectors)
    assert_same(word, E.load(tmp_path / "run"))  # the folder, as diffusers takes it
    assert_same(word, E.load((paths[0], paths[1])))  # an explicit pair
    assert E.load(paths[1]).widths == [1280]  # the second file alone is a one-encoder word
    # diffusers' SDXL example names its step checkpoints learned_embeds(_2)-steps-N
    steps = E.save(word, tmp_path / "learned_embeds-steps-500.safetensors", "diffusers")
    assert steps[1].name == "learned_embeds_2-steps-500.safetensors"
    assert_same(word, E.load(steps[0]))


def test_a1111_pt_layout(tmp_path):
    word = sd1_word(2)
    (path,) = E.save(word, tmp_path / "cat-toy.pt", "a1111")
    data = torch.load(path, weights_only=True)
    assert data["string_to_token"] == {"*": 265}
    assert torch.equal(data["string_to_param"]["*"], word.vectors[0])
    assert (data["name"], data["step"], data["sd_checkpoint_name"]) == ("<cat-toy>", 500, "v1-5")
    assert "sd_checkpoint" in data
    back = E.load(path)
    assert (back.token, back.step, back.checkpoint_name) == ("<cat-toy>", 500, "v1-5")


def test_official_and_kohya_layouts(tmp_path):
    word = sd1_word(2)
    (official,) = E.save(word, tmp_path / "embeddings.pt", "official")
    data = torch.load(official, weights_only=True)
    assert set(data) == {"string_to_token", "string_to_param"}
    assert list(data["string_to_param"]) == ["<cat-toy>"]
    (kohya,) = E.save(word, tmp_path / "k.safetensors", "kohya")
    assert list(load_file(kohya)) == ["emb_params"]
    (xl,) = E.save(sdxl_word(), tmp_path / "xl.safetensors", "kohya")
    assert {k: v.shape[-1] for k, v in load_file(xl).items()} == {"clip_l": 768, "clip_g": 1280}


def test_third_party_files(tmp_path):
    """Files as other tools write them: no names, Parameters, ParameterDict, 1-D vectors."""
    vec = torch.randn(2, 32)
    # kohya writes no token: the stem in angle brackets, unless token= says otherwise
    save_file({"emb_params": vec}, tmp_path / "shiny.safetensors")
    assert E.load(tmp_path / "shiny.safetensors").token == "<shiny>"
    assert E.load(tmp_path / "shiny.safetensors", token="<s>").token == "<s>"
    # the official code saves a ParameterDict keyed "*" and token ids as tensors
    params = torch.nn.ParameterDict({"*": torch.nn.Parameter(vec.clone())})
    torch.save(
        {"string_to_token": {"*": torch.tensor(265)}, "string_to_param": params}, tmp_path / "e.pt"
    )
    word = E.load(tmp_path / "e.pt")
    assert word.token == "<e>" and torch.equal(word.vectors[0], vec)
    # an A1111 file holding an OrderedDict of Parameters
    a1111 = OrderedDict(
        string_to_param=OrderedDict({"*": torch.nn.Parameter(vec.clone())}), name="old", step=9
    )
    torch.save(a1111, tmp_path / "old.pt")
    assert (E.load(tmp_path / "old.pt").token, E.load(tmp_path / "old.pt").step) == ("old", 9)
    # old diffusers learned_embeds.bin: {token: [dim]}, fp16
    torch.save({"<bin>": vec[0].half()}, tmp_path / "learned_embeds.bin")
    word = E.load(tmp_path / "learned_embeds.bin")
    assert word.vectors[0].shape == (1, 32) and word.vectors[0].dtype == torch.float32
    # A1111 SDXL safetensors (clip_l/clip_g), named by its file
    save_file(
        {"clip_l": torch.randn(1, 768), "clip_g": torch.randn(1, 1280)}, tmp_path / "xl.safetensors"
    )
    assert E.load(tmp_path / "xl.safetensors").widths == [768, 1280]


class Payload:
    """Pickles to a call that writes a marker file: what a hostile embedding file does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_hostile_pickle_is_refused(tmp_path):
    marker = tmp_path / "marker"
    torch.save({"string_to_param": {"*": Payload(marker)}, "name": "x"}, tmp_path / "evil.pt")
    with pytest.raises(
        ValueError, match=r"evil\.pt is refused: it contains non-tensor objects \(exec\)"
    ) as error:
        E.load(tmp_path / "evil.pt")
    one_line(error)
    # a bare pickle (no torch zip container), as a .bin
    (tmp_path / "evil.bin").write_bytes(pickle.dumps({"a": Payload(marker)}, protocol=2))
    with pytest.raises(ValueError, match="refused: it contains non-tensor objects") as error:
        E.load(tmp_path / "evil.bin")
    one_line(error)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "does not exist: give the path of an embedding file"),
        (lambda p: p.write_bytes(b""), "is empty: the file was not written completely"),
        (
            lambda p: p.write_bytes(b"not a torch file at all"),
            "is neither a torch .* nor a safetensors file",
        ),
        (
            lambda p: p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken"),
            "is a damaged safetensors file",
        ),
        (
            lambda p: save_file({"a": torch.ones(1, 4), "b": torch.ones(1, 4)}, p),
            r"unknown layout \(keys \['a', 'b'\]\)",
        ),
        (lambda p: torch.save([torch.ones(2)], p), "holds a list, not a dict of tensors"),
        (
            lambda p: torch.save(
                {"string_to_param": {"*": torch.ones(1, 4), "+": torch.ones(1, 4)}}, p
            ),
            "2 terms in string_to_param",
        ),
        (
            lambda p: torch.save({"string_to_param": {"*": "text"}}, p),
            "'\\*' holds a str, not a tensor",
        ),
    ],
    ids=["missing", "empty", "garbage", "damaged", "two-keys", "list", "two-terms", "not-tensor"],
)
def test_load_errors(tmp_path, make, message):
    path = tmp_path / "word.pt"
    make(path)
    with pytest.raises(ValueError, match=message) as error:
        E.load(path)
    one_line(error)


def test_load_folder_and_pair_errors(tmp_path):
    with pytest.raises(ValueError, match="is a folder without learned_embeds.safetensors"):
        E.load(tmp_path)
    a = E.save(sd1_word(token="<a>"), tmp_path / "a.safetensors", "diffusers")[0]
    b = E.save(sd1_word(token="<b>"), tmp_path / "b.safetensors", "diffusers")[0]
    with pytest.raises(ValueError, match=r"name different tokens \['<a>', '<b>'\]: pass token="):
        E.load((a, b))
    assert E.load((a, b), token="<ab>").token == "<ab>"
    xl = E.save(sdxl_word(), tmp_path / "xl.safetensors", "kohya")[0]
    with pytest.raises(ValueError, match="holds 2 text encoders; a pair needs one in each file"):
        E.load((xl, a))


def test_save_errors(tmp_path):
    with pytest.raises(ValueError, match="format='ckpt' is unknown"):
        E.save(sd1_word(), tmp_path / "x.pt", "ckpt")
    with pytest.raises(
        ValueError, match=r"a1111 stores SDXL words in .safetensors files, .* name it x.safetensors"
    ):
        E.save(sdxl_word(), tmp_path / "x.pt", "a1111")
    with pytest.raises(
        ValueError, match=r"kohya stores words in .safetensors files, and .*x.pt ends in .pt"
    ):
        E.save(sd1_word(), tmp_path / "x.pt", "kohya")
    with pytest.raises(ValueError, match=r"a1111 stores words in .pt or .bin files"):
        E.save(sd1_word(), tmp_path / "x.safetensors", "a1111")


def test_diffusers_save_refuses_stale_second_file(tmp_path):
    E.save(sdxl_word(), tmp_path / "run", "diffusers")
    with pytest.raises(ValueError, match="learned_embeds_2.safetensors is left from an SDXL word"):
        E.save(sd1_word(), tmp_path / "run", "diffusers")
    with pytest.raises(ValueError, match=r"diffusers stores words in .safetensors files"):
        E.save(sd1_word(), tmp_path / "x.bin", "diffusers")


def test_word_checks():
    assert sd1_word(3).tokens() == ["<cat-toy>", "<cat-toy>_1", "<cat-toy>_2"]
    assert E.prompt_tokens(sd1_word(3)) == "<cat-toy> <cat-toy>_1 <cat-toy>_2"
    with pytest.raises(ValueError, match=r"has \[1, 2\] vectors across its text encoders"):
        LearnedWord("<t>", [torch.ones(1, 768), torch.ones(2, 1280)])
    with pytest.raises(ValueError, match="has 3 vector sets; give one per text encoder"):
        LearnedWord("<t>", [torch.ones(1, 4)] * 3)
    with pytest.raises(ValueError, match=r"shape \[\[1, 2, 3\]\]; each must be \[k, width\]"):
        LearnedWord("<t>", [torch.ones(1, 2, 3)])


# Command line


def test_cli_convert_and_show(tmp_path, capsys):
    (src,) = E.save(sd1_word(2), tmp_path / "w.pt", "a1111")
    assert (
        E.main(
            [
                "convert",
                str(src),
                str(tmp_path / "k.safetensors"),
                "--to",
                "kohya",
                "--token",
                "<k>",
            ]
        )
        == 0
    )
    assert E.load(tmp_path / "k.safetensors").token == "<k>"
    assert E.main(["show", str(tmp_path / "k.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "token: <k>  (2 vectors: <k> <k>_1)" in out and "format: kohya" in out
    assert "text_encoder: [2, 32]" in out and "norms:" in out


def test_cli_errors_are_one_line(tmp_path, capsys):
    missing = tmp_path / "none.pt"
    run = tirun_process("show", str(missing), module="tirun.embeddings")
    assert run.returncode == 2
    expected = (
        f"tirun.embeddings: error: {missing} does not exist: give the path of an embedding file"
    )
    assert run.stderr.strip().splitlines() == [expected]
    with pytest.raises(SystemExit) as usage:
        E.main(["convert", "a", "b", "--to", "ckpt"])
    assert usage.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
