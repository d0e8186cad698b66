"""TensorBoard event files (``events.out.tfevents.*``) → :class:`~traindoctor.run.Run`.

An event file is a TFRecord stream: each record is ``length (u64) · masked CRC32C of the length
· an Event protobuf · masked CRC32C of the Event``. The ``tensorboard`` package reads it one
record at a time and checks every CRC in pure Python, which takes minutes for the 3 million
records of a million-step run (see benchmarks/README.md). This reader does the same checks, in
numpy over all records at once:

1. the record boundaries are found by one pass over the length fields;
2. every length CRC, and the Event CRC of every record it uses, is checked vectorised
   (slicing-by-8 CRC32C on unaligned 32-bit views of the file);
3. the common scalar record — ``Event{wall_time, step, summary{value{tag, simple_value}}}``,
   what ``torch.utils.tensorboard.SummaryWriter.add_scalar``, tensorboardX, Lightning's and
   Hugging Face's loggers write — is decoded by byte pattern over all records at once; any
   other record (TF2 tensor scalars, several values in one summary, images, graphs ...) is
   decoded by ``tensorboard``'s own ``Event`` protobuf, one by one.

A corrupt record (bad CRC, an Event that does not decode) is a :class:`LogError` naming the
record and its byte offset. An unfinished last record — a writer still at work — is left out
with a note, as TensorBoard itself does silently. A run directory with several event files (a
restarted job) reads them in name order; points a restart logged again replace the earlier ones.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LogError
from ..run import Run
from .files import check_regular, is_file
from .roles import build_run

EVENT_PREFIX = "events.out.tfevents"

# ---- CRC32C (Castagnoli), vectorised ---------------------------------------------------------


def _crc_tables() -> np.ndarray:
    poly = 0x82F63B78
    t0 = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        t0[i] = c
    tables = [t0]
    for _ in range(7):
        prev = tables[-1]
        tables.append((prev >> np.uint32(8)) ^ t0[prev & np.uint32(0xFF)])
    return np.stack(tables)


_T = _crc_tables()
_U8 = np.uint32(0xFF)


def _unzero_states() -> np.ndarray:
    """State s_k whose update by k zero bytes gives the CRC's initial 0xFFFFFFFF, for k = 0..7.

    A record is read as whole 8-byte blocks from ``pad`` bytes before its start (those bytes
    masked to zero): starting the register at ``s_pad`` gives exactly its CRC, with no per-byte
    tail loop. The zero-byte update is a bijection (each table entry has its own top byte).
    """
    t0 = _T[0]
    by_top = {int(t) >> 24: i for i, t in enumerate(t0.tolist())}
    states = [0xFFFFFFFF]
    for _ in range(7):
        c1 = states[-1]
        i = by_top[c1 >> 24]
        states.append((((c1 ^ int(t0[i])) << 8) | i) & 0xFFFFFFFF)
    return np.array(states, dtype=np.uint32)


_S = _unzero_states()
_LO = np.array([0xFFFFFFFF << (8 * k) & 0xFFFFFFFF for k in range(5)], dtype=np.uint32)


def _wide_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Slicing-by-8 tables merged pairwise over 16-bit indices: 4 lookups per 8 bytes, not 8."""
    lo = np.arange(65536, dtype=np.uint32) & np.uint32(0xFF)
    hi = np.arange(65536, dtype=np.uint32) >> np.uint32(8)
    return (_T[7][lo] ^ _T[6][hi], _T[5][lo] ^ _T[4][hi], _T[3][lo] ^ _T[2][hi], _T[1][lo] ^ _T[0][hi])


_W = _wide_tables()
_U16 = np.uint32(0xFFFF)


