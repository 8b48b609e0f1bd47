"""Each paper's training chain as data: the stage commands ``fer-pipeline recipe NAME`` runs.

A recipe is a list of :class:`Step` s, each one stage command (``manifest``, ``finetune``,
``extract``, ``fuse``, ``ensemble``) with the paper's preset, written as argument templates. The
runner (:mod:`stages.recipe`) fills them in and runs them in order; it adds no logic of its own.
Templates name ``{data}`` (the dataset root), ``{work}`` (the recipe's folder) and ``{m}``
(``{work}/manifests``); three tokens stand for argument groups:

- ``@init:NAME``: ``--weights PATH`` when the user gave ``--weights NAME=PATH`` (the pretrained
  weights the paper starts from), else ``--allow-random-weights`` when the user allowed it, else
  nothing (the runner has refused before: :func:`missing_weights`);
- ``@random``: ``--allow-random-weights`` when the user allowed it (fuse, the extract of a
  backbone no step fine-tunes);
- ``@scale:KEY``: the arguments of ``KEY`` in the recipe's ``scales[SCALE]`` (epochs, widths,
  sampling: ``demo`` fits a 2-core CPU and tiny data, ``full`` is the paper's);
- ``@stand_ins``: ``--allow-stand-ins`` where the scale puts a stand-in in place of a paper's model
  (fuse and finetune: their presets accept it only then).

``{model}`` is the recipe's face model (``Recipe.model``): the paper's at ``full``; at ``demo``
its smaller stand-in (:data:`pipeline.stand_ins.STAND_INS`: ResNet-18 for ResNet-50, a
DINOv2-style ViT-S/14 and a small BEiT at 112 px for ViT-L/14 and BEiT-L) where the paper's cannot
run on a 2-core CPU, unless ``--weights timm=`` gives its start (pretrained weights fit the
paper's model only). ``{audio}`` is the stand-in of the audio encoder (``hf_audio``) at demo
(:data:`pipeline.stand_ins.AUDIO_STAND_INS`: a 4-layer wav2vec2 or WavLM), unless ``--weights
hf_audio=`` gives the paper's: a ``stand_in`` step writes its folder (``fer-pipeline stand-in``) and
``@init:hf_audio`` of the extract names it; where there is none the step is left out. The plan
prints each substitution (:func:`substitutions`).

Each step names the output whose existence (with the runner's marker of the same command) marks it
done. ``missing`` lists what a recipe cannot do yet, printed with its plan (docs/recipes.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.errors import PipelineError
from pipeline.stand_ins import AUDIO_STAND_INS, STAND_INS
from pipeline.suggest import did_you_mean

SCALES = ("demo", "full")
MODEL_KEY = "timm"  # the backbone ``{model}`` names (its --weights key)
AUDIO_KEY = "hf_audio"  # the backbone ``{audio}`` names (its --weights key)


@dataclass(frozen=True)
class Step:
    id: str  # unique within the recipe: the marker's name
    args: tuple[str, ...]  # the stage command after ``fer-pipeline``, as templates
    output: str  # what the step writes (a template): its existence marks it done
    stand_in: bool = False  # writes the audio stand-in ``{audio}``: left out where there is none


@dataclass(frozen=True)
class Recipe:
    paper: str
    steps: tuple[Step, ...]
    # backbone key of @init -> what the paper starts it from (no --weights: refused unless allowed)
    pretrained: dict[str, str] = field(default_factory=dict)
    scales: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    missing: tuple[str, ...] = ()  # what is not built yet, printed with the plan
    model: str = ""  # the paper's face model ({model}); a stand-in at demo scale (STAND_INS)
    # scale -> other stand-ins its arguments make, as "X in place of Y" (printed with the plan)
    notes: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _manifest() -> Step:
    return Step("manifest", ("manifest", "{data}", "--out", "{m}"), "{m}/report.json")


def _ensemble(*runs: str) -> Step:
    return Step("ensemble", ("ensemble", *(f"{{work}}/runs/{r}" for r in runs), "--manifests",
                             "{m}", "--out", "{work}/scores"), "{work}/scores/scores.json")


def _finetune(key: str, *args: str) -> Step:
    return Step(f"finetune-{key}", ("finetune", "--manifests", "{m}", "--out",
                                    f"{{work}}/weights/{key}", *args, f"@init:{key}",
                                    "@stand_ins", f"@scale:{key}"),
                f"{{work}}/weights/{key}/finetune.json")


def _fuse(method: str, preset: str, name: str, *args: str) -> Step:
    return Step(f"fuse-{name}", ("fuse", "--method", method, "--preset", preset, "--store",
                                 "{work}/features.zarr", "--manifests", "{m}", "--out",
                                 "{work}/runs", "--name", name, *args, "@random", "@stand_ins",
                                 "@scale:fuse"),
                f"{{work}}/runs/{name}/metrics.json")


def _stand_in() -> Step:
    return Step("stand-in-hf_audio", ("stand-in", "{audio}", "--out", "{work}/stand_ins/{audio}"),
                "{work}/stand_ins/{audio}/model.safetensors", stand_in=True)


def _extract(*args: str) -> Step:
    return Step("extract", ("extract", "--manifests", "{m}", "--store", "{work}/features.zarr",
                            *args, "@scale:extract"), "{work}/features.zarr/zarr.json")


def _sets(*pairs: str) -> tuple[str, ...]:
    return tuple(a for p in pairs for a in ("--set", p))


_DEMO_FT = _sets("epochs=1", "patience=1", "batch_size=16", "sampling.interval=4")
_DEMO_FUSE = _sets("train.epochs=3", "train.patience=3")
_KIM_WINDOWS = (32, 48, 64)
_TDNN_DEMO = ("channels=[64,64,64,64,128]", "embedding_dim=64")

def _leader_2026(name: str, paper: str, method: str, face: str, audio: str,
                 model: str) -> Recipe:
    """An ABAW10 leader's chain: fine-tune the timm face model, extract it with the audio encoder
    over 32-frame windows, fuse with ``method``, ensemble (the two leaders differ only in these)."""
    return Recipe(
        paper=paper,
        steps=(
            _manifest(),
            _finetune("timm", "--preset", name, "--model", "{model}"),
            _stand_in(),
            _extract("-e", "timm", "--set", "configs.timm.model={model}",
                     "-e", "hf_audio", "--set", "configs.hf_audio.windows=[32]",
                     "--weights", "timm={work}/weights/timm", "@init:hf_audio"),
            _fuse(method, name, name),
            _ensemble(name),
        ),
        pretrained={"timm": face, "hf_audio": audio},
        model=model,
        scales={"demo": {"timm": _DEMO_FT, "fuse": _DEMO_FUSE}, "full": {}},
        missing=("the audio encoder is extracted frozen from its pretrained weights (no audio "
                 "fine-tune is described in what we could read of the paper)",),
    )


RECIPES: dict[str, Recipe] = {
    # Paper 000: Swin-Tiny fine-tuned on faces, one audio Swin-Tiny per window, the MFM.
    "kim2023": Recipe(
        paper="Kim et al. 2023 (paper 000)",
        steps=(
            _manifest(),
            _finetune("swin", "--preset", "kim2023"),
            *(_finetune(f"swin_audio_w{w}", "--preset", "kim2023", "--backbone", "swin_audio",
                        "--set", f"window={w}") for w in _KIM_WINDOWS),
            _extract("-e", "swin", "-e", "swin_audio_w32", "-e", "swin_audio_w48",
                     "-e", "swin_audio_w64", "--set", "configs.swin.crop_pct=1.0",
                     "--weights", "swin={work}/weights/swin",
                     *(a for w in _KIM_WINDOWS for a in
                       ("--weights", f"swin_audio_w{w}={{work}}/weights/swin_audio_w{w}"))),
            _fuse("mfm", "kim2023", "kim2023"),
            _ensemble("kim2023"),
        ),
        pretrained={"swin": "ImageNet Swin-Tiny",
                    **{f"swin_audio_w{w}": "ImageNet Swin-Tiny" for w in _KIM_WINDOWS}},
        # demo: the paper's purity thresholds (0.8 at 32 frames) leave the demo's short, mostly
        # unlabelled dev clips without a window; the lenient rule at 0.5, as the tests use
        scales={"demo": {"swin": _DEMO_FT, **{f"swin_audio_w{w}": (
                    *_DEMO_FT, *_sets("window_purity=0.5", "purity_rule=labelled"))
                    for w in _KIM_WINDOWS},
                         "fuse": _DEMO_FUSE},
                "full": {}},
    ),
    # Paper 001: ResNet-50 (VGGFace2) fine-tuned, its map into DAN, a soft-voting bag.
    "jeong2022": Recipe(
        paper="Jeong et al. 2022 (paper 001)",
        steps=(
            _manifest(),
            _finetune("timm", "--preset", "jeong2022", "--model", "{model}"),
            _extract("-e", "timm", "--set", "configs.timm.model={model}", "--set",
                     "configs.timm.map=true", "--weights", "timm={work}/weights/timm"),
            # DAN's heads start from the fine-tune's (no adapter: the map is the fine-tuned
            # backbone's own), then train on in stage two
            _fuse("dan", "jeong2022", "jeong2022", "--set", "head.init_from={work}/weights/timm"),
            _ensemble("jeong2022"),
        ),
        pretrained={"timm": "VGGFace2 ResNet-50"},
        model="resnet50",
        # demo: the paper's batch of 1024 is more than the demo's training frames (one step per
        # epoch); 32 gives the head about 12 steps per epoch (docs/recipes.md, Measured)
        scales={"demo": {"timm": _DEMO_FT,
                         "fuse": (*_DEMO_FUSE, *_sets("bag.k=2", "train.batch_size=32"))},
                "full": {}},
        # the fine-tune preset trains ResNet-50 and DAN's heads together (affinity, partition and
        # focal losses); the weights folder holds the backbone, frozen for extraction, and the
        # heads, which fuse's dan head starts from (head.init_from)
        missing=("stage two trains the fine-tuned DAN heads on (a bag of them, on the frozen map)"
                 " where the paper stops after the end-to-end training",),
    ),
    # Paper 003: IResNet-100 (Glint360K) and the TDNN fine-tuned, the multi-task sequence model.
    "jin2021": Recipe(
        paper="Jin et al. 2021 (paper 003)",
        steps=(
            _manifest(),
            _finetune("iresnet", "--preset", "jin2021", "--backbone", "iresnet"),
            _finetune("tdnn", "--preset", "jin2021"),
            _extract("-e", "iresnet", "-e", "tdnn", "--weights", "iresnet={work}/weights/iresnet",
                     "--weights", "tdnn={work}/weights/tdnn"),
            _fuse("sequence", "jin2021", "jin2021"),
            _ensemble("jin2021"),
        ),
        pretrained={"iresnet": "Glint360K IResNet-100"},
        notes={"demo": ("IResNet-18 in place of IResNet-100",
                        "a TDNN of widths 64-128 (embedding 64) in place of the 512-wide one")},
        scales={"demo": {"iresnet": (*_DEMO_FT, "--set", "iresnet.depth=18"),
                         "tdnn": (*_DEMO_FT, *_sets(*(f"tdnn.{o}" for o in _TDNN_DEMO))),
                         "extract": ("--set", "configs.iresnet.depth=18",
                                     *_sets(*(f"configs.tdnn.{o}" for o in _TDNN_DEMO))),
                         "fuse": _DEMO_FUSE},
                "full": {}},
    ),
    # Paper 004: a timm face model fine-tuned (its RHCNN is not available), GCSA fusion.
    "yu2025": Recipe(
        paper="Yu et al. 2025 (paper 004)",
        steps=(
            _manifest(),
            _finetune("swin", "--preset", "yu2025", "--model", "swin_tiny_patch4_window7_224"),
            _extract("-e", "swin", "-e", "logmel", "--set", "configs.swin.tokens=true",
                     "--weights", "swin={work}/weights/swin"),
            _fuse("gcsa", "yu2025", "yu2025"),
            _ensemble("yu2025"),
        ),
        scales={"demo": {"swin": _DEMO_FT, "fuse": _sets("train.epochs=3", "train.patience=3")},
                "full": {}},
        missing=("Yu et al.'s RHCNN / MCNN end to end on pixels and waveforms: a fine-tuned "
                 "Swin-Tiny and log-mel stand in (docs/presets.md)",),
    ),
    # ABAW10 leader: DINOv2 ViT-L faces, wav2vec2 audio, gated fusion.
    "sun2026": _leader_2026("sun2026", "Sun and Gao 2026 (arXiv 2603.12221)", "gated",
                            "DINOv2 ViT-L/14", "wav2vec2", "vit_large_patch14_dinov2.lvd142m"),
    # ABAW10: BEiT-L faces, WavLM audio, safe cross-attention.
    "yu2026": _leader_2026("yu2026", "Yu et al. 2026 (arXiv 2603.08034)", "xattn", "BEiT-L",
                           "WavLM-large", "beit_large_patch16_224.in22k_ft_in22k_in1k"),
}


def recipe(name: str) -> Recipe:
    """Recipe ``name``, or a one-line error naming the choices."""
    if name not in RECIPES:
        raise PipelineError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}"
                            f"{did_you_mean(name, RECIPES)}")
    return RECIPES[name]


def init_keys(r: Recipe) -> list[str]:
    """The backbones of ``r`` that ``--weights KEY=PATH`` may start."""
    return [a.removeprefix("@init:") for s in r.steps for a in s.args if a.startswith("@init:")]


def missing_weights(r: Recipe, weights: dict[str, str]) -> list[str]:
    """The backbones ``r`` starts from pretrained weights that ``weights`` does not give."""
    return [k for k in r.pretrained if k not in weights]


def model_at(r: Recipe, scale: str, weights: dict[str, str] | None = None) -> str:
    """The face model ``r`` runs at ``scale``: the paper's, or at demo its stand-in, unless the
    user gives the face backbone's weights (``--weights timm=``: they fit the paper's model)."""
    if scale != "demo" or MODEL_KEY in (weights or {}):
        return r.model
    return STAND_INS.get(r.model, r.model)


def audio_stand_in(r: Recipe, scale: str, weights: dict[str, str] | None = None) -> str | None:
    """The audio encoder's stand-in ``r`` runs at ``scale`` (:data:`AUDIO_STAND_INS`): at demo,
    unless the user gives the audio encoder's weights (``--weights hf_audio=``); else None."""
    if scale != "demo" or AUDIO_KEY in (weights or {}):
        return None
    return AUDIO_STAND_INS.get(r.pretrained.get(AUDIO_KEY, ""))


