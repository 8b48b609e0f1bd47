"""No weights file runs its own code without ``trust_code``: a SpeechBrain folder's yaml tags, and
the retired ``trust_pickle`` spelling still works (issue 37; docs/trust.md)."""

import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.features.config import ExtractConfig
from pipeline.features.extractors import create
from pipeline.features.extractors.timm_image import TimmImageConfig
from pipeline.features.plan import build_extractors

SAFE_YAML = """\
n_mels: 80
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>
mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False
embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [16, 16, 16, 16, 48]
    attention_channels: 8
    lin_neurons: 192
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
    paths:
        embedding_model: !ref <folder>/embedding_model.ckpt
folder: {folder}
"""

# Each entry creates the file MARKER when the yaml is loaded by HyperPyYAML.
CRAFTED = {
    "apply": "pwn: !apply:builtins.open [{marker}, w]\n",
    "new": "pwn: !new:logging.FileHandler [{marker}]\n",
    "python_tag": "pwn: !!python/object/apply:builtins.open [{marker}, w]\n",
    "tagged_tuple": "pwn: (!!python/object/apply:builtins.open [{marker}, w], 1)\n",
    "in_a_used_entry": "mean_var_norm: !apply:builtins.open [{marker}, w]\n",
}


def speechbrain_folder(folder, extra=""):
    pytest.importorskip("speechbrain")
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

    folder.mkdir()
    torch.manual_seed(3)
    model = ECAPA_TDNN(input_size=80, channels=[16, 16, 16, 16, 48], attention_channels=8,
                       lin_neurons=192)
    torch.save(model.state_dict(), folder / "embedding_model.ckpt")
    text = SAFE_YAML.format(folder=folder)
    if extra.startswith("mean_var_norm"):  # replace the entry rather than add one
        text = text.replace("mean_var_norm: !new:speechbrain.processing.features.InputNormalization"
                            "\n    norm_type: sentence\n    std_norm: False\n", "")
    (folder / "hyperparams.yaml").write_text(text + extra)
    return folder


@pytest.mark.parametrize("name", ["ecapa", "xvector"])
@pytest.mark.parametrize("how", sorted(CRAFTED))
def test_a_crafted_speechbrain_yaml_runs_nothing_without_trust(tmp_path, how, name):
    marker = tmp_path / "created-by-the-yaml"
    folder = speechbrain_folder(tmp_path / "w", CRAFTED[how].format(marker=marker))
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(PipelineError) as error:
        create(name, weights=folder).load()
    message = str(error.value)
    assert "\n" not in message and str(folder / "hyperparams.yaml") in message
    assert "trust_code=true" in message
    assert not marker.exists()  # nothing ran
    assert sorted(p.name for p in folder.iterdir()) == before


def test_with_trust_the_yaml_runs_as_hyperpyyaml_does(tmp_path):
    marker = tmp_path / "created-by-the-yaml"
    folder = speechbrain_folder(tmp_path / "w", CRAFTED["apply"].format(marker=marker))
    create("ecapa", weights=folder, trust_code=True).load()
    assert marker.exists()  # the user trusted it: it ran


def test_a_published_style_yaml_loads_without_trust_and_equals_the_trusted_build(tmp_path):
    folder = speechbrain_folder(tmp_path / "w")
    plain = create("ecapa", weights=folder)
    trusted = create("ecapa", weights=folder, trust_code=True)
    wave = torch.randn(16000).numpy()
    feats = plain.compute_frontend(wave)
    torch.testing.assert_close(torch.from_numpy(feats), torch.from_numpy(trusted.compute_frontend(wave)))
    windows = torch.from_numpy(feats[None, :64])
    torch.testing.assert_close(plain.embed(windows), trusted.embed(windows))
    assert plain.cache_key == trusted.cache_key  # trust is not part of the key


