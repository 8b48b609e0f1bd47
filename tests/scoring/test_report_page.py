"""Stage three's report as a reader opens it (issue 35): the headline is the final row's number,
a random-weights run says so in a banner, provenance names each member's command and weights,
every contents link resolves, and the test split has its section. Checked on a demo-sized stage
three (8 validation clips of 45 frames in 7 videos, 5 test clips, three runs) with Python's HTML
parser, always, and in headless Chromium where it is installed (``make browser`` installs it as
root); the browser test skips, saying why, where it is not."""

import json
import re
import shutil
import subprocess
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.frames import face_mask
from pipeline.data.manifest import Clip, write_manifest
from pipeline.features.store import FeatureStore
from pipeline.runs.predictions import FaceMaskWriter, PredictionWriter, face_mask_path
from pipeline.scoring.ensemble import EnsembleConfig
from stages.ensemble import run_ensemble

REPO = Path(__file__).resolve().parents[2]
FRAMES = 45


def _clips(root: Path, rng) -> dict[str, list[Clip]]:
    """The demo's shape: 45-frame clips, one _left/_right pair in val, labels in runs of 9."""
    clips = {}
    for split, count in (("train", 6), ("val", 8), ("test", 5)):
        clips[split] = []
        for i in range(count):
            clip_id = {(1, "val"): "val1_left", (2, "val"): "val1_right"}.get((i, split),
                                                                              f"{split}{i}")
            frames = root / "frames" / clip_id
            frames.mkdir(parents=True)
            for f in range(FRAMES):
                (frames / f"{f + 1:05d}.jpg").write_bytes(b"")
            labels = None if split == "test" else np.repeat(rng.integers(0, 8, 5), 9).astype(
                np.int8)
            clips[split].append(Clip(clip_id, split, clip_id.split("_")[0], FRAMES, 25.0,
                                     str(frames), None, None, labels))
        write_manifest(root / "manifests" / f"{split}.jsonl", clips[split])
    return clips


def _run(root: Path, name: str, outputs: list[str], clips, rng, store: Path, strength: float):
    """A finished run directory as stage two leaves it, reading `swin` from ``store``."""
    run = root / "runs" / name
    for split in ("val", "test"):
        with FaceMaskWriter(face_mask_path(run, split)) as writer:
            for clip in clips[split]:
                writer.add(clip.clip_id, face_mask(clip.frames_dir, clip.n_frames))
        for k, output in enumerate(outputs):
            with PredictionWriter(run / "predictions" / split / f"{output}.npz") as writer:
                for clip in clips[split]:
                    logits = rng.normal(size=(clip.n_frames, 8))
                    if clip.labels is not None:
                        logits[np.arange(clip.n_frames), clip.labels] += strength + k / 2
                    p = np.exp(logits)
                    writer.add(clip.clip_id, p / p.sum(axis=1, keepdims=True))
    (run / "metrics.json").write_text(json.dumps({
        "method": name, "outputs": outputs, "primary": outputs[0], "selected_on": "train-dev",
        "features": {"valid": "valid-1", "swin": "swin-key"},
        "history": [{"epoch": e, "train_loss": 1 / (e + 1), "val_macro_f1": e / 10}
                    for e in range(3)]}))
    (run / "config.toml").write_text(f'method = "{name}"\nstore = "{store}"\n'
                                     f'manifests = "{root / "manifests"}"\n')
    return run


def _stage(root: Path, config=None) -> tuple[Path, dict]:
    """(report.html, scores.json as a dict) of a demo-sized stage three on random weights."""
    rng = np.random.default_rng(0)
    clips = _clips(root, rng)
    store = root / "features.zarr"
    FeatureStore(store, "a").record_extractors({"swin": {
        "name": "swin", "cache_key": "swin-key", "precision": "bf16", "random_weights": True,
        "weights": None, "weights_sha256": None}})
    runs = [_run(root, "image", ["main"], clips, rng, store, 0.8),
            _run(root, "audio", ["main"], clips, rng, store, 0.3),
            _run(root, "mfm", ["fusion", "image", "audio"], clips, rng, store, 1.5)]
    run_ensemble(runs, root / "manifests", root / "scores", config)
    scores = root / "scores"
    return scores / "report.html", json.loads((scores / "scores.json").read_text())


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return _stage(tmp_path_factory.mktemp("report"))


