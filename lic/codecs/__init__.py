"""Codecs as plain ``nn.Module``s (no Lightning, no evaluation) and their registry."""

from lic.codecs import zoo as _zoo  # noqa: F401  (registers the variants)
from lic.codecs.codec import ChannelARCodec, CodecOutput, Compressed
from lic.codecs.registry import CodecSpec, codec_spec, create_codec, list_codecs, register_codec

__all__ = [
    "ChannelARCodec",
    "CodecOutput",
    "CodecSpec",
    "Compressed",
    "codec_spec",
    "create_codec",
    "list_codecs",
    "register_codec",
]