def substitutions(r: Recipe, scale: str, weights: dict[str, str] | None = None) -> list[str]:
    """What the scale puts in place of the paper's models, one "X in place of Y" each."""
    model = model_at(r, scale, weights)
    audio = audio_stand_in(r, scale, weights)
    return [*([f"{model} in place of {r.model}"] if model != r.model else []),
            *([f"{audio} in place of {r.pretrained[AUDIO_KEY]}"] if audio else []),
            *r.notes.get(scale, ())]


def render(r: Recipe, data: str, work: str, scale: str, weights: dict[str, str],
           allow_random_weights: bool) -> list[tuple[Step, list[str], str]]:
    """Each step with its filled-in arguments (after ``fer-pipeline``) and output path."""
    if scale not in SCALES:
        raise PipelineError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}")
    keys = init_keys(r)
    unknown = [k for k in weights if k not in keys]
    if unknown:
        raise PipelineError(f"--weights {unknown[0]}=...: the recipe starts no backbone "
                            f"{unknown[0]!r} from weights (choose from {', '.join(keys)})"
                            f"{did_you_mean(unknown[0], keys)}")
    audio = audio_stand_in(r, scale, weights)
    values = {"data": data, "work": work, "m": f"{work}/manifests",
              "model": model_at(r, scale, weights), "audio": audio or ""}
    stand_ins = ["--allow-stand-ins"] if values["model"] != r.model else []
    random = ["--allow-random-weights"] if allow_random_weights else []
    rendered = []
    for step in r.steps:
        if step.stand_in and audio is None:
            continue
        args: list[str] = []
        for a in step.args:
            if a.startswith("@init:"):
                key = a.removeprefix("@init:")
                family = key.split("_w")[0] if key.startswith("swin_audio") else key
                if key in weights:
                    args += ["--weights", weights[key] if step.args[0] == "finetune"
                             else f"{family}={weights[key]}"]
                elif key in r.pretrained and step.args[0] == "finetune":
                    args += random  # the finetune preset refuses a random start otherwise
                elif key == AUDIO_KEY and audio:  # the folder the stand-in step wrote
                    args += ["--weights", f"{AUDIO_KEY}={work}/stand_ins/{audio}"]
            elif a == "@random":
                args += random
            elif a == "@stand_ins":
                args += stand_ins
            elif a.startswith("@scale:"):
                args += list(r.scales.get(scale, {}).get(a.removeprefix("@scale:"), ()))
            else:
                args.append(a.format(**values))
        rendered.append((step, args, step.output.format(**values)))
    return rendered
