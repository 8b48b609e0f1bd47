"""Streaming tables from the store: bounded groups, a bounded cache, clip-bounded windows, and
one-line errors naming the clip when the store and the manifests disagree."""

import gc
import weakref

import numpy as np
import pytest

from pipeline.data.manifest import Clip
from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.fusion.data import FeatureRequest, check_inputs, load_table, read_clip
from pipeline.fusion.stream import ClipStream

from .synthetic import make_dataset

AUDIO = ("tdnn_w32", "tdnn_w48", "tdnn_w64")
REQUEST = FeatureRequest(arrays=("swin", *AUDIO), audio=AUDIO, purity=((32, 48, 64), (0.8, 0.65, 0.5)))


class CountingStore(FeatureStore):
    """Counts whole-array reads (to see what the cache saves)."""

    reads = 0

    def read(self, clip_id, name):
        CountingStore.reads += 1
        return super().read(clip_id, name)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("synthetic"), splits={"train": 5, "val": 1},
                        frames=40, no_audio=("train04",))


def test_groups_are_bounded_and_in_order(data):
    store = FeatureStore(data.store)
    dims = check_inputs(store, data.clips, REQUEST)
    assert dims == {"swin": (16,), **{name: (8,) for name in AUDIO}}
    clip_mb = read_clip(store, data.clips[0], REQUEST, dims, train=True).nbytes / 2**20
    stream = ClipStream(store, REQUEST, dims, buffer_mb=3 * clip_mb)  # one clip per group
    alive: list[weakref.ref] = []
    seen = []
    for table in stream.tables(data.clips, train=True):  # 6 groups of one clip
        alive.append(weakref.ref(table))
        gc.collect()
        # the group in use, the one being prefetched, and the previous one at most
        assert sum(ref() is not None for ref in alive) <= 3
        seen += table.clip_ids
        assert table.arrays["swin"].shape == (40, 16)
    assert seen == [c.clip_id for c in data.clips]


def test_cache_keeps_clips_within_its_budget(data):
    store = CountingStore(data.store)
    dims = check_inputs(store, data.clips, REQUEST)
    clip_bytes = read_clip(store, data.clips[0], REQUEST, dims, train=False).nbytes
    # 6 clips: 5 read valid + swin + 3 audio arrays, one without audio only valid + swin
    for cache_mb, reads_second_epoch in ((0, 27), (2 * clip_bytes / 2**20, 27 - 2 * 5), (1.0, 0)):
        stream = ClipStream(store, REQUEST, dims, buffer_mb=6 * clip_bytes / 2**20, cache_mb=cache_mb)
        for _ in stream.tables(data.clips):
            pass
        CountingStore.reads = 0
        for _ in stream.tables(data.clips):
            pass
        assert CountingStore.reads == reads_second_epoch, cache_mb


def test_clip_without_audio_gets_zeros_and_no_audio_flag(data):
    store = FeatureStore(data.store)
    dims = check_inputs(store, data.clips, REQUEST)
    table = load_table(store, data.clips[3:5], REQUEST, dims, train=True)
    rows = table.clip_rows(1)
    assert table.clip_ids[1] == "train04"
    assert not table.audio[rows].any() and table.audio[table.clip_rows(0)].all()
    assert not table.arrays["tdnn_w32"][rows].any()
    # purity masks exist for labelled frames of training clips only
    assert table.window_ok.shape == (80, 3)
    assert not table.window_ok[table.labels == -1].any()


def test_windows_stay_inside_their_clip(data):
    store = FeatureStore(data.store)
    dims = check_inputs(store, data.clips, REQUEST)
    table = load_table(store, data.clips[:2], REQUEST, dims, train=False)
    index, inside = table.window(np.array([0, 39, 40]), np.array([-2, 0, 2]))
    assert index.tolist() == [[0, 0, 2], [37, 39, 39], [40, 40, 42]]
    assert inside.tolist() == [[False, True, True], [True, True, False], [False, True, True]]


def _clip(clip_id, n=40, split="train"):
    return Clip(clip_id=clip_id, split=split, video_id=clip_id, n_frames=n, fps=10.0,
                frames_dir=None, video_path=None, audio_path=None, labels=np.zeros(n, np.int8))


def test_mismatches_name_the_clip(data):
    store = FeatureStore(data.store)
    with pytest.raises(PipelineError, match="clip ghost .*not in the store"):
        check_inputs(store, [_clip("ghost")], REQUEST)
    with pytest.raises(PipelineError, match="clip train00: 41 frames in the manifest but 40"):
        check_inputs(store, [_clip("train00", 41)], REQUEST)
    with pytest.raises(PipelineError, match="clip train00: no array 'iresnet'.*it has: "):
        check_inputs(store, [_clip("train00")], FeatureRequest(arrays=("iresnet",)))


def test_a_clip_the_leakage_guard_excluded_has_no_expression_labels_for_scoring(data):
    """An expression-val clip that is in the AU training split (paper 003, 4.1): neither early
    stopping nor any expression score may read its labels."""
    import dataclasses

    store = FeatureStore(data.store)
    dims = check_inputs(store, data.clips, REQUEST)
    val = next(c for c in data.clips if c.split == "val")
    assert (val.labels != -1).any()
    guarded = dataclasses.replace(val, exclude_from=("expr_val",))
    kept = read_clip(store, val, REQUEST, dims, train=False)
    dropped = read_clip(store, guarded, REQUEST, dims, train=False)
    np.testing.assert_array_equal(kept.labels, val.labels)
    assert (dropped.labels == -1).all()
    np.testing.assert_array_equal(dropped.arrays["swin"], kept.arrays["swin"])  # features stay
