"""``fuse --help`` lists the heads from the registry, including one registered after import."""

from dataclasses import dataclass

from cli.main import main
from pipeline.fusion import heads
from pipeline.fusion.heads import Head, registry


@dataclass
class _Config:
    image: str = "swin"


class _LateHead(Head):
    name = "zz_late_test_head"
    Config = _Config

    @classmethod
    def request(cls, config, sampling):
        raise NotImplementedError

    def batch(self, table, examples, counts):
        raise NotImplementedError


def test_fuse_help_lists_every_registered_head(capsys):
    heads.register(_LateHead)
    try:
        assert main(["fuse", "--help"]) == 0
        out = " ".join(capsys.readouterr().out.replace("│", " ").split())
        assert len(registry()) >= 8
        for name in registry():
            assert name in out, f"fuse --help does not list {name}"
    finally:
        heads.HEADS.unregister(_LateHead.name)
