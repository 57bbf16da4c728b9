"""Which bucket a model pads to: its own rungs of the ladder, or a larger bucket used before.

:mod:`jaxhlm.padding` moves each count a program is specialised to (each term's levels,
the COO entries and pairs, a GLMM's rows) up a ladder of sizes, so that models whose
counts fall on the same rungs share one compiled program.  A count near the top of its
rung defeats that: 240 items pad to 264 and 228 to 232, so a data set 5% smaller than
another compiled a program of its own, in a process that could have loaded the larger
one's from disk (``benchmarks/crossed.py``, 2026-12-04).  Two rules make nearby sizes
share dependably:

- *headroom*: a model whose bucket is not chosen below pads each count x to the rung of
  x (1 + :data:`HEADROOM`);
- *reach*: a model takes a bucket used before, in this process or by a process that
  shared its store of compiled programs (:mod:`jaxhlm.precompiled`), when each of the
  bucket's counts lies between x's own rung and the rung of x (1 + :data:`REACH`): the
  least padded such bucket that still leaves each count its headroom, or failing that
  the least padded one.

A model whose counts took a bucket before takes it again, so that the same data set
keeps its programs whatever was recorded since (a warm-up stays useful).

With 1 + REACH = (1 + HEADROOM)^2, two models whose counts are all within a factor
1 + HEADROOM of each other share a bucket in either order, when no other bucket within
their reach was used before.  Say x <= y <= x (1 + H).  If x comes first, its bucket is
rung(x (1 + H)): at least rung(y), y's own, since the ladder is monotone, and at most
rung(y (1 + H)), within y's reach.  If y comes first, its bucket rung(y (1 + H)) is at
least rung(x) and at most rung(x (1 + H)^2).  (With other buckets used before, the
second model may take one of those instead, which is then already compiled.)

Padding is exact (:mod:`jaxhlm.padding`), so the bucket changes no result, only the work:
the ladder's own rungs add up to 26% to a count (57 -> 72), a headroom bucket up to 41%
(51 -> 72), a reached one up to 53% (47 -> 72); ``benchmarks/README.md`` ("Headroom and
reach") has measured costs.  Counts on the fine ladder (the later terms' levels of a
large dense block, whose work is cubic in them) get neither rule, nor do counts up to 8,
which the ladder leaves as they are: their bucket is their rung.  Counts above
:data:`jaxhlm.padding.FINE_FROM` (millions of pairs) take the fine ladder's rungs by their
size alone, and keep both rules.

Buckets are recorded per kind of model (the static structure without its level counts,
a residual structure's static sizes on their rungs; an LMM, whose counts include a
residual structure's class sets and classes (:func:`jaxhlm.residual.whiten.bucket`), its
simulator's rows, a GLMM with its family and link), with the counts that
took them, in memory and, where programs are stored, in a small text file beside them
(``<key>.buckets``, keyed by the kind, jaxhlm's source and JAX's version as stored
programs are; the store's bound covers it, and a file that does not parse is ignored).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os

import jaxlib

from . import padding, precompiled, store, stored_run
from .structure import Structure

HEADROOM = 0.10
"""A count x with no bucket to reach pads to the rung of x (1 + HEADROOM)."""

REACH = (1 + HEADROOM) ** 2 - 1
"""A count x takes a bucket used before whose count is at most the rung of x (1 + REACH)."""

KEEP = 32
"""Records (a model's counts and the bucket they took) kept per kind of model: the most
recent."""

_MEMORY: dict[str, list[tuple[tuple[int, ...], tuple[int, ...]]]] = {}


def _rung(x: int, fine: bool, factor: float = 1.0) -> int:
    bits = padding.FINE_BITS if fine else padding.COARSE_BITS
    if x <= 2 << bits:   # counts the ladder leaves as they are
        return x
    return padding.ladder(math.ceil(round(x * factor, 9)), bits)   # round: 20 x 1.1 is 22, not 22.000000000000004


def kind(name: str, st: Structure, *detail) -> str:
    """A kind of model: ``name`` (``"lmm"``, ``"glmm"``), its structure with every term's
    level count set to 0 and a residual structure's static sizes on their rungs
    (:func:`jaxhlm.padding.with_levels`: what a bucket leaves the same), and any ``detail``
    that keys its programs too (a GLMM's family and link)."""
    return repr((name, padding.with_levels(st, [0] * len(st.terms))) + detail)


def choose(kind_: str, counts: tuple[int, ...], fine: tuple[bool, ...]) -> tuple[int, ...]:
    """The bucket of a model of ``kind_`` (:func:`kind`) with these ``counts``, of which
    those flagged ``fine`` are on the fine ladder (module docstring): the bucket these very
    counts took before; else, among the buckets used before within reach, the least padded
    one that leaves each count its headroom, or failing that the least padded one; else
    each count's headroom rung.  The counts as they are when padding is off
    (:data:`jaxhlm.padding.ENABLED`)."""
    counts = tuple(int(c) for c in counts)
    if not padding.ENABLED:
        return counts
    need = tuple(_rung(x, f) for x, f in zip(counts, fine))
    roomy = tuple(n if f else _rung(x, f, 1 + HEADROOM) for x, n, f in zip(counts, need, fine))
    reach = tuple(n if f else _rung(x, f, 1 + REACH) for x, n, f in zip(counts, need, fine))
    path = _path(kind_)
    used = _read(kind_, path)
    same = [b for own, b in used if own == counts and len(b) == len(need)
            and all(n <= c <= r for n, c, r in zip(need, b, reach))]
    if same:
        _touch(path)
        return same[-1]
    within = [b for _, b in used if len(b) == len(need) and all(n <= c <= r for n, c, r in zip(need, b, reach))]
    if within:
        roomier = [b for b in within if all(c >= h for c, h in zip(b, roomy))]
        chosen = min(roomier or within, key=lambda b: sum(math.log((c + 1) / (x + 1)) for c, x in zip(b, counts)))
    else:
        chosen = roomy
    _record(kind_, path, counts, chosen)
    return chosen


def _path(kind_: str):
    """The file of ``kind_``'s buckets in the store, or None where programs are not stored."""
    directory = precompiled.store_directory()
    if directory is None:
        return None
    text = repr((kind_, store.source_hash(), stored_run.jax_version(), jaxlib.__version__))
    return directory / f"{hashlib.sha256(text.encode()).hexdigest()[:32]}.buckets"


def _read(kind_: str, path) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(own counts, bucket) of ``kind_``'s models in this process, then in its file, whose
    lines read ``bucket | counts``; a line or file that does not parse is skipped."""
    used = list(_MEMORY.get(kind_, ()))
    if path is not None:
        with contextlib.suppress(OSError):
            for line in path.read_bytes().decode("ascii", "replace").splitlines():
                with contextlib.suppress(ValueError):
                    bucket, own = line.split("|")
                    used.append((tuple(int(c) for c in own.split()), tuple(int(c) for c in bucket.split())))
    return used


def _touch(path) -> None:
    """Mark a kind's file used, as loading a program marks its file (the store's eviction
    order, :mod:`jaxhlm.precompiled`)."""
    if path is not None:
        with contextlib.suppress(OSError):
            os.utime(path)


def _record(kind_: str, path, counts: tuple[int, ...], bucket: tuple[int, ...]) -> None:
    """Remember that ``counts`` took ``bucket``, in this process and in ``kind_``'s file
    (appended; the file is cut to its last :data:`KEEP` lines when it holds twice as
    many).  A store that cannot be written only loses the record."""
    _MEMORY.setdefault(kind_, []).append((counts, bucket))
    del _MEMORY[kind_][:-KEEP]
    if path is None:
        return
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:   # one short write: appends of processes do not interleave
            fh.write(f"{' '.join(map(str, bucket))} | {' '.join(map(str, counts))}\n")
        lines = path.read_bytes().decode("ascii", "replace").splitlines()
        if len(lines) >= 2 * KEEP:
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text("\n".join(lines[-KEEP:]) + "\n")
            os.replace(tmp, path)
