"""WebDataset tar shards: write once from any source (:mod:`.writer`), read as a source
(:mod:`.source`), and feed training through the fast fused decode-and-crop loader (:mod:`.loader`)."""

from cnnlab.data.shards.loader import FastCropDataset, ShardSampler, make_shard_loader
from cnnlab.data.shards.source import ShardSource, open_shards

__all__ = ["FastCropDataset", "ShardSampler", "ShardSource", "make_shard_loader", "open_shards"]
