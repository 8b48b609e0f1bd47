"""The pixels and sounds of the demo dataset (:mod:`pipeline.data.synthetic` says what they mean).

A face crop shows its class pair in the background hue, behind a face whose identity, pose,
expression-like shapes and lighting are nuisance; the audio is a harmonic tone whose band tells
the class member. Every function draws from the generator it is given, in a fixed order, so that
the same seed gives the same bytes.
"""

from __future__ import annotations

import colorsys
import io

import numpy as np
from PIL import Image, ImageDraw

SAMPLE_RATE = 16000  # Hz, the rate the audio extractors read at
PAIR_HUES = (0.0, 90.0, 180.0, 270.0)  # background hue (degrees) per pair
HUE_JITTER = 20.0  # +- degrees per frame: far from the 45 degrees that would blur two pairs
MEMBER_F0 = ((100.0, 180.0), (300.0, 500.0))  # fundamental frequency band (Hz) per member
MEMBER_TOP_HZ = (1200.0, 3800.0)  # highest harmonic (Hz) per member: the whole band moves
FADE_S = 0.01  # raised-cosine fade at each member boundary, so tones do not click
JPEG_QUALITY = 90


def rgb(hue_deg: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((hue_deg % 360.0) / 360.0, saturation, value)) * 255.0


def fill(rgb: np.ndarray) -> tuple[int, ...]:
    return tuple(int(v) for v in np.clip(rgb, 0, 255))


def identity(rng: np.random.Generator) -> dict:
    """Per-clip appearance: who the face is (independent of every label)."""
    return {
        "skin": rgb(rng.uniform(15, 40), rng.uniform(0.25, 0.6), rng.uniform(0.45, 0.95)),
        "hair": rgb(rng.uniform(0, 50), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.5)),
        "width": rng.uniform(0.50, 0.62),  # face width as a fraction of the crop
        "height": rng.uniform(0.66, 0.80),
        "eyes": rng.uniform(0.16, 0.22),  # half the distance between the eyes, fraction of crop
    }


