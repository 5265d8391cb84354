"""CompressAI's rANS format, decoded in pure Python with every read bounds-checked.

The format is that of ``compressai.ans`` (compressai 1.2.8, ``cpp_exts/rans/rans_interface.cpp``
over ryg_rans's ``rans64.h``): a string of little-endian 32-bit words, read forwards.

- The decoder starts from a 64-bit state ``x``, the first two words (low word first).
- Symbol ``i`` with table ``t = indexes[i]``: ``cum = x & 0xFFFF``; ``s`` is the last entry
  of ``cdfs[t][:cdf_lengths[t]]`` at or below ``cum``; ``x = freq * (x >> 16) + cum - start``
  with ``start = cdf[s]``, ``freq = cdf[s + 1] - start``; if ``x < 2**31`` the next word is
  shifted in (``x = x << 32 | word``). The symbol is ``s + offsets[t]``.
- ``s == cdf_lengths[t] - 2`` (``max_value``) is the escape: the value is outside the table and
  follows in 4-bit *bypass* chunks, each taken as ``x & 15`` and then ``x >>= 4`` (again with a
  word shifted in when ``x < 2**31``). The first chunk is their count ``n``; CompressAI's
  decoder reads another count chunk for as long as the last one was 15 and adds them up. Then
  ``n`` chunks, least significant first, make ``raw`` (int32); the value is
  ``max_value + raw / 2`` for even ``raw`` and ``-(raw + 1) / 2`` for odd.

An encoder writes at most 8 chunks (``raw`` is 32 bits; CompressAI's own loops forever on a
value that needs 8, so it writes at most 7), so its first count chunk is at most 8 and the
chained form never occurs. CompressAI's decoder checks none of this: it reads the count
chain and then the chunks without looking at the end of the string (a forged string of all-ones
words asks for about 15 words of reads per word it holds), and ``raw |= val << 4 * j`` shifts
past 32 bits from the ninth chunk on. Every read in this module is checked instead:

- :class:`RansDecoder` is a drop-in for ``compressai.ans.RansDecoder`` (``set_stream`` then
  ``decode_stream`` per slice, or ``decode_with_indexes`` in one go) that refuses, with a
  :class:`RansError`, a string whose length is not a whole number of words or shorter than its
  initial state, one that would be read past its end, and a count chunk above 8. Each symbol
  costs at most one table lookup and 10 word reads (1 for the symbol, 1 for the count, 8 for
  the chunks), so decoding is bounded by the number of symbols whatever the bytes are. On every
  string it accepts it returns exactly CompressAI's symbols (``tests/test_rans.py`` checks this
  against ``compressai.ans``, bypass values included). With ``clamp=True`` symbols outside the
  range the tables code directly (an escape value) are clamped to it, see :func:`symbol_range`.
- :meth:`RansDecoder.check_end` says whether the stream was consumed exactly: an encoder's
  string ends with every word read and the state back at ``2**31``.
- :func:`decompress_bottleneck` is CompressAI's ``EntropyBottleneck.decompress`` on this
  decoder.

Pure Python and torch-free, about 0.5 µs per symbol (``scripts/rans_cost.py`` measures it
against CompressAI's decoder). The tables are checked (strictly increasing 16-bit CDFs) and
copied once per set of table objects passed in; pass new lists after changing them.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Sequence
from itertools import islice
from operator import lt
from typing import Any

from lic.errors import BitstreamError

#: Probability precision of the tables (CDFs sum to ``2**PRECISION``).
PRECISION = 16
#: Lower bound of the normalised rANS state; the encoder starts and the decoder ends there.
RANS_L = 1 << 31
#: Bits per bypass chunk.
BYPASS_BITS = 4
#: The most bypass chunks an encoder writes for one value (32 bits / 4).
MAX_BYPASS_CHUNKS = 8

_MASK = (1 << PRECISION) - 1
_CHUNK = (1 << BYPASS_BITS) - 1


class RansError(BitstreamError):
    """A rANS string that no encoder wrote: it would be read past its end, or is malformed."""


def _words(string: bytes | bytearray | memoryview) -> tuple[int, ...]:
    data = bytes(string)
    if len(data) % 4:
        raise RansError(
            f"corrupt rANS string of {len(data):,} bytes: not a whole number of 32-bit words"
        )
    if len(data) < 8:
        raise RansError(
            f"corrupt rANS string of {len(data):,} bytes: shorter than its 8-byte state"
        )
    return struct.unpack(f"<{len(data) // 4}I", data)


def _int32(value: int) -> int:
    """``value`` wrapped to a signed 32-bit integer (what the C++ ``int32_t`` holds)."""
    return ((value + 2**31) & 0xFFFFFFFF) - 2**31


class _Tables:
    """Coding tables checked once: per index ``(cdf, cdf_length, max_value, offset)``."""

    def __init__(
        self, cdfs: Sequence[Sequence[int]], lengths: Sequence[int], offsets: Sequence[int]
    ):
        if not len(cdfs) == len(lengths) == len(offsets) or not cdfs:
            raise ValueError(
                f"coding tables disagree: {len(cdfs)} CDFs, {len(lengths)} lengths, "
                f"{len(offsets)} offsets"
            )
        rows = []
        for index, (cdf, length, offset) in enumerate(zip(cdfs, lengths, offsets)):
            length, offset = int(length), int(offset)
            cdf = [int(v) for v in cdf[:length]]
            if (
                length < 2
                or len(cdf) != length
                or cdf[0] != 0
                or cdf[-1] != 1 << PRECISION
                or not all(map(lt, cdf, islice(cdf, 1, None)))
            ):
                raise ValueError(f"coding table {index} is not a strictly increasing 16-bit CDF")
            rows.append((cdf, length, length - 2, offset))
        self.rows = rows
        #: Lowest and highest symbol any table codes without an escape.
        self.low, self.high = symbol_range(lengths, offsets)


#: The tables last checked, and the objects they were checked from (held, so not reused).
_last_tables: tuple[tuple[Any, Any, Any], _Tables | None] = ((None, None, None), None)


def symbol_range(cdf_lengths: Sequence[int], offsets: Sequence[int]) -> tuple[int, int]:
    """The lowest and highest symbol that some table codes directly (not as an escape).

    Table ``t`` codes ``offsets[t] .. offsets[t] + cdf_lengths[t] - 3`` directly; anything else
    is escape-coded. This is the range the entropy model was fitted to; a decoded value outside
    it comes from a latent no trained codec produces, or from a forged string.
    """
    pairs = [(int(o), int(n) - 2) for n, o in zip(cdf_lengths, offsets)]
    low = min(o for o, _ in pairs)
    high = max(o + m - 1 for o, m in pairs)
    return (low, high) if low <= high else (-(2**31), 2**31 - 1)


class RansDecoder:
    """A bounds-checked decoder of CompressAI's rANS strings (drop-in for its ``RansDecoder``).

    Args:
        clamp: clamp decoded symbols to :func:`symbol_range` of the tables (CompressAI does
            not; ``False`` returns exactly its values).

    Raises (from every method that reads):
        RansError: a string that is not whole words, shorter than 8 bytes, would be read past
            its end, or holds a bypass count above :data:`MAX_BYPASS_CHUNKS`.
        ValueError: tables that are not CDFs, or an index outside them.
    """

    def __init__(self, clamp: bool = False) -> None:
        self.clamp = clamp
        self._words: tuple[int, ...] = ()
        self._pos = 0
        self._state = 0
        self._symbols = 0

    # -- the stream ------------------------------------------------------------------------

    def set_stream(self, string: bytes) -> None:
        """Start decoding ``string`` (reads its 8-byte initial state)."""
        words = _words(string)
        self._words = words
        self._state = words[0] | words[1] << 32
        self._pos = 2
        self._symbols = 0

    @property
    def words_read(self) -> int:
        """32-bit words of the string read so far (the state's two included)."""
        return self._pos

    def check_end(self) -> None:
        """Refuse a stream that was not consumed exactly as an encoder's would be.

        Raises:
            RansError: words left unread, or a final state other than ``2**31``.
        """
        left = len(self._words) - self._pos
        if left:
            raise RansError(
                f"corrupt rANS string: {4 * left:,} bytes left after its {self._symbols:,} symbols"
            )
        if self._state != RANS_L:
            raise RansError(
                f"corrupt rANS string: the state after its {self._symbols:,} symbols is not "
                "the encoder's initial state"
            )

    # -- decoding --------------------------------------------------------------------------

    def _checked_tables(self, cdfs, cdf_lengths, offsets) -> _Tables:
        global _last_tables
        refs, tables = _last_tables
        if refs[0] is not cdfs or refs[1] is not cdf_lengths or refs[2] is not offsets:
            tables = _Tables(cdfs, cdf_lengths, offsets)
            _last_tables = ((cdfs, cdf_lengths, offsets), tables)
        return tables

    def _past_end(self, what: str) -> RansError:
        return RansError(
            f"corrupt rANS string of {4 * len(self._words):,} bytes: it would be read past its "
            f"end ({what} of symbol {self._symbols + 1:,})"
        )

    def decode_stream(
        self,
        indexes: Sequence[int],
        cdfs: Sequence[Sequence[int]],
        cdf_lengths: Sequence[int],
        offsets: Sequence[int],
    ) -> list[int]:
        """Decode one symbol per entry of ``indexes`` (table numbers), continuing the stream."""
        if self._pos < 2:
            raise ValueError("no rANS stream set: call set_stream first")
        tables = self._checked_tables(cdfs, cdf_lengths, offsets)
        rows = tables.rows
        if indexes and (min(indexes) < 0 or max(indexes) >= len(rows)):
            raise ValueError(
                f"table index outside 0..{len(rows) - 1}: {min(indexes)}..{max(indexes)}"
            )
        words, pos, x = self._words, self._pos, self._state
        n_words = len(words)
        done = self._symbols
        out: list[int] = []
        append = out.append
        for index in indexes:
            cdf, length, max_value, offset = rows[index]
            cum = x & _MASK
            s = bisect_right(cdf, cum, 0, length) - 1
            start = cdf[s]
            x = (cdf[s + 1] - start) * (x >> PRECISION) + cum - start
            if x < RANS_L:
                if pos >= n_words:
                    self._pos, self._state, self._symbols = pos, x, done + len(out)
                    raise self._past_end("the table code")
                x = x << 32 | words[pos]
                pos += 1
            if s != max_value:
                append(s + offset)
                continue
            self._pos, self._state, self._symbols = pos, x, done + len(out)
            append(self._bypass(max_value, offset))
            pos, x = self._pos, self._state
        self._pos, self._state, self._symbols = pos, x, done + len(out)
        if self.clamp and out and (min(out) < tables.low or max(out) > tables.high):
            low, high = tables.low, tables.high
            out = [min(max(v, low), high) for v in out]
        return out

    def _chunk(self, what: str) -> int:
        x = self._state
        value = x & _CHUNK
        x >>= BYPASS_BITS
        if x < RANS_L:
            if self._pos >= len(self._words):
                raise self._past_end(what)
            x = x << 32 | self._words[self._pos]
            self._pos += 1
        self._state = x
        return value

    def _bypass(self, max_value: int, offset: int) -> int:
        count = self._chunk("the bypass count")
        if count > MAX_BYPASS_CHUNKS:
            raise RansError(
                f"corrupt rANS string: bypass count of {count}"
                f"{' (chained)' if count == _CHUNK else ''} at symbol {self._symbols + 1:,} "
                f"(an encoder writes at most {MAX_BYPASS_CHUNKS})"
            )
        raw = 0
        for j in range(count):
            raw |= self._chunk("a bypass chunk") << (BYPASS_BITS * j)
        raw = _int32(raw)
        value = raw >> 1
        value = -value - 1 if raw & 1 else _int32(value + max_value)
        return _int32(value + offset)

    def decode_with_indexes(
        self,
        string: bytes,
        indexes: Sequence[int],
        cdfs: Sequence[Sequence[int]],
        cdf_lengths: Sequence[int],
        offsets: Sequence[int],
    ) -> list[int]:
        """Decode a whole string (``set_stream`` + ``decode_stream``)."""
        self.set_stream(string)
        return self.decode_stream(indexes, cdfs, cdf_lengths, offsets)


def decode_with_indexes(
    string: bytes,
    indexes: Sequence[int],
    cdfs: Sequence[Sequence[int]],
    cdf_lengths: Sequence[int],
    offsets: Sequence[int],
    check_end: bool = False,
) -> list[int]:
    """The reference decoder: CompressAI's ``decode_with_indexes``, bounds-checked.

    Args:
        check_end: also refuse a string not consumed exactly (:meth:`RansDecoder.check_end`).
    """
    decoder = RansDecoder()
    symbols = decoder.decode_with_indexes(string, indexes, cdfs, cdf_lengths, offsets)
    if check_end:
        decoder.check_end()
    return symbols


def decompress_bottleneck(bottleneck: Any, strings: Sequence[bytes], size: Sequence[int]) -> Any:
    """``EntropyBottleneck.decompress(strings, size)`` on :class:`RansDecoder`.

    The same tables, indexes (one table per channel) and dequantisation (plus the medians) as
    CompressAI's, with every string bounds-checked, required to end exactly
    (:meth:`RansDecoder.check_end`), and its symbols clamped to :func:`symbol_range`.

    Returns:
        The latent, ``(len(strings), channels, *size)``, in the medians' dtype.
    """
    cdf = bottleneck._quantized_cdf
    output_size = (len(strings), cdf.size(0), *size)
    indexes = bottleneck._build_indexes(output_size)
    medians = bottleneck._extend_ndims(bottleneck._get_medians().detach(), len(size))
    medians = medians.expand(len(strings), *([-1] * (len(size) + 1)))
    tables = (
        cdf.tolist(),
        bottleneck._cdf_length.reshape(-1).int().tolist(),
        bottleneck._offset.reshape(-1).int().tolist(),
    )
    outputs = cdf.new_empty(indexes.size())
    for i, string in enumerate(strings):
        decoder = RansDecoder(clamp=True)
        decoder.set_stream(string)
        values = decoder.decode_stream(indexes[i].reshape(-1).int().tolist(), *tables)
        decoder.check_end()
        outputs[i] = outputs.new_tensor(values).reshape(outputs[i].size())
    return bottleneck.dequantize(outputs, medians, medians.dtype)
