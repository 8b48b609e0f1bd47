"""The demo scale's audio stand-ins (sun2026's wav2vec2, yu2026's WavLM): the plan names them, a
step writes the folder (``fer-pipeline stand-in``), ``hf_audio`` loads it through its ordinary
loader (equal to transformers' own forward of the folder) and records it as random weights, and
the recipe's extract step reads it; ``--scale full`` is unchanged."""

import json

import numpy as np
import pytest
import torch

from cli.main import main
from pipeline.data.synthetic import DemoConfig, generate
from pipeline.recipes import recipe, render
from stages.recipe import run_recipe

CASES = [("sun2026", "wav2vec2", "fer_demo_wav2vec2", "Wav2Vec2Model"),
         ("yu2026", "WavLM-large", "fer_demo_wavlm", "WavLMModel")]


@pytest.mark.parametrize("name,paper,stand_in,_cls", CASES)
def test_demo_plan_names_the_audio_stand_in_and_extracts_from_its_folder(name, paper, stand_in,
                                                                         _cls):
    lines = []
    run_recipe(name, "D", "W", scale="demo", dry_run=True, echo=lines.append)
    assert f"  demo scale: {stand_in} in place of {paper}" in lines
    demo = render(recipe(name), "D", "W", "demo", {}, True)
    ids = [s.id for s, _, _ in demo]
    assert ids.index("stand-in-hf_audio") < ids.index("extract")  # written before it is read
    steps = {s.id: a for s, a, _ in demo}
    assert steps["stand-in-hf_audio"] == ["stand-in", stand_in, "--out", f"W/stand_ins/{stand_in}"]
    assert f"hf_audio=W/stand_ins/{stand_in}" in steps["extract"]
    # full scale: the paper's encoder from --weights, no stand-in step, nothing said
    full = {s.id: a for s, a, _ in render(recipe(name), "D", "W", "full", {}, True)}
    assert "stand-in-hf_audio" not in full and not any("hf_audio=" in a for a in full["extract"])
    said = []
    run_recipe(name, "D", "W", scale="full", dry_run=True, echo=said.append)
    assert not any("in place of" in line or "stand-in" in line for line in said)
    # the user's encoder weights fit the paper's model: given them, demo keeps them
    given = {s.id: a for s, a, _ in render(recipe(name), "D", "W", "demo",
                                           {"hf_audio": "/w/wavlm"}, True)}
    assert "stand-in-hf_audio" not in given and "hf_audio=/w/wavlm" in given["extract"]


def test_full_scale_still_refuses_random_weights_without_the_flag(tmp_path, capsys):
    args = ["recipe", "sun2026", "--data", str(tmp_path / "d"), "--work", str(tmp_path / "w"),
            "--scale", "full", "--weights", "timm=/w/t.pth"]
    assert main(args) == 1
    assert "starts hf_audio from pretrained weights" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("name,paper,stand_in,cls", CASES)
def test_the_stand_in_folder_loads_through_hf_audio_and_equals_transformers_forward(
        name, paper, stand_in, cls, tmp_path):
    from transformers import AutoModel

    from pipeline.features.extractors.hf_audio import HfAudio, normalize_waveform

    folder = tmp_path / stand_in
    assert main(["stand-in", stand_in, "--out", str(folder)]) == 0
    reference = AutoModel.from_pretrained(folder).eval()
    config = reference.config
    assert type(reference).__name__ == cls  # the paper's family, transformers' own class
    assert (config.num_hidden_layers, config.hidden_size, len(config.conv_dim)) == (4, 128, 7)
    assert sum(p.numel() for p in reference.parameters()) < 2_000_000  # base: 95M
    extractor = HfAudio(config=HfAudio.Config(layers=()), weights=folder, precision="fp32")
    wave = np.random.default_rng(0).standard_normal(16000 * 2).astype(np.float32) * 0.1
    got = extractor.compute_frontend(wave)  # [T, D]: every hidden state averaged
    with torch.inference_mode():
        out = reference(torch.from_numpy(normalize_waveform(wave))[None], output_hidden_states=True)
    want = torch.stack(out.hidden_states).mean(dim=0)[0].numpy()
    assert got.shape == want.shape == (99, 128)  # 50 Hz frames of the kept conv encoder
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # seeded random weights, said so in the store's record
    assert extractor.random_weights and extractor.describe()["random_weights"]
    again = tmp_path / "again"
    assert main(["stand-in", stand_in, "--out", str(again)]) == 0
    assert (again / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()
    other = tmp_path / "other"
    assert main(["stand-in", stand_in, "--out", str(other), "--seed", "1"]) == 0
    assert (other / "model.safetensors").read_bytes() != (folder / "model.safetensors").read_bytes()


def test_a_folder_of_other_weights_is_not_taken_for_a_stand_in(tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from pipeline.features.extractors.hf_audio import HfAudio

    Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 4),
                                 conv_kernel=(10, 4), num_conv_pos_embeddings=16,
                                 num_conv_pos_embedding_groups=2)).save_pretrained(tmp_path)
    assert not HfAudio(weights=tmp_path).random_weights


