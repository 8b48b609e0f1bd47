"""Issue 34's generated cases with known truth, through ``faces --all-faces`` (and the default one
person), ``manifest`` and ``extract``: faces found per frame, tracks against truth, clips kept,
and a contact sheet per case (frames with each track's boxes in its own colour, crops below).

Cases (all made of matplotlib's photograph of Grace Hopper, the one real photograph of a person
on this machine offline):
- ``cut``: a shot cut between two looks of the face (colour / black-and-white mirrored, other
  background): truth 2 tracks, cut at frame 12;
- ``group``: a group photo of four: truth 4 tracks, no cut;
- ``talk``: the moving face (pans, zooms, leaves and comes back) in a .mov whose audio ends 2 s
  before its 4 s video: truth 1 person (2 tracks: it leaves the picture), audio for 20 of 40 frames;
- ``trunc``: a front-indexed mp4 cut to half its bytes: truth a truncated file (skipped).

    python tests/bench/raw_video_cases.py [OUT_DIR]   (default /tmp/raw-video-cases)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))

from cli.main import main as cli  # noqa: E402
from pipeline.data.faces.synthetic import group, moving_face, shot_cut  # noqa: E402
from pipeline.data.media import write_video  # noqa: E402

COLOURS = [(0, 200, 0), (230, 60, 60), (60, 120, 255), (240, 200, 0), (200, 0, 200), (0, 200, 200)]


def sheet(out: Path, video: str, frames: np.ndarray, path: Path, step: int) -> None:
    record = json.loads((out / "faces" / f"{video}.json").read_text())
    thumb_w = 160
    scale = thumb_w / frames.shape[2]
    thumb_h = round(frames.shape[1] * scale)
    picks = list(range(0, len(frames), step))
    clips = record["clips"]
    canvas = Image.new("RGB", (thumb_w * len(picks), thumb_h + 64 * len(clips)), (90, 90, 90))
    draw = ImageDraw.Draw(canvas)
    for c, clip in enumerate(clips):
        with np.load(out / "faces" / f"{clip}.npz") as q:
            face, box = q["face"], q["box"]
        for k, i in enumerate(picks):
            if face[i]:
                crop = Image.open(out / "cropped_aligned" / clip / f"{i + 1:05d}.jpg").resize((64, 64))
                canvas.paste(crop, (k * thumb_w, thumb_h + 64 * c))
                draw.rectangle([k * thumb_w, thumb_h + 64 * c, k * thumb_w + 63, thumb_h + 64 * c + 63],
                               outline=COLOURS[c % len(COLOURS)], width=2)
    for k, i in enumerate(picks):
        canvas.paste(Image.fromarray(frames[i]).resize((thumb_w, thumb_h)), (k * thumb_w, 0))
        for c, clip in enumerate(clips):
            with np.load(out / "faces" / f"{clip}.npz") as q:
                if q["face"][i]:
                    b = q["box"][i] * scale + [k * thumb_w, 0, k * thumb_w, 0]
                    draw.rectangle(list(b), outline=COLOURS[c % len(COLOURS)], width=2)
        draw.text((k * thumb_w + 3, 3), f"{i + 1}{' CUT' if i in record['cuts'] else ''}",
                  fill=(255, 255, 0))
    canvas.save(path)


def main(root: Path) -> None:
    videos = root / "videos"
    rate = 16000
    cut, first = shot_cut()
    write_video(videos / "cut.mp4", cut.frames, 10.0)
    team = group(12)
    write_video(videos / "group.mkv", team.frames, 10.0)
    talk = moving_face(40)
    t = np.arange(2 * rate) / rate
    write_video(videos / "talk.mov", talk.frames, 10.0,
                (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate)
    trunc = videos / "trunc.mp4"
    write_video(trunc, moving_face(30, 160, 120).frames, 10.0)
    from test_extract_short_audio import faststart, truncate

    faststart(trunc)
    truncate(trunc, 0.5)
    truth = {"cut": f"2 tracks (frames 1-{first}, {first + 1}-{len(cut.frames)}), cut at {first + 1}",
             "group": "4 tracks, no cut", "talk": "1 person: 2 tracks (it leaves the picture)",
             "trunc": "truncated: skipped"}
    for mode, extra in (("all", ["--all-faces"]), ("one", [])):
        out = root / f"raw-{mode}"
        code = cli(["faces", str(videos), "--out", str(out), "--allow-skips", *extra])
        print(f"faces {mode}: exit {code}")
        for name, frames in (("cut", cut.frames), ("group", team.frames), ("talk", talk.frames)):
            record = json.loads((out / "faces" / f"{name}.json").read_text())
            found = np.zeros(record["frames"], int)
            for clip in record["clips"]:
                with np.load(out / "faces" / f"{clip}.npz") as q:
                    found += q["face"]
            tracks = ", ".join(f"{t['first'] + 1}-{t['last'] + 1}->{t['clip']}" for t in record["tracks"])
            print(f"  {name}: {record['frames']} frames, faces kept per frame min/mean/max "
                  f"{found.min()}/{found.mean():.2f}/{found.max()}, cuts {[c + 1 for c in record['cuts']]}, "
                  f"tracks [{tracks}], clips kept {record['faces']}; truth: {truth[name]}")
            sheet(out, name, frames, root / f"sheet-{mode}-{name}.png", 2 if len(frames) <= 24 else 4)
        print(f"  trunc: {'record written' if (out / 'faces' / 'trunc.json').exists() else 'skipped'}; "
              f"truth: {truth['trunc']}")
    out = root / "raw-all"
    print("manifest:", cli(["manifest", str(out), "--out", str(out / "manifests")]))
    import extract_fixtures  # noqa: F401  (registers test_mean_colour)

    print("extract:", cli(["extract", "--manifests", str(out / "manifests"), "--store",
                           str(out / "f.zarr"), "-e", "test_mean_colour", "-e", "logmel",
                           "--device", "cpu"]))
    from pipeline.features.store import FeatureStore

    store = FeatureStore(out / "f.zarr")
    for clip in sorted(store.clip_ids()):
        valid = store.read(clip, "valid")
        if not store.clip_attrs(clip).get("has_audio", True):
            audio = "no audio track"
        elif "audio_valid" in store.array_names(clip):
            audio = f"{int(store.read(clip, 'audio_valid').sum())} with audio"
        else:
            audio = f"{len(valid)} with audio"
        print(f"  {clip}: {len(valid)} frames, {int(valid.sum())} with a face, {audio}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/raw-video-cases"))