class Page(HTMLParser):
    """Ids, local links, the text of each element with a class, and the sections' order."""

    def __init__(self, page: str):
        super().__init__()
        self.ids, self.links, self.order, self.text, self._open = [], [], [], {}, []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
            if tag in ("section", "nav"):
                self.order.append(attrs["id"])
        if tag == "a" and attrs.get("href", "").startswith("#"):
            self.links.append(attrs["href"][1:])
        self._open.append(attrs.get("class"))

    def handle_endtag(self, tag):
        if self._open:
            self._open.pop()

    def handle_data(self, data):
        for name in filter(None, self._open):
            self.text[name] = self.text.get(name, "") + data


def _check(page: Page, scores: dict) -> None:
    final = scores["rows"][-1]
    assert final["name"] == scores["final"]
    assert page.text["headline-value"].strip() == f"{final['macro_f1']:.4f}"
    assert page.links and not set(page.links) - set(page.ids), "a contents link has no target"
    assert len(page.ids) == len(set(page.ids))
    assert page.order[:4] == ["headline", "warnings", "provenance", "notes"]
    for anchor in ("contents", "per-class", "confusion", "results", "test", "tuning"):
        assert anchor in page.order and anchor in page.links + ["contents"]


def test_the_page_leads_with_the_final_row_and_every_link_resolves(report):
    html_path, scores = report
    text = html_path.read_text()
    _check(Page(text), scores)
    final = scores["rows"][-1]
    ci = final["macro_f1_ci"]
    assert f"CI {ci['low']:.4f}-{ci['high']:.4f}" in text.split('id="warnings"')[0]
    assert "RANDOM WEIGHTS" in text and "features of swin come from untrained" in text
    assert "random weights</b>" in text  # the member table's extractor cell too
    for run in ("image", "audio", "mfm"):  # each member's command remakes it from its config
        assert re.search(rf"fer-pipeline fuse --method {run} --store \S+features.zarr", text)
    assert "features extracted in bf16" in text and "fer-pipeline 0.1.0" in text
    test_section = text[text.index('id="test"'):text.index('id="tuning"')]
    for clip in ("test0", "test4"):
        assert f"<td>{clip}</td>" in test_section
    assert "test_class_shares.png" in test_section and "test_timelines.png" in test_section
    assert "<details><summary>" in text[text.index('id="results"'):]  # pairwise rows folded


def test_the_template_is_package_data():
    """A non-editable install ships the report's templates: pyproject's package-data matches
    every file under pipeline/scoring/templates."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["pipeline.scoring"]
    templates = sorted((REPO / "pipeline" / "scoring" / "templates").iterdir())
    assert templates
    for path in templates:
        relative = path.relative_to(REPO / "pipeline" / "scoring")
        assert any(relative.match(p) for p in patterns), f"{relative} is not package data"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH: `make browser` installs"
                    " Debian's chromium (as root); the HTML-parser test above still runs")
def test_the_page_in_headless_chromium(report, tmp_path):
    html_path, scores = report
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(command + ["--dump-dom", html_path.as_uri()], capture_output=True,
                         text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    _check(Page(dom.stdout), scores)  # the DOM Chromium built, not the file's text
    shot = tmp_path / "report.png"
    done = subprocess.run(command + [f"--screenshot={shot}", "--window-size=1200,1600",
                                     html_path.as_uri()], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and shot.stat().st_size > 10_000, done.stderr[-2000:]


def test_no_banner_or_test_section_when_there_is_nothing_to_say(tmp_path):
    from pipeline.metrics.scores import score
    from pipeline.scoring.crossfit import Row
    from pipeline.scoring.report import ReportData, write_report

    rng = np.random.default_rng(5)
    truth = rng.integers(0, 8, 200)
    rows = [Row("a/main", "member", "train-dev", score(truth, truth)),
            Row("final: a/main", "final", "val-crossfit",
                score(truth, np.where(rng.random(200) < 0.3, 0, truth)))]
    text = write_report(tmp_path, ReportData("val", rows, "final: a/main", [], {},
                                             {"protocol": "val-crossfit"})).read_text()
    page = Page(text)
    assert "warnings" not in page.ids and "test" not in page.ids
    assert not set(page.links) - set(page.ids)
    assert page.text["headline-value"].strip() == f"{rows[-1].scores.macro_f1:.4f}"
    assert "No provenance was given to this report" in text


def test_choices_tuned_on_the_scored_frames_are_in_the_banner(tmp_path):
    html_path, _ = _stage(tmp_path, EnsembleConfig(tune_on="same"))
    text = html_path.read_text()
    banner = text[text.index('id="warnings"'):text.index('id="provenance"')]
    assert "tuned on the scored frames (--tune-on same): optimistic scores" in banner
    assert "RANDOM WEIGHTS" in banner