def test_trust_pickle_is_a_deprecated_alias_of_trust_code():
    config = ExtractConfig(extractors=["timm"], configs={"timm": {"trust_pickle": True,
                                                                  "model": "resnet18"}})
    assert config.trust_code is True and config.configs == {"timm": {"model": "resnet18"}}
    assert build_extractors(config)["timm"].trust_code is True
    assert ExtractConfig(extractors=["timm"]).trust_code is False
    with pytest.raises(PipelineError, match="configs.timm.trust_pickle"):
        ExtractConfig(extractors=["timm"], configs={"timm": {"trust_pickle": "maybe"}})


def test_cache_keys_of_stores_written_with_trust_pickle_stay_the_same(tmp_path):
    # The keys the code before the rename gave (configs.timm.trust_pickle false / true) for a
    # weights file: stores written then are reused, not recomputed. (Random-weight keys moved on
    # purpose when random weights became each architecture's own initialisation.)
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=0)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    config = TimmImageConfig(model="test_resnet")
    assert create("timm", config=config, weights=weights).cache_key == "efa3a96b35b26bb0"
    assert create("timm", config=config, weights=weights,
                  trust_code=True).cache_key == "62e2a017ba59ae18"
    assert create("ecapa").cache_key == create("ecapa", trust_code=True).cache_key  # not keyed


XVECTOR_YAML = """\
n_mels: 24
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>
mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False
embedding_model: !new:speechbrain.lobes.models.Xvector.Xvector
    in_channels: !ref <n_mels>
    activation: !name:torch.nn.LeakyReLU
    tdnn_blocks: 2
    tdnn_channels: [16, 32]
    tdnn_kernel_sizes: [5, 1]
    tdnn_dilations: [1, 1]
    lin_neurons: 512
classifier: !new:speechbrain.lobes.models.Xvector.Classifier
    input_shape: [null, null, 512]
    out_neurons: 3
label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder
modules:
    embedding_model: !ref <embedding_model>
"""


def test_an_xvector_style_yaml_with_a_named_activation_needs_no_trust(tmp_path):
    pytest.importorskip("speechbrain")
    from speechbrain.lobes.models.Xvector import Xvector

    torch.manual_seed(4)
    model = Xvector(in_channels=24, activation=torch.nn.LeakyReLU, tdnn_blocks=2,
                    tdnn_channels=[16, 32], tdnn_kernel_sizes=[5, 1], tdnn_dilations=[1, 1],
                    lin_neurons=512)
    torch.save(model.state_dict(), tmp_path / "embedding_model.ckpt")
    (tmp_path / "hyperparams.yaml").write_text(XVECTOR_YAML)
    plain = create("xvector", weights=tmp_path)
    trusted = create("xvector", weights=tmp_path, trust_code=True)
    feats = plain.compute_frontend(torch.randn(16000).numpy())
    windows = torch.from_numpy(feats[None, :64])
    torch.testing.assert_close(plain.embed(windows), trusted.embed(windows))


def test_old_commands_with_trust_pickle_still_parse(tmp_path, capsys):
    from cli.main import main

    code = main(["extract", "--manifests", str(tmp_path / "nowhere"), "--store",
                 str(tmp_path / "s.zarr"), "-e", "timm", "--set", "configs.timm.trust_pickle=true"])
    err = capsys.readouterr().err
    assert code == 1 and "no such manifest directory" in err  # the option itself was accepted
    assert "trust_pickle" not in err.split("error:")[-1]


def test_a_tagged_tuple_is_refused_after_hyperpyyaml_has_loaded_a_file_in_the_process(tmp_path):
    # hyperpyyaml registers a "(...)" -> !tuple resolver on ruamel when it loads a file, so the
    # untrusted parse then sees a tagged scalar, not a string (the full suite's order found it).
    from hyperpyyaml import load_hyperpyyaml

    load_hyperpyyaml("pair: (1, 2)\n")
    marker = tmp_path / "created-by-the-yaml"
    folder = speechbrain_folder(tmp_path / "w", CRAFTED["tagged_tuple"].format(marker=marker))
    with pytest.raises(PipelineError, match="tagged tuple"):
        create("xvector", weights=folder).load()
    assert not marker.exists()