def _crc_batch(u8: np.ndarray, u32: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """CRC32C of ``u8[starts[i] : starts[i] + lengths[i]]`` for every i, vectorised (slicing-by-8).

    Every record needs at least ``(-length) % 8`` bytes in the buffer before its start. Records
    are visited in the given order, so ascending starts read the file front to back.
    """
    n = starts.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.uint32)
    lengths = lengths.astype(np.int64)
    pad = (-lengths) % 8
    blocks = (lengths + pad) // 8
    pos = starts.astype(np.int64) - pad
    crc = _S[pad]
    w3, w2, w1, w0 = _W
    bmin, bmax = int(blocks.min()), int(blocks.max())
    for k in range(bmax):
        act = None if k < bmin else np.flatnonzero(blocks > k)
        p = pos if act is None else pos[act]
        one = u32[p]
        two = u32[p + 4]
        if k == 0:  # the pad bytes before each record read as zeros
            one = one & _LO[np.minimum(pad, 4)]
            two = two & _LO[np.clip(pad - 4, 0, 4)]
        one ^= crc if act is None else crc[act]
        c = w3[one & _U16] ^ w2[one >> np.uint32(16)] ^ w1[two & _U16] ^ w0[two >> np.uint32(16)]
        if act is None:
            crc = c
            pos += 8
        else:
            crc[act] = c
            pos[act] += 8
    return crc ^ np.uint32(0xFFFFFFFF)


def _masked(crc: np.ndarray) -> np.ndarray:
    crc = crc.astype(np.uint32)
    return ((crc >> np.uint32(15)) | (crc << np.uint32(17))) + np.uint32(0xA282EAD8)


def masked_crc32c(data: bytes) -> int:
    """The TFRecord checksum of ``data`` (for writers and tests)."""
    u8, u32, _, _ = _views(b"\0" * 8 + data + b"\0" * 8)
    return int(_masked(_crc_batch(u8, u32, np.array([8]), np.array([len(data)])))[0])


