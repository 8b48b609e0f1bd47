"""Layer-wise learning-rate decay (``lr_decay``) and the mixture-of-experts classifier
(``classifier.experts``) of ``fer-pipeline finetune``.

The learning rates are checked against BEiT's formula written out here (``lr * d ** (L + 1 - i)``
per parameter name of timm's ``test_vit``, a tiny Swin and a tiny wav2vec2) and against timm's own
:func:`timm.optim.param_groups_layer_decay` on the same ViT with a class head."""

import pytest
import torch
from torch import nn

from pipeline.compat import ensure_torchvision

ensure_torchvision()

import timm  # noqa: E402
from timm.optim import param_groups_layer_decay  # noqa: E402

from pipeline.errors import PipelineError  # noqa: E402
from pipeline.features.weights_record import WEIGHTS_NAME, read_record  # noqa: E402
from pipeline.finetune.config import FinetuneConfig, build_config  # noqa: E402
from pipeline.finetune.loop import work_dir  # noqa: E402
from pipeline.finetune.model import Classifier, make_optimizer  # noqa: E402
from pipeline.training.config import ClassifierConfig  # noqa: E402
from pipeline.training.moe import MixtureOfExperts  # noqa: E402
from stages.finetune import finetune  # noqa: E402

LR, HEAD_LR, DECAY = 1e-4, 1e-3, 0.75


def _vit() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_vit", pretrained=False, num_classes=0)


def _lrs(optimizer: torch.optim.Optimizer) -> dict[int, float]:
    """id(parameter) -> its learning rate (each parameter in exactly one group)."""
    lrs: dict[int, float] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            assert id(p) not in lrs, "a parameter in two groups"
            lrs[id(p)] = group["lr"]
    return lrs


def test_vit_learning_rates_follow_beit_formula():
    backbone = _vit()
    model = Classifier(backbone, backbone.num_features)
    config = FinetuneConfig(lr=LR, head_lr=HEAD_LR, lr_decay=DECAY)
    lrs = _lrs(make_optimizer(model, config, "test_vit"))
    depth = len(backbone.blocks)  # L
    for name, p in backbone.named_parameters():
        if name.startswith(("cls_token", "pos_embed", "patch_embed")):
            expected = LR * DECAY ** (depth + 1)  # the embeddings, i = 0
        elif name.startswith("blocks."):
            i = int(name.split(".")[1]) + 1  # 1-based block number
            expected = LR * DECAY ** (depth + 1 - i)
        else:
            assert name.startswith("norm."), name  # the final norm
            expected = LR
        assert lrs[id(p)] == pytest.approx(expected, rel=1e-12), name
    for p in model.head.parameters():
        assert lrs[id(p)] == HEAD_LR
    assert len(lrs) == sum(1 for _ in model.parameters())
    # timm's own helper on the same ViT with a class head gives the same share of lr to every
    # parameter but the final norm (timm files it with the last block; BEiT gives it lr).
    headed = timm.create_model("test_vit", pretrained=False, num_classes=8)
    names = {id(p): n for n, p in headed.named_parameters()}
    timm_scales = {names[id(p)]: g["lr_scale"]
                   for g in param_groups_layer_decay(headed, layer_decay=DECAY) for p in g["params"]}
    ours = {name: lrs[id(p)] / LR for name, p in backbone.named_parameters()}
    for name, scale in ours.items():
        if not name.startswith("norm."):
            assert scale == pytest.approx(timm_scales[name], rel=1e-12), name
    assert timm_scales["head.weight"] == 1.0


def test_lr_decay_one_is_the_optimiser_of_before():
    backbone = _vit()
    backbone.get_parameter("patch_embed.proj.weight").requires_grad_(False)  # frozen: left out
    model = Classifier(backbone, backbone.num_features, au=True)
    optimizer = make_optimizer(model, FinetuneConfig(lr=LR, head_lr=HEAD_LR), "test_vit")
    trainable = [p for p in backbone.parameters() if p.requires_grad]
    heads = [*model.head.parameters(), *model.au_head.parameters()]
    assert [g["lr"] for g in optimizer.param_groups] == [LR, HEAD_LR]
    assert [list(map(id, g["params"])) for g in optimizer.param_groups] == [
        list(map(id, trainable)), list(map(id, heads))]


def test_refusals_are_one_line_errors(demo_manifests):
    for backbone in ("tdnn", "iresnet"):
        with pytest.raises(PipelineError, match=f"lr_decay 0.75: backbone {backbone} has no layer order"):
            build_config(demo_manifests, sets=[f"backbone={backbone}", "lr_decay=0.75"])
    with pytest.raises(PipelineError, match="lr_decay 1.5: need 0 < d <= 1"):
        build_config(demo_manifests, sets=["lr_decay=1.5"])
    # A timm network without a group_matcher has no layer order to decay by.
    plain = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    with pytest.raises(PipelineError, match="timm model 'plain' has no group_matcher") as info:
        make_optimizer(Classifier(plain, 4), FinetuneConfig(lr_decay=0.75), "plain")
    assert "\n" not in str(info.value)