def test_a_stand_in_never_replaces_other_weights_or_files(tmp_path, capsys):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    model = tmp_path / "my_wav2vec2"
    Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 4),
                                 conv_kernel=(10, 4), num_conv_pos_embeddings=16,
                                 num_conv_pos_embedding_groups=2)).save_pretrained(model)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    before = {p: p.read_bytes() for p in (*model.iterdir(), notes / "todo.txt")}
    for out, why in ((model, "holds weights that are not a stand-in's"), (notes, "holds todo.txt")):
        assert main(["stand-in", "fer_demo_wavlm", "--out", str(out)]) == 1
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(err) == 1 and f"{out}: {why}" in err[0] and "nothing was replaced" in err[0]
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_wav2vec2", "notes"]
    stand_in = tmp_path / "s"  # a stand-in's own folder is rewritten (another seed)
    assert main(["stand-in", "fer_demo_wavlm", "--out", str(stand_in)]) == 0
    first = (stand_in / "model.safetensors").read_bytes()
    assert main(["stand-in", "fer_demo_wavlm", "--out", str(stand_in), "--seed", "2"]) == 0
    assert (stand_in / "model.safetensors").read_bytes() != first


def test_an_unknown_stand_in_is_one_line_and_writes_nothing(tmp_path, capsys):
    assert main(["stand-in", "fer_demo_wavlmx", "--out", str(tmp_path / "x")]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert err == ["error: unknown audio stand-in 'fer_demo_wavlmx'; choose from "
                   "fer_demo_wav2vec2, fer_demo_wavlm; did you mean fer_demo_wavlm or "
                   "fer_demo_wav2vec2?"]
    assert not (tmp_path / "x").exists()


def test_yu2026s_demo_extract_step_reads_the_wavlm_stand_in(tmp_path):
    """The recipe's own manifest, stand-in and extract commands (the extract less its face
    backbone, whose fine-tune is not run here): the store's hf_audio features come from the
    stand-in's folder, recorded as random weights of a 128-wide WavLM."""
    data, work = tmp_path / "data", tmp_path / "work"
    generate(data, DemoConfig(clips=8, frames=30, seed=0, size=32))
    steps = {s.id: a for s, a, _ in render(recipe("yu2026"), str(data), str(work), "demo", {},
                                           True)}
    assert main(steps["manifest"]) == 0
    assert main(steps["stand-in-hf_audio"]) == 0
    extract, face = [], ("-e", "timm")
    args = steps["extract"]
    i = 0
    while i < len(args):  # drop the face backbone's three option pairs
        pair = args[i:i + 2]
        if tuple(pair) == face or (pair[0] in ("--set", "--weights") and "timm" in pair[1]):
            i += 2
            continue
        extract.append(args[i])
        i += 1
    assert f"hf_audio={work}/stand_ins/fer_demo_wavlm" in extract
    assert main(extract) == 0
    store = json.loads((work / "features.zarr" / "zarr.json").read_text())
    hf = store["attributes"]["extractors"]["hf_audio"]
    assert hf["weights"] == f"{work}/stand_ins/fer_demo_wavlm" and hf["random_weights"]
    assert hf["outputs"]["hf_audio_w32"]["shape"] == [128]