def face(rng: np.random.Generator, pair: int, who: dict, size: int) -> np.ndarray:
    """One face crop whose background hue shows ``pair``; everything else is nuisance."""
    s = float(size)
    background = rgb(PAIR_HUES[pair] + rng.uniform(-HUE_JITTER, HUE_JITTER),
                      rng.uniform(0.45, 0.8), rng.uniform(0.55, 0.9))
    image = Image.new("RGB", (size, size), fill(background))
    draw = ImageDraw.Draw(image)
    cx, cy = s * (0.5 + rng.uniform(-0.05, 0.05)), s * (0.52 + rng.uniform(-0.05, 0.05))
    scale = rng.uniform(0.92, 1.08)
    w, h = s * who["width"] * scale / 2, s * who["height"] * scale / 2
    hair = (cx - w * 1.05, cy - h * 1.08, cx + w * 1.05, cy + h * 0.2)
    draw.ellipse(hair, fill=fill(who["hair"]))
    draw.ellipse((cx - w, cy - h * 0.9, cx + w, cy + h), fill=fill(who["skin"]))
    eye_x, eye_y, eye_r = s * who["eyes"] * scale, cy - h * 0.2, max(1.0, s * 0.03)
    brow = rng.uniform(-0.04, 0.04) * s  # brow tilt: an expression-like nuisance
    for side in (-1, 1):
        ex = cx + side * eye_x
        eye = (ex - eye_r * 1.6, eye_y - eye_r, ex + eye_r * 1.6, eye_y + eye_r)
        draw.ellipse(eye, fill=(30, 25, 25))
        draw.line((ex - eye_r * 2, eye_y - eye_r * 2.5 + side * brow,
                   ex + eye_r * 2, eye_y - eye_r * 2.5 - side * brow),
                  fill=fill(who["hair"] * 0.6), width=max(1, size // 40))
    mouth_w, mouth_h = w * rng.uniform(0.35, 0.6), h * rng.uniform(0.05, 0.25)
    mouth_y = cy + h * 0.45
    box = (cx - mouth_w, mouth_y - mouth_h, cx + mouth_w, mouth_y + mouth_h)
    if rng.random() < 0.5:  # smile or frown: not the label
        draw.arc(box, 20, 160, fill=(120, 30, 40), width=max(1, size // 30))
    else:
        draw.arc(box, 200, 340, fill=(120, 30, 40), width=max(1, size // 30))
    pixels = np.asarray(image, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)  # a lighting gradient across the crop
    axis = np.linspace(-1.0, 1.0, size)
    ramp = np.cos(angle) * axis[None, :] + np.sin(angle) * axis[:, None]
    pixels *= (rng.uniform(0.75, 1.2) * (1.0 + 0.15 * ramp))[..., None]
    pixels += rng.normal(0.0, 6.0, pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


FACE_CUES = ("colour", "geometry")


def geometry_face(rng: np.random.Generator, pair: int, size: int) -> np.ndarray:
    """A face crop whose ``pair`` shows only in the mouth's shape (0: a smile, 1: a frown, 2: an
    open mouth, 3: a straight line); background hue, skin tone, position and scale are drawn
    afresh every frame, so no colour and no place tells the pair (``demo-data --face-cue
    geometry``: a random network's features cannot read it, a trained one can)."""
    s = float(size)
    background = rgb(rng.uniform(0, 360), rng.uniform(0.3, 0.8), rng.uniform(0.4, 0.9))
    skin = rgb(rng.uniform(0, 60), rng.uniform(0.15, 0.7), rng.uniform(0.35, 0.95))
    image = Image.new("RGB", (size, size), fill(background))
    draw = ImageDraw.Draw(image)
    scale = rng.uniform(0.75, 1.1)
    cx, cy = s * (0.5 + rng.uniform(-0.1, 0.1)), s * (0.5 + rng.uniform(-0.1, 0.1))
    w, h = s * 0.3 * scale, s * 0.38 * scale
    draw.ellipse((cx - w, cy - h, cx + w, cy + h), fill=fill(skin))
    eye_r = max(1.0, s * 0.03 * scale)
    for side in (-1, 1):
        ex, ey = cx + side * w * 0.4, cy - h * 0.25
        draw.ellipse((ex - eye_r, ey - eye_r, ex + eye_r, ey + eye_r), fill=(30, 25, 25))
    mouth_w, mouth_h, mouth_y = w * 0.5, h * 0.18, cy + h * 0.45
    box = (cx - mouth_w, mouth_y - mouth_h, cx + mouth_w, mouth_y + mouth_h)
    ink, width = fill(skin * 0.35), max(1, int(s * 0.04 * scale))
    if pair == 0:
        draw.arc(box, 20, 160, fill=ink, width=width)
    elif pair == 1:
        draw.arc(box, 200, 340, fill=ink, width=width)
    elif pair == 2:
        draw.ellipse((cx - mouth_w * 0.45, mouth_y - mouth_h, cx + mouth_w * 0.45, mouth_y + mouth_h),
                     fill=ink)
    else:
        draw.line((cx - mouth_w, mouth_y, cx + mouth_w, mouth_y), fill=ink, width=width)
    pixels = np.asarray(image, dtype=np.float32) * rng.uniform(0.8, 1.15)
    pixels += rng.normal(0.0, 6.0, pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def audio(rng: np.random.Generator, member: np.ndarray, fps: float) -> np.ndarray:
    """Mono float32 audio whose pitch band follows ``member`` frame by frame."""
    n_samples = int(round(len(member) / fps * SAMPLE_RATE))
    signal = np.zeros(n_samples, dtype=np.float64)
    changes = np.flatnonzero(np.diff(member)) + 1
    for start, end in zip(np.r_[0, changes], np.r_[changes, len(member)]):
        a, b = int(round(start / fps * SAMPLE_RATE)), int(round(end / fps * SAMPLE_RATE))
        t = np.arange(b - a) / SAMPLE_RATE
        f0 = rng.uniform(*MEMBER_F0[member[start]])
        top = MEMBER_TOP_HZ[member[start]]
        vibrato = 1.0 + rng.uniform(0.02, 0.04) * np.sin(2 * np.pi * rng.uniform(4, 6) * t)
        phase = 2 * np.pi * np.cumsum(f0 * vibrato) / SAMPLE_RATE + rng.uniform(0, 2 * np.pi)
        k = np.arange(1, int(top / (f0 * 1.05)) + 1)[:, None]  # 1.05: room for the vibrato
        tone = (np.sin(k * phase[None, :]) / k ** rng.uniform(0.5, 1.0)).sum(axis=0)
        syllables = 0.35 + 0.65 * (0.5 - 0.5 * np.cos(2 * np.pi * rng.uniform(2, 4) * t))
        fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / FADE_S)
        signal[a:b] = tone * syllables * (0.5 - 0.5 * np.cos(np.pi * fade))
    rms = np.sqrt(np.mean(signal ** 2)) or 1.0
    signal += rng.normal(0.0, rms / 10 ** (rng.uniform(6, 12) / 20), n_samples)
    return (0.6 * signal / np.abs(signal).max()).astype(np.float32)