def _views(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """uint8, and unaligned little-endian uint32/uint64/float32 views starting at every byte."""
    u8 = np.frombuffer(data, dtype=np.uint8)
    n = len(data)

    def at(dtype: str, size: int) -> np.ndarray:
        count = max(n - size + 1, 0)
        return np.ndarray(shape=(count,), dtype=dtype, buffer=data, offset=0, strides=(1,))

    return u8, at("<u4", 4), at("<u8", 8), at("<f4", 4)


# ---- framing ----------------------------------------------------------------------------------


def _walk(data: bytes, off: int = 0, limit: int | None = None) -> tuple[list[int], list[int], int]:
    """(record offsets, payload lengths, offset after them) walking the length fields from ``off``.

    Stops at the end of the last whole record, or after ``limit`` records.
    """
    n = len(data)
    offs: list[int] = []
    lens: list[int] = []
    unpack = struct.Struct("<Q").unpack_from
    count = 0
    while off + 16 <= n and (limit is None or count < limit):
        (length,) = unpack(data, off)
        end = off + 16 + length
        if end > n:
            break
        offs.append(off)
        lens.append(length)
        off = end
        count += 1
    return offs, lens, off


def _period(hist: list[int]) -> int | None:
    """The smallest P ≤ 32 for which the last 2P record lengths repeat with period P."""
    for p in range(1, min(32, len(hist) // 2) + 1):
        if hist[-2 * p : -p] == hist[-p:]:
            return p
    return None


def _frame(data: bytes, u64: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(record offsets, payload lengths, end of the last whole record): the same as walking
    the length fields one by one, but fast for the usual file.

    A scalar log repeats itself: the tags of one step give a cycle of record lengths. The lengths
    of the next records are predicted from the cycle seen last and checked all at once (record j
    starts where the prediction says iff the lengths of records 0..j-1 were right, so the first
    wrong prediction ends the part taken); where the cycle breaks (an evaluation every N steps,
    the step number needing one more byte) a few records are walked one by one and the new cycle
    is predicted again.
    """
    n = len(data)
    offs_parts: list[np.ndarray] = []
    lens_parts: list[np.ndarray] = []
    o, ln, off = _walk(data, 0, 64)
    offs_parts.append(np.array(o, dtype=np.int64))
    lens_parts.append(np.array(ln, dtype=np.int64))
    hist = ln[-64:]
    block = 1024
    while off + 16 <= n:
        p = _period(hist)
        if p is None:
            o, ln, new = _walk(data, off, 64)
            if not o:
                break
            offs_parts.append(np.array(o, dtype=np.int64))
            lens_parts.append(np.array(ln, dtype=np.int64))
            hist = (hist + ln)[-64:]
            off = new
            continue
        cycle = np.array(hist[-p:], dtype=np.int64)
        pred = np.tile(cycle, block // p + 1)[:block]
        size = 16 + pred
        starts = off + np.concatenate(([0], np.cumsum(size[:-1])))
        fits = int(np.searchsorted(starts + size, n, side="right"))
        starts, pred = starts[:fits], pred[:fits]
        if fits:
            wrong = np.flatnonzero(u64[starts] != pred.astype(np.uint64))
            j = int(wrong[0]) if wrong.size else fits
        else:
            j = 0
        if j:
            offs_parts.append(starts[:j])
            lens_parts.append(pred[:j])
            off = int(starts[j - 1] + 16 + pred[j - 1])
            hist = (hist + pred[max(0, j - 64) : j].tolist())[-64:]
        if j == block:
            block = min(block * 4, 1 << 18)
            continue
        block = 1024
        o, ln, new = _walk(data, off, 2 * p + 8)  # past the break
        if not o:
            break
        offs_parts.append(np.array(o, dtype=np.int64))
        lens_parts.append(np.array(ln, dtype=np.int64))
        hist = (hist + ln)[-64:]
        off = new
    return np.concatenate(offs_parts), np.concatenate(lens_parts), off


_CHUNK = 1 << 18  # records decoded at once

# ---- decoding ---------------------------------------------------------------------------------


_M7 = np.uint64(0x7F)


def _varint(u64: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(value, byte count, ok) of varints of at most 8 bytes at ``at`` (one 8-byte read each).

    ``ok`` is False where the varint is longer (a step ≥ 2**56 or negative): the protobuf
    decoder takes those records.
    """
    w = u64[np.minimum(at, u64.shape[0] - 1)]
    val = w & _M7
    size = np.ones(at.shape[0], dtype=np.int64)
    more = (w & np.uint64(0x80)) != 0
    for k in range(1, 8):
        if not more.any():
            break
        part = ((w >> np.uint64(8 * k)) & _M7) << np.uint64(7 * k)
        val |= np.where(more, part, np.uint64(0))
        size += more
        more &= ((w >> np.uint64(8 * k + 7)) & np.uint64(1)) != 0
    return val, size, ~more


def _fast_scalars(
    u8: np.ndarray, u64: np.ndarray, f32: np.ndarray, pay: np.ndarray, plen: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode the common record shapes by byte pattern, all records at once.

    Returns (scalar mask, version mask, steps, values, tag starts, tag lengths): ``scalar`` marks
    ``Event{wall_time?, step?, summary{value{tag, simple_value}}}``, ``version`` marks the
    ``file_version`` record every writer starts with; the rest is left to the protobuf decoder.
    Each record is a whole record of the file, so reads up to 8 bytes past its payload start
    (into its checksum) stay inside the file.
    """
    top = u64.shape[0] - 1
    end = pay + plen
    i = pay.copy()
    has_wt = (plen >= 9) & (u8[i] == 0x09)
    i += 9 * has_wt
    i = np.minimum(i, top)
    has_step = (i < end) & (u8[i] == 0x10)
    step, nb, step_ok = _varint(u64, i + 1)
    step_ok |= ~has_step
    i = np.minimum(i + np.where(has_step, 1 + nb, 0), top)
    w = u64[i]  # the next 8 bytes: field tags and lengths of summary, value, tag

    def byte(k: int) -> np.ndarray:
        return ((w >> np.uint64(8 * k)) & np.uint64(0xFF)).astype(np.int64)

    b0, b1 = byte(0), byte(1)
    version = ~has_step & (b0 == 0x1A) & (b1 < 0x80) & (i + 2 + b1 == end)
    l1, l2, l3 = b1, byte(3), byte(5)
    scalar = (
        step_ok
        & (b0 == 0x2A)
        & (l1 < 0x80)
        & (i + 2 + l1 == end)
        & (byte(2) == 0x0A)
        & (l2 == l1 - 2)
        & (byte(4) == 0x0A)
        & (l3 + 7 == l2)
    )
    vpos = np.minimum(i + 6 + l3, top)
    scalar &= u8[vpos] == 0x15
    with np.errstate(invalid="ignore"):  # bytes of other records may read as signalling NaNs
        vals = f32[np.minimum(vpos + 1, f32.shape[0] - 1)].astype(np.float64)
    steps = np.where(has_step, step, np.uint64(0)).astype(np.int64)
    return scalar, version & ~scalar, steps, vals, i + 6, l3


def _tag_hashes(u64: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two independent 64-bit hashes of the tags at ``starts`` of ``lengths`` bytes."""
    n = starts.shape[0]
    h1 = lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    h2 = lengths.astype(np.uint64) + np.uint64(0x632BE59BD9B4E019)
    if n == 0:
        return h1, h2
    top = u64.shape[0] - 1
    for k in range(0, int(lengths.max()), 8):
        rem = np.clip(lengths - k, 0, 8).astype(np.uint64)
        word = u64[np.minimum(starts + k, top)]
        # bytes past the tag's end (the value that follows it) are masked off
        mask = np.where(rem >= 8, np.uint64(0xFFFFFFFFFFFFFFFF), (np.uint64(1) << (rem * np.uint64(8))) - np.uint64(1))
        word &= mask
        h1 = (h1 ^ word) * np.uint64(0x100000001B3)
        h2 = (h2 + word) * np.uint64(0xC2B2AE3D27D4EB4F)
        h2 ^= h2 >> np.uint64(29)
    return h1, h2


def _factorize(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(code per item, first index of each code), codes in order of first appearance."""
    n = h.shape[0]
    codes = np.full(n, -1, dtype=np.int64)
    firsts: list[int] = []
    start = 0
    while len(firsts) < 64:  # a log has a few tags: one pass over the hashes for each
        if start >= n:
            return codes, np.array(firsts, dtype=np.int64)
        free = codes[start:] < 0
        j = int(np.argmax(free))
        if not free[j]:
            return codes, np.array(firsts, dtype=np.int64)
        idx = start + j
        codes[h == h[idx]] = len(firsts)
        firsts.append(idx)
        start = idx + 1
    uniq, first, inverse = np.unique(h, return_index=True, return_inverse=True)
    rank = np.empty(uniq.shape[0], dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(uniq.shape[0])
    return rank[inverse.reshape(-1)], np.sort(first)


def _split(group: np.ndarray, k: int) -> list[np.ndarray]:
    """Record indices of each of ``k`` groups, each ascending."""
    if k <= 64:
        return [np.flatnonzero(group == j) for j in range(k)]
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(k + 1))
    return [order[bounds[j] : bounds[j + 1]] for j in range(k)]


def _tensor_scalar(tensor: Any) -> float | None:
    """The value of a 0-d (or one-element) numeric TensorProto, else None."""
    dims = [d.size for d in tensor.tensor_shape.dim]
    if any(d != 1 for d in dims):
        return None
    dtypes = {1: ("float_val", "<f4"), 2: ("double_val", "<f8"), 3: ("int_val", "<i4"), 9: ("int64_val", "<i8"), 19: ("half_val", "<f2")}
    if tensor.dtype not in dtypes:
        return None
    field, np_dtype = dtypes[tensor.dtype]
    if tensor.tensor_content:
        arr = np.frombuffer(tensor.tensor_content, dtype=np_dtype)
        return float(arr[0]) if arr.size == 1 else None
    vals = getattr(tensor, field)
    if len(vals) != 1:
        return None
    if tensor.dtype == 19:  # half_val holds the float16 bits
        return float(np.array([vals[0]], dtype=np.uint16).view(np.float16)[0])
    return float(vals[0])


def _decode_slow(
    data: bytes, path: Path, offs: np.ndarray, plens: np.ndarray, which: Iterable[int]
) -> tuple[list[tuple[str, int, float, int]], list[int]]:
    """Decode records one by one with tensorboard's Event protobuf.

    Returns (points as (tag, step, value, record), records that gave points).
    """
    from google.protobuf.message import DecodeError
    from tensorboard.compat.proto import event_pb2

    points: list[tuple[str, int, float, int]] = []
    used: list[int] = []
    for r in which:
        off, ln = int(offs[r]), int(plens[r])
        try:
            ev = event_pb2.Event.FromString(data[off + 12 : off + 12 + ln])
        except (DecodeError, ValueError, RuntimeError) as e:
            # a bad checksum says more than a failed decode: report that when it is the case
            _check_data_crc(data, path, offs, plens, np.array([r]))
            raise LogError(
                f"record {r} (byte {off}) is not a TensorBoard Event ({' '.join(str(e).split())[:120]}); "
                "expected an event file written by a TensorBoard summary writer",
                path=path,
            ) from e
        if not ev.HasField("summary"):
            continue
        got = False
        for v in ev.summary.value:
            kind = v.WhichOneof("value")
            if kind == "simple_value":
                value: float | None = float(v.simple_value)
            elif kind == "tensor" and v.metadata.plugin_data.plugin_name in ("", "scalars"):
                try:
                    value = _tensor_scalar(v.tensor)
                except (ValueError, TypeError, OverflowError):
                    value = None  # a malformed tensor: not a scalar we can read
            else:
                value = None
            if value is not None:
                points.append((v.tag, int(ev.step), value, r))
                got = True
        if got:
            used.append(r)
    return points, used


def _check_data_crc(data: bytes, path: Path, offs: np.ndarray, plens: np.ndarray, records: np.ndarray) -> None:
    if records.size == 0:
        return
    u8, u32, _, _ = _views(data)
    crc = _masked(_crc_batch(u8, u32, offs[records] + 12, plens[records]))
    stored = u32[offs[records] + 12 + plens[records]]
    bad = np.flatnonzero(crc != stored)
    if bad.size:
        r = int(records[bad[0]])
        raise LogError(
            f"record {r} (byte {int(offs[r])}) fails its data checksum: the file is corrupt there "
            f"({bad.size} record(s) in all); expected CRC32C-checked TFRecords",
            path=path,
        )


def read_event_file(path: str | os.PathLike[str]) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str], int]:
    """One event file → (tag → (steps, values) in file order, notes, records read)."""
    p = Path(path)
    check_regular(p)
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise LogError("is empty, expected a TensorBoard event file", path=path)
            # mapped, not read: no copy of the file in memory, and its pages are the page cache's
            data: Any = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)
    except OSError as e:
        raise LogError(f"cannot read: {e.strerror or e}", path=path) from e
    try:
        return _read_mapped(data, p)
    finally:
        try:
            data.close()
        except BufferError:
            pass  # a view is still alive somewhere: the map goes with it


def _read_mapped(data: Any, p: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str], int]:
    path = p
    notes: list[str] = []
    u8, u32, u64, f32 = _views(data)
    offs, plens, end = _frame(data, u64)
    if end < len(data):
        # what follows the last whole record: an unfinished one, or garbage
        rest = len(data) - end
        if rest >= 12:
            (length,) = struct.unpack_from("<Q", data, end)
            ok = int(_masked(_crc_batch(u8, u32, np.array([end]), np.array([8])))[0]) == struct.unpack_from("<I", data, end + 8)[0]
            if not ok:
                r = int(offs.size)
                if r == 0:
                    raise LogError(
                        "record 0 (byte 0) fails its length checksum: not a TensorBoard event file "
                        "(a TFRecord length header was expected)",
                        path=path,
                    )
                raise LogError(
                    f"record {r} (byte {end}) fails its length checksum: the file is corrupt there",
                    path=path,
                )
            what = f"{rest} of {length + 16} bytes"
        else:
            what = f"{rest} bytes of its header"
        if offs.size == 0:
            raise LogError(
                f"holds no whole record (only {what} of the first): an event file just created, or not one",
                path=path,
            )
        notes.append(
            f"{p.name}: the last record ({int(offs.size)}, byte {end}) is unfinished ({what}): read the "
            f"{int(offs.size)} whole records before it; the log may still be being written"
        )

    # In chunks: the temporaries stay a few MB and are reused, instead of hundreds of MB of fresh
    # pages (which cost more than the arithmetic on this kind of machine). Each tag's points go
    # straight to its own list of arrays.
    tags = _Tags(u8)
    eight = np.full(min(_CHUNK, int(offs.size)), 8)
    other_parts: list[np.ndarray] = []
    for a in range(0, int(offs.size), _CHUNK):
        o, ln = offs[a : a + _CHUNK], plens[a : a + _CHUNK]
        hcrc = _masked(_crc_batch(u8, u32, o, eight[: o.shape[0]]))
        bad = np.flatnonzero(hcrc != u32[o + 8])
        if bad.size:
            r = a + int(bad[0])
            where = ": not a TensorBoard event file (a TFRecord length header was expected)" if r == 0 else (
                ": the file is corrupt there"
            )
            raise LogError(f"record {r} (byte {int(offs[r])}) fails its length checksum{where}", path=path)
        scalar, version, steps, vals, tstart, tlen = _fast_scalars(u8, u64, f32, o + 12, ln)
        f = np.flatnonzero(scalar)
        _check_data_crc(data, p, offs, plens, f + a)
        tags.add(f + a, steps[f], vals[f], tstart[f], tlen[f], u64)
        other = np.flatnonzero(~scalar & ~version)
        if other.size:
            other_parts.append(other + a)
    other_all = np.concatenate(other_parts) if other_parts else np.zeros(0, dtype=np.int64)
    # the common file_version record is skipped above: the protobuf decoder (and its import) is
    # needed only for other kinds of record
    slow_points, slow_used = _decode_slow(data, p, offs, plens, other_all.tolist()) if other_all.size else ([], [])
    _check_data_crc(data, p, offs, plens, np.array(slow_used, dtype=np.int64))
    for tag, step, value, rec in slow_points:
        tags.add_one(tag, rec, step, value)
    return tags.series(merge=bool(slow_points)), notes, int(offs.size)


class _Tags:
    """Points per tag, gathered chunk by chunk, in record order."""

    def __init__(self, u8: np.ndarray) -> None:
        self.u8 = u8
        self.index: dict[tuple[int, bytes], int] = {}
        self.names: list[bytes] = []
        self.parts: list[tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]] = []

    def _id(self, h: int, name: bytes) -> int:
        key = (h, name)
        j = self.index.get(key)
        if j is None:
            j = self.index[key] = len(self.names)
            self.names.append(name)
            self.parts.append(([], [], []))
        return j

    def add(self, rec: np.ndarray, steps: np.ndarray, vals: np.ndarray, ts: np.ndarray, tl: np.ndarray,
            u64: np.ndarray) -> None:
        if rec.size == 0:
            return
        h1, h2 = _tag_hashes(u64, ts, tl)
        codes, first = _factorize(h1)
        if np.array_equal(h2, h2[first][codes]):
            groups = [(int(h1[i]), bytes(self.u8[int(ts[i]) : int(ts[i]) + int(tl[i])])) for i in first.tolist()]
            sels = _split(codes, len(groups))
        else:  # two tags with one 64-bit hash: group this chunk by the bytes themselves
            names = [bytes(self.u8[s : s + n]) for s, n in zip(ts.tolist(), tl.tolist())]
            uniq = list(dict.fromkeys(names))
            at = {t: k for k, t in enumerate(uniq)}
            codes = np.array([at[t] for t in names], dtype=np.int64)
            groups = [(0, t) for t in uniq]
            sels = _split(codes, len(uniq))
        for (h, name), sel in zip(groups, sels):
            j = self._id(h, name)
            r, s, v = self.parts[j]
            r.append(rec[sel])
            s.append(steps[sel])
            v.append(vals[sel])

    def add_one(self, tag: str, rec: int, step: int, value: float) -> None:
        j = self._id(-1, tag.encode("utf-8", "surrogatepass"))
        r, s, v = self.parts[j]
        r.append(np.array([rec], dtype=np.int64))
        s.append(np.array([step], dtype=np.int64))
        v.append(np.array([value], dtype=np.float64))

    def series(self, merge: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """tag → (steps, values) in record order; tags in order of their first record.

        A tag decoded both ways (fast and by protobuf) is one series, merged by record.
        """
        by_name: dict[str, list[int]] = {}
        for j, name in enumerate(self.names):
            by_name.setdefault(name.decode("utf-8", "replace"), []).append(j)
        out: list[tuple[int, str, np.ndarray, np.ndarray]] = []
        for tag, ids in by_name.items():
            rec = [x for j in ids for x in self.parts[j][0]]
            st = [x for j in ids for x in self.parts[j][1]]
            va = [x for j in ids for x in self.parts[j][2]]
            r = np.concatenate(rec)
            s_ = np.concatenate(st)
            v_ = np.concatenate(va)
            if merge and (len(ids) > 1 or (r.size > 1 and np.any(r[1:] < r[:-1]))):
                order = np.argsort(r, kind="stable")
                r, s_, v_ = r[order], s_[order], v_[order]
            out.append((int(r[0]) if r.size else 1 << 62, tag, s_, v_))
        out.sort(key=lambda t: t[0])
        return {tag: (s_, v_) for _, tag, s_, v_ in out}


def event_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The event files directly in ``directory``, in name order (the order they were written)."""
    d = Path(directory)
    try:
        return sorted(f for f in d.iterdir() if f.name.startswith(EVENT_PREFIX) and is_file(f))
    except OSError:
        return []


def read_tensorboard(path: str | os.PathLike[str], overrides: dict[str, str] | None = None) -> Run:
    """An event file, or a run directory of them, → :class:`Run` (scalars by tag; ``meta["columns"]``).

    Several files in one directory are one run written in pieces (a restarted job): they are
    read in name order, and a tag's points from a step a later file logged again are replaced by
    the later file's (as TensorBoard does when a run restarts from a checkpoint).
    """
    p = Path(path)
    check_regular(p)  # a FIFO, a link loop, a denied path: one line, before anything is opened
    files = event_files(p) if p.is_dir() else [p]
    if not files:
        raise LogError(f"holds no TensorBoard event file ({EVENT_PREFIX}.*)", path=path)
    merged: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    notes: list[str] = []
    for f in files:
        series, file_notes, _ = read_event_file(f)
        notes += file_notes if len(files) > 1 or p.is_dir() else [n.split(": ", 1)[1] for n in file_notes]
        for tag, (s, v) in series.items():
            if tag in merged and s.size:
                ps, pv = merged[tag]
                keep = ps < s.min()
                if not keep.all():
                    notes.append(
                        f"{f.name} logs {tag!r} again from step {int(s.min())}: its points replace "
                        f"{int((~keep).sum())} earlier ones (a restarted run)"
                    )
                merged[tag] = (np.concatenate([ps[keep], s]), np.concatenate([pv[keep], v]))
            else:
                merged[tag] = (s, v)
    meta: dict[str, Any] = {}
    if p.is_dir() and len(files) > 1:
        meta["event_files"] = [f.name for f in files]
    return build_run(merged, path=path, fmt="tensorboard", overrides=overrides, notes=notes, meta=meta)
