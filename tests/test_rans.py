"""lic.rans against CompressAI's rANS decoder: the same symbols, and bounded on any string.

The oracle is ``compressai.ans``: every string lic.rans accepts is also decoded by CompressAI's
decoder and must give the same symbols. That is safe because lic.rans proved on the way that
the reads stay inside the string, and both follow the same steps. Crafted strings (all-ones,
chained and maximal bypass counts, strings cut anywhere) come from :func:`encode_ops`, an
encoder of the format written here from the C++ source and checked byte for byte against
CompressAI's ``BufferedRansEncoder``; :func:`compressai_reads` replays CompressAI's decoder,
count chains included, to show how far past its end such a string would be read.
"""

from __future__ import annotations

import itertools
import random
import struct
import subprocess
import sys

import pytest
import torch

import lic
from lic import pretrained, rans
from lic.rans import MAX_BYPASS_CHUNKS, RANS_L, RansDecoder, RansError

compressai_ans = pytest.importorskip("compressai.ans")

MASK32 = 0xFFFFFFFF


# -- a second implementation of the format, for crafting strings -----------------------------


def encode_ops(ops: list[tuple[str, int, int]]) -> bytes:
    """A rANS string from ``ops`` in decoding order: ``("sym", start, freq)`` codes a table
    entry, ``("bits", value, 0)`` a 4-bit bypass chunk (``Rans64EncPut``/``Rans64EncPutBits``
    and ``Rans64EncFlush`` of compressai 1.2.8)."""
    x = RANS_L
    emitted: list[int] = []
    for kind, a, b in reversed(ops):
        freq = b if kind == "sym" else 1 << 12
        if x >= ((RANS_L >> 16) << 32) * freq:
            emitted.append(x & MASK32)
            x >>= 32
        x = ((x // freq) << 16) + x % freq + a if kind == "sym" else x << 4 | a
    words = [x & MASK32, x >> 32, *reversed(emitted)]
    return struct.pack(f"<{len(words)}I", *words)


def symbol_ops(value: int, cdf: list[int], length: int, offset: int) -> list:
    """What ``BufferedRansEncoder.encode_with_indexes`` codes for one symbol."""
    max_value = length - 2
    v = value - offset
    if 0 <= v < max_value:
        return [("sym", cdf[v], cdf[v + 1] - cdf[v])]
    raw = (-2 * v - 1 if v < 0 else 2 * (v - max_value)) & MASK32
    chunks = []
    while raw >> (4 * len(chunks)):
        chunks.append((raw >> (4 * len(chunks))) & 15)
    return escape_ops(cdf, length, [len(chunks)] + chunks)


def escape_ops(cdf: list[int], length: int, chunks: list[int]) -> list:
    """The escape entry of a table followed by arbitrary bypass chunks."""
    max_value = length - 2
    return [("sym", cdf[max_value], cdf[max_value + 1] - cdf[max_value])] + [
        ("bits", c, 0) for c in chunks
    ]


def compressai_reads(string: bytes, indexes, cdfs, lengths, cap: int = 10**6) -> int:
    """Words CompressAI's ``decode_with_indexes`` reads from ``string`` (past its end too, where
    it would read whatever memory follows; zeros here), following the C++ line by line."""
    data = string + bytes(-len(string) % 4)
    words = struct.unpack(f"<{len(data) // 4}I", data)
    pos = 0

    def word() -> int:
        nonlocal pos
        pos += 1
        return words[pos - 1] if pos <= len(words) else 0

    def get_bits() -> int:
        nonlocal x
        val, x = x & 15, x >> 4
        if x < RANS_L:
            x = x << 32 | word()
        return val

    x = word() | word() << 32
    for index in indexes:
        cdf, length = cdfs[index], lengths[index]
        cum = x & 0xFFFF
        s = max(i for i in range(length) if cdf[i] <= cum)
        x = (cdf[s + 1] - cdf[s]) * (x >> 16) + cum - cdf[s]
        if x < RANS_L:
            x = x << 32 | word()
        if s == length - 2:
            val = n_bypass = get_bits()
            while val == 15 and pos < cap:
                val = get_bits()
                n_bypass += val
            for _ in range(n_bypass):
                if pos >= cap:
                    return pos
                get_bits()
    return pos


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    return lic.load_codec(pretrained.default_checkpoint(1))


@pytest.fixture(scope="module")
def tables(shipped):
    """The shipped codec's Gaussian tables (64 scales): cdfs, lengths, offsets."""
    return shipped._coding_tables()


def _compressai(string, indexes, cdfs, lengths, offsets) -> list[int]:
    return compressai_ans.RansDecoder().decode_with_indexes(string, indexes, cdfs, lengths, offsets)


def _checked_then_compressai(string, indexes, cdfs, lengths, offsets):
    """lic.rans first; CompressAI only on what lic.rans accepted. Returns both, or the error."""
    decoder = RansDecoder()
    try:
        ours = decoder.decode_with_indexes(string, indexes, cdfs, lengths, offsets)
    except RansError as exc:
        assert decoder.words_read <= len(string) // 4
        return exc, None
    assert decoder.words_read <= len(string) // 4
    return ours, _compressai(string, indexes, cdfs, lengths, offsets)


# -- the format ------------------------------------------------------------------------------


def test_encoder_written_here_is_compressais_byte_for_byte(tables) -> None:
    cdfs, lengths, offsets = tables
    rng = random.Random(1)
    for trial in range(20):
        n = rng.randrange(1, 400)
        indexes = [rng.randrange(len(cdfs)) for _ in range(n)]
        spread = rng.choice([1, 4, 40, 3000])
        symbols = [int(rng.gauss(0, spread)) for _ in range(n)]
        encoder = compressai_ans.BufferedRansEncoder()
        encoder.encode_with_indexes(symbols, indexes, cdfs, lengths, offsets)
        ops = [
            op
            for s, i in zip(symbols, indexes)
            for op in symbol_ops(s, cdfs[i], lengths[i], offsets[i])
        ]
        assert encode_ops(ops) == encoder.flush(), trial


def test_real_latents_decode_to_the_same_symbols_as_compressai(shipped, tables, monkeypatch):
    """The y symbols the shipped codec codes for a photo-like image, as CompressAI codes them,
    then again with out-of-table values (escape codes of 1 to 7 chunks) mixed in."""
    import lic.codecs.codec as codec_module

    recorded: list[tuple[list[int], list[int]]] = []

    class Recording:
        def __init__(self):
            self.encoder = compressai_ans.BufferedRansEncoder()

        def encode_with_indexes(self, symbols, indexes, *tables):
            recorded.append((list(symbols), list(indexes)))
            self.encoder.encode_with_indexes(symbols, indexes, *tables)

        def flush(self):
            return self.encoder.flush()

    monkeypatch.setattr(codec_module, "BufferedRansEncoder", Recording)
    gen = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 3, 8, 12, generator=gen)
    image = torch.nn.functional.interpolate(coarse, size=(128, 192), mode="bicubic")
    image = (image + 0.03 * torch.randn(image.shape, generator=gen)).clamp(0, 1)
    compressed = shipped.compress(image)
    cdfs, lengths, offsets = tables
    symbols = [s for part, _ in recorded for s in part]
    indexes = [i for _, part in recorded for i in part]
    with torch.no_grad():
        latent_channels = shipped.g_a(image).shape[1]
    assert len(symbols) == latent_channels * 8 * 12  # every element of y, once
    string = compressed.strings["y"][0]
    decoder = RansDecoder()
    ours = decoder.decode_with_indexes(string, indexes, cdfs, lengths, offsets)
    decoder.check_end()
    assert ours == symbols == _compressai(string, indexes, cdfs, lengths, offsets)

    rng = random.Random(2)
    low, high = rans.symbol_range(lengths, offsets)
    for k in rng.sample(range(len(symbols)), 300):
        symbols[k] = rng.choice([high + 1, low - 1, 5000, -5000, 70_000, -(2**26), 2**26 - 3])
    encoder = compressai_ans.BufferedRansEncoder()
    encoder.encode_with_indexes(symbols, indexes, cdfs, lengths, offsets)
    string = encoder.flush()
    decoder = RansDecoder()
    ours = decoder.decode_with_indexes(string, indexes, cdfs, lengths, offsets)
    decoder.check_end()
    assert ours == symbols == _compressai(string, indexes, cdfs, lengths, offsets)
    clamped = RansDecoder(clamp=True).decode_with_indexes(string, indexes, cdfs, lengths, offsets)
    assert clamped == [min(max(s, low), high) for s in symbols]


def test_slices_decode_as_one_stream(tables) -> None:
    """``decode_stream`` in parts (the codec's slices) equals one ``decode_with_indexes``."""
    cdfs, lengths, offsets = tables
    rng = random.Random(3)
    indexes = [rng.randrange(len(cdfs)) for _ in range(1000)]
    symbols = [int(rng.gauss(0, 6)) for _ in indexes]
    encoder = compressai_ans.BufferedRansEncoder()
    encoder.encode_with_indexes(symbols, indexes, cdfs, lengths, offsets)
    string = encoder.flush()
    theirs, ours = compressai_ans.RansDecoder(), RansDecoder()
    theirs.set_stream(string)
    ours.set_stream(string)
    cuts = [0, 250, 500, 999, 1000, 1000]
    for start, end in itertools.pairwise(cuts):
        part = indexes[start:end]
        assert ours.decode_stream(part, cdfs, lengths, offsets) == theirs.decode_stream(
            part, cdfs, lengths, offsets
        )
    ours.check_end()


def test_every_bypass_count_up_to_eight_matches_compressai(tables) -> None:
    """Escape codes with 0 to 8 chunks of any value, 32-bit wrap-around included (CompressAI's
    own encoder never writes 8 chunks: it loops forever on values of 2**28 and more)."""
    cdfs, lengths, offsets = tables
    rng = random.Random(4)
    for count in range(MAX_BYPASS_CHUNKS + 1):
        for _ in range(40):
            index = rng.randrange(len(cdfs))
            chunks = [rng.randrange(16) for _ in range(count)]
            if count == MAX_BYPASS_CHUNKS and rng.random() < 0.5:
                chunks[-1] = rng.randrange(8, 16)  # raw >= 2**31: negative in int32
            tail = rng.randrange(len(cdfs))
            ops = escape_ops(cdfs[index], lengths[index], [count, *chunks]) + symbol_ops(
                0, cdfs[tail], lengths[tail], offsets[tail]
            )
            string = encode_ops(ops)
            ours, theirs = _checked_then_compressai(string, [index, tail], cdfs, lengths, offsets)
            assert ours == theirs, (count, chunks)


# -- hostile strings -------------------------------------------------------------------------


def test_all_ones_strings_are_refused_within_the_string(tables) -> None:
    cdfs, lengths, offsets = tables
    rng = random.Random(5)
    for size in (8, 12, 64, 1024, 16384):
        string = b"\xff" * size
        indexes = [rng.randrange(len(cdfs)) for _ in range(size)]
        # CompressAI's decoder would read 7 to 18 times the string's length
        assert compressai_reads(string, indexes, cdfs, lengths) > 7 * size // 4
        decoder = RansDecoder()
        with pytest.raises(RansError, match="bypass count of 15 \\(chained\\)"):
            decoder.decode_with_indexes(string, indexes, cdfs, lengths, offsets)
        assert decoder.words_read <= size // 4


def test_maximal_chains_and_strings_cut_mid_chain_are_refused(tables) -> None:
    """An escape whose count chains through k all-ones words: CompressAI would read about 15
    words per chained word, past the string's end; lic.rans refuses at the first count."""
    cdfs, lengths, offsets = tables
    index = max(range(len(cdfs)), key=lambda i: lengths[i])
    for chained in (1, 2, 8, 64, 512):
        chunks = [15] * (8 * chained) + [3] + [7] * (15 * 8 * chained + 3)
        full = encode_ops(escape_ops(cdfs[index], lengths[index], chunks))
        cut = full[: 4 * (2 + 2 * chained)]  # the chain and a little of the chunks
        assert compressai_reads(cut, [index], cdfs, lengths) >= len(cut) // 4 + 12 * chained
        for string in (full, cut):
            with pytest.raises(RansError, match="bypass count of 15"):
                RansDecoder().decode_with_indexes(string, [index], cdfs, lengths, offsets)


@pytest.mark.parametrize("count", [1, 5, 8])
def test_every_prefix_of_a_string_is_refused_or_decoded_in_bounds(tables, count) -> None:
    """Strings ending mid-symbol, mid-count or mid-chunks are refused, without a read past the
    end (an encoder's string is read to its last word, so every shorter prefix falls short)."""
    cdfs, lengths, offsets = tables
    rng = random.Random(count)
    ops, indexes = [], []
    for _ in range(60):
        index = rng.randrange(len(cdfs))
        indexes.append(index)
        if rng.random() < 0.3:
            chunks = [rng.randrange(16) for _ in range(count)]
            ops += escape_ops(cdfs[index], lengths[index], [count, *chunks])
        else:
            ops += symbol_ops(rng.randrange(-3, 4), cdfs[index], lengths[index], offsets[index])
    full = encode_ops(ops)
    for end in range(len(full)):
        ours, _ = _checked_then_compressai(full[:end], indexes, cdfs, lengths, offsets)
        assert isinstance(ours, RansError), end
    ours, theirs = _checked_then_compressai(full, indexes, cdfs, lengths, offsets)
    assert ours == theirs


def test_random_strings_are_refused_or_decoded_like_compressai(tables) -> None:
    cdfs, lengths, offsets = tables
    rng = random.Random(6)
    outcomes = {"decoded": 0, "refused": 0}
    for _ in range(3000):
        n_words = rng.randrange(0, 40)
        style = rng.randrange(4)
        if style == 0:
            string = rng.randbytes(4 * n_words)
        elif style == 1:  # mostly ones: long bypass counts
            string = bytes(
                rng.choice([0xFF, 0xFF, 0xFF, rng.randrange(256)]) for _ in range(4 * n_words)
            )
        elif style == 2:  # mostly zeros
            string = bytes(rng.choice([0, 0, 0, rng.randrange(256)]) for _ in range(4 * n_words))
        else:  # not a whole number of words
            string = rng.randbytes(rng.randrange(0, 40))
        indexes = [rng.randrange(len(cdfs)) for _ in range(rng.randrange(0, 30))]
        ours, theirs = _checked_then_compressai(string, indexes, cdfs, lengths, offsets)
        if isinstance(ours, RansError):
            outcomes["refused"] += 1
            assert "\n" not in str(ours)
        else:
            outcomes["decoded"] += 1
            assert ours == theirs
    assert outcomes["decoded"] > 300 and outcomes["refused"] > 300, outcomes


def test_work_is_bounded_by_the_symbol_count(tables) -> None:
    """At most 2 + 10 words per symbol, whatever the bytes: one table code, one bypass count of
    at most 8, at most 8 chunks."""
    cdfs, lengths, offsets = tables
    rng = random.Random(7)
    small = min(range(len(cdfs)), key=lambda i: lengths[i])  # most symbols escape
    for _ in range(200):
        string = rng.randbytes(4 * rng.randrange(2, 400))
        n = rng.randrange(1, 40)
        decoder = RansDecoder()
        try:
            decoder.decode_with_indexes(string, [small] * n, cdfs, lengths, offsets)
        except RansError:
            pass
        assert decoder.words_read <= min(len(string) // 4, 2 + 10 * n)


def test_end_check_refuses_strings_not_consumed_exactly(tables) -> None:
    cdfs, lengths, offsets = tables
    indexes = [5, 17, 40, 63] * 10
    encoder = compressai_ans.BufferedRansEncoder()
    encoder.encode_with_indexes([0, 1, -1, 2000] * 10, indexes, cdfs, lengths, offsets)
    string = encoder.flush()
    assert rans.decode_with_indexes(string, indexes, cdfs, lengths, offsets, check_end=True)
    with pytest.raises(RansError, match="bytes left after its 40 symbols"):
        rans.decode_with_indexes(string + bytes(4), indexes, cdfs, lengths, offsets, True)
    with pytest.raises(RansError, match="left after its 39 symbols|initial state"):
        rans.decode_with_indexes(string, indexes[:-1], cdfs, lengths, offsets, True)


def test_bad_input_is_a_clear_error(tables) -> None:
    cdfs, lengths, offsets = tables
    good = encode_ops(symbol_ops(0, cdfs[3], lengths[3], offsets[3]))
    with pytest.raises(RansError, match="not a whole number of 32-bit words"):
        RansDecoder().set_stream(good + b"\x00")
    with pytest.raises(RansError, match="shorter than its 8-byte state"):
        RansDecoder().set_stream(b"\x00" * 4)
    with pytest.raises(ValueError, match="table index outside"):
        rans.decode_with_indexes(good, [len(cdfs)], cdfs, lengths, offsets)
    with pytest.raises(ValueError, match="table index outside"):
        rans.decode_with_indexes(good, [-1], cdfs, lengths, offsets)
    broken = [list(row) for row in cdfs]
    broken[3][1] = broken[3][2]
    with pytest.raises(ValueError, match="coding table 3 is not"):
        rans.decode_with_indexes(good, [3], broken, lengths, offsets)


# -- the hyperprior --------------------------------------------------------------------------


def test_bottleneck_decodes_like_compressai_and_refuses_garbage(shipped) -> None:
    eb = shipped.entropy_bottleneck
    low, high = rans.symbol_range(eb._cdf_length.tolist(), eb._offset.tolist())
    medians = eb._get_medians().detach().reshape(1, -1, 1, 1)
    gen = torch.Generator().manual_seed(8)
    z = torch.randn(2, eb.channels, 3, 5, generator=gen) * 3
    # The second image within the tables' range, as a trained codec's latents are (the tables
    # of a fixed-rate default reach about ±20, where this is no change; a variable-rate
    # default's hyper-latent may be fitted to ±1 only).
    z[1] = (z[1] - medians[0]).clamp(low, high) + medians[0]
    z[0, 0, 0, 0] = 900.0  # far outside the table: an escape code, then clamped
    strings = eb.compress(z)
    expected = eb.decompress(strings, (3, 5))
    ours = rans.decompress_bottleneck(eb, strings, (3, 5))
    assert torch.equal(ours, (expected - medians).round().clamp(low, high) + medians)
    assert torch.equal(ours[1], expected[1])
    assert float(expected[0, 0, 0, 0] - medians[0, 0, 0, 0]) > high
    for garbage in (b"", b"\xff" * 64, strings[0][:-4], strings[0] + bytes(4)):
        with pytest.raises(RansError):
            rans.decompress_bottleneck(eb, [garbage], (3, 5))


def test_rans_imports_without_torch() -> None:
    code = "import sys, lic.rans; print([m for m in ('torch', 'compressai') if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