def test_hf_audio_layers_follow_the_formula():
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from pipeline.finetune.audio import _Encoder

    torch.manual_seed(0)
    wav = Wav2Vec2Model(Wav2Vec2Config(hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                       intermediate_size=32, conv_dim=(8, 8), conv_stride=(5, 2),
                                       conv_kernel=(10, 3), num_conv_pos_embeddings=4,
                                       num_conv_pos_embedding_groups=2))
    encoder = _Encoder(wav)
    for name, p in encoder.named_parameters():  # as HfAudioBackbone: the top 2 layers train
        p.requires_grad_(name.startswith(("model.encoder.layers.1.", "model.encoder.layers.2.")))
    model = Classifier(encoder, 16)
    config = FinetuneConfig(backbone="hf_audio", lr=LR, head_lr=HEAD_LR, lr_decay=DECAY)
    lrs = _lrs(make_optimizer(model, config, "wav2vec2"))
    for name, p in encoder.named_parameters():
        if p.requires_grad:
            i = int(name.split(".")[3]) + 1  # 1-based layer of L = 3
            assert lrs[id(p)] == pytest.approx(LR * DECAY ** (3 + 1 - i), rel=1e-12), name
        else:
            assert id(p) not in lrs, name


def test_mixture_of_experts_classifier_trains_and_is_not_written(demo_manifests, tmp_path):
    backbone = _vit()
    model = Classifier(backbone, backbone.num_features, classifier=ClassifierConfig(experts=2))
    assert isinstance(model.head, MixtureOfExperts) and model.head.n_experts == 2
    model(torch.randn(2, 3, 160, 160))[:, :8].logsumexp(dim=1).sum().backward()
    for name, p in model.head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # End to end (with lr_decay on the ResNet's stages): the checkpoint holds the mixture, the
    # weights folder the backbone only.
    sets = ["epochs=1", "batch_size=16", "model=test_resnet", "classifier.experts=2",
            "classifier.top_k=1", "lr_decay=0.5"]
    out = tmp_path / "w"
    finetune(build_config(demo_manifests, sets=sets), out)
    state = torch.load(work_dir(out) / "checkpoint.pt", weights_only=True)
    head = {k: v for k, v in state["model"].items() if k.startswith("head.")}
    assert set(head) == {"head.experts.weight", "head.experts.bias", "head.router.weight",
                         "head.router.bias"}
    assert head["head.experts.weight"].shape[0] == 2 * 8 and head["head.router.weight"].shape[0] == 2
    assert len(state["optimizer"]["param_groups"]) == 5 + 1  # stem, layer1..4; the classifier
    from safetensors.torch import load_file

    assert not any(k.startswith(("head.", "router", "experts")) for k in load_file(str(out / WEIGHTS_NAME)))
    config = read_record(out).config
    assert config["lr_decay"] == 0.5 and config["classifier"] == {"experts": 2, "top_k": 1}


def test_swin_blocks_follow_the_formula():
    # A tiny Swin (swin_audio's network): its blocks numbered in order over the stages; a
    # stage's downsampling goes with its first block (timm's grouping), the final norm gets lr.
    torch.manual_seed(0)
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=0,
                             depths=(1, 1, 2, 1), embed_dim=24, num_heads=(1, 1, 1, 1))
    config = FinetuneConfig(backbone="swin_audio", lr=LR, head_lr=HEAD_LR, lr_decay=DECAY)
    lrs = _lrs(make_optimizer(Classifier(swin, swin.num_features), config, "swin"))
    order = [f"layers.{s}.blocks.{b}" for s, n in enumerate((1, 1, 2, 1)) for b in range(n)]
    depth = len(order)
    for name, p in swin.named_parameters():
        if name.startswith("patch_embed."):
            expected = LR * DECAY ** (depth + 1)
        elif name.startswith("norm."):
            expected = LR
        else:
            stage, part = name.split(".")[1], name.split(".")[2]
            block = ".".join(name.split(".")[:4]) if part == "blocks" else f"layers.{stage}.blocks.0"
            expected = LR * DECAY ** (depth + 1 - (order.index(block) + 1))
        assert lrs[id(p)] == pytest.approx(expected, rel=1e-12), name


def test_a_checkpoint_from_before_the_options_resumes(demo_manifests, tmp_path):
    # A checkpoint written before lr_decay and classifier existed holds neither: it is the run
    # with their defaults, so the same command carries on (here: finds it complete).
    sets = ["epochs=1", "batch_size=16", "model=test_resnet"]
    out = tmp_path / "w"
    finetune(build_config(demo_manifests, sets=sets), out)
    path = work_dir(out) / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    for key in ("lr_decay", "classifier"):
        del state["config"][key]
    torch.save(state, path)
    assert finetune(build_config(demo_manifests, sets=sets), out).already_complete
    with pytest.raises(PipelineError, match="differs in lr_decay"):
        finetune(build_config(demo_manifests, sets=[*sets, "lr_decay=0.5"]), out)
