"""proxy/codings.py: a body's Content-Encoding undone within a size bound, pure.

gzip, x-gzip and deflate are read with zlib, br with Brotli and zstd with zstd; each
broken body is corrupt, each coding not read unsupported, and a body inflating past the
limit is given up once it passes it, having cost about the limit in memory."""

from __future__ import annotations

import gzip
import random
import subprocess
import sys
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import brotli
import pytest
from backports import zstd
from multidict import CIMultiDict, CIMultiDictProxy

from instrumentation.records import MAX_RETAINED_BYTES, AttemptRecord
from proxy.codings import CORRUPT, TOO_LARGE, UNSUPPORTED, Undecodable, content_coding, inflate

DOC = b'{"usage": {"prompt_tokens": 3}}' * 100


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", gzip.compress(DOC)),
        ("x-gzip", gzip.compress(DOC)),
        ("GZIP", gzip.compress(DOC[:1000]) + gzip.compress(DOC[1000:])),  # two members
        ("deflate", zlib.compress(DOC)),
        ("deflate", _raw_deflate(DOC)),  # no zlib header, as some servers send it
        ("deflate, gzip", gzip.compress(zlib.compress(DOC))),  # last applied, first undone
        ("identity", DOC),
    ],
)
def test_inflate_undoes_the_codings_zlib_reads(encoding: str, body: bytes) -> None:
    """gzip/x-gzip (every member), zlib or raw deflate, stacked codings, identity."""
    assert inflate(body, encoding, MAX_RETAINED_BYTES) == DOC


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("br", brotli.compress(DOC)),
        ("BR", brotli.compress(b"")),
        ("zstd", zstd.compress(DOC)),
        ("zstd", b"".join(zstd.compress(DOC[i : i + 700]) for i in range(0, len(DOC), 700))),
        ("br, zstd", zstd.compress(brotli.compress(DOC))),  # last applied, first undone
        ("zstd, gzip, br", brotli.compress(gzip.compress(zstd.compress(DOC)))),
    ],
    ids=["br", "br-empty", "zstd", "zstd-5-frames", "br-then-zstd", "zstd-gzip-br"],
)
def test_inflate_undoes_br_and_zstd_alone_and_stacked(encoding: str, body: bytes) -> None:
    """br round-trips; zstd round-trips with every frame of a multi-frame body; each
    stacks with the others, the last applied undone first."""
    expected = b"" if encoding == "BR" else DOC
    assert inflate(body, encoding, MAX_RETAINED_BYTES) == expected


@pytest.mark.parametrize(("encoding", "pack"), [("br", brotli.compress), ("zstd", zstd.compress)])
def test_a_body_inflating_to_exactly_the_limit_is_read(
    encoding: str, pack: Callable[[bytes], bytes]
) -> None:
    """The limit is the largest decoded size read: one byte more is too large."""
    assert inflate(pack(DOC), encoding, limit=len(DOC)) == DOC
    with pytest.raises(Undecodable) as caught:
        inflate(pack(DOC), encoding, limit=len(DOC) - 1)
    assert caught.value.reason == TOO_LARGE


@pytest.mark.parametrize(
    ("encoding", "body", "reason"),
    [
        ("gzip", gzip.compress(DOC)[:-6], CORRUPT),  # cut short
        ("gzip", b"not gzip at all", CORRUPT),
        ("deflate", b"\x00\x01garbage", CORRUPT),
        ("gzip", gzip.compress(DOC) + b"trailing junk", CORRUPT),
        ("br", brotli.compress(DOC)[:-4], CORRUPT),  # cut short
        ("br", DOC, CORRUPT),
        ("br", brotli.compress(DOC) + b"trailing junk", CORRUPT),
        ("br", b"", CORRUPT),
        ("zstd", zstd.compress(DOC)[:-4], CORRUPT),  # cut short
        ("zstd", zstd.compress(DOC) + zstd.compress(DOC)[:9], CORRUPT),  # 2nd frame cut
        ("zstd", DOC, CORRUPT),
        ("zstd", zstd.compress(DOC) + b"trailing junk", CORRUPT),
        ("zstd", b"", CORRUPT),
        ("compress", DOC, UNSUPPORTED),
        ("gzip, x-snappy", DOC, UNSUPPORTED),
        ("gzip", gzip.compress(b"a" * 5000), TOO_LARGE),
        ("deflate", zlib.compress(b"a" * 5000), TOO_LARGE),
        ("br", brotli.compress(b"a" * 5000), TOO_LARGE),
        ("zstd", zstd.compress(b"a" * 2000) + zstd.compress(b"a" * 3000), TOO_LARGE),
    ],
    ids=lambda value: value if isinstance(value, str) else "body",
)
def test_inflate_refuses_what_it_cannot_read_within_the_bound(
    encoding: str, body: bytes, reason: str
) -> None:
    """Broken, unknown or past-the-limit bodies raise Undecodable with their reason."""
    with pytest.raises(Undecodable) as caught:
        inflate(body, encoding, limit=4096)
    assert caught.value.reason == reason


def test_a_zstd_frame_asking_for_a_window_over_8_mib_is_not_given_it() -> None:
    """RFC 9659 caps a zstd Content-Encoding's window at 8 MiB: a frame that asks for a
    16 MiB one is refused as corrupt instead of allocated."""
    options = {int(zstd.CompressionParameter.window_log): 24}
    body = zstd.compress(b"a" * (16 << 20), options=options)
    with pytest.raises(Undecodable) as caught:
        inflate(body, "zstd", limit=32 << 20)
    assert caught.value.reason == CORRUPT


@pytest.mark.parametrize(
    ("encoding", "pack"),
    [
        ("gzip", gzip.compress),
        ("br", lambda data: brotli.compress(data, quality=4)),
        ("zstd", zstd.compress),
    ],
)
def test_a_bomb_costs_about_the_limit_not_what_it_inflates_to(
    encoding: str, pack: Callable[[bytes], bytes]
) -> None:
    """A small body inflating to 64 MiB, read with a 1 MiB limit, is refused as too
    large having held less than twice the limit (the output, one decompressor step) at
    any moment."""
    bomb = pack(b"a" * (64 << 20))
    limit = 1 << 20
    assert len(bomb) < limit // 2
    tracemalloc.start()
    try:
        with pytest.raises(Undecodable) as caught:
            inflate(bomb, encoding, limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.reason == TOO_LARGE
    assert peak < 2 * limit


_EMPTY_GZIP = gzip.compress(b"", mtime=0)
#: A zstd skippable frame holding nothing (RFC 8878 §3.1.2): 8 bytes, no output.
_SKIPPABLE = (0x184D2A50).to_bytes(4, "little") + bytes(4)


@pytest.mark.parametrize(
    ("encoding", "member"),
    [("gzip", _EMPTY_GZIP), ("zstd", zstd.compress(b"")), ("zstd", _SKIPPABLE)],
    ids=["gzip", "zstd", "zstd-skippable"],
)
def test_a_body_of_more_than_1024_members_or_frames_is_too_large_however_little_they_hold(
    encoding: str, member: bytes
) -> None:
    """Each member costs a decoder and inflates to nothing, so a body of a quarter of a
    million empty ones never nears the limit: it had cost the event loop (which reads a
    compressed error body) minutes. 1,024 are read (aiohttp's bound for request bodies)."""
    assert inflate(member * 1024, encoding, 64 * 1024) == b""
    with pytest.raises(Undecodable) as refused:
        inflate(member * 262_144, encoding, 64 * 1024)
    assert refused.value.reason == TOO_LARGE


def test_members_after_the_first_are_read_from_where_it_ended() -> None:
    """Members longer than the pieces a decoder is fed (64 KiB) and members inside one
    piece both end where the next begins."""
    large = bytes(range(256)) * 400  # 100 KiB inflated from a small member
    noise = random.Random(7).randbytes(150_000)  # incompressible: its member spans 3 pieces
    body = gzip.compress(noise) + gzip.compress(b"tiny") + gzip.compress(large)
    assert inflate(body, "gzip", 1 << 20) == noise + b"tiny" + large
    frames = zstd.compress(noise) + zstd.compress(b"tiny") + zstd.compress(large)
    assert inflate(frames, "zstd", 1 << 20) == noise + b"tiny" + large


def test_without_the_brotli_and_zstd_modules_br_and_zstd_are_unsupported() -> None:
    """An install lacking Brotli or backports.zstd still imports proxy.codings; those
    codings are refused as unsupported (what it counts), not an ImportError."""
    script = (
        "import sys\n"
        "sys.modules['brotli'] = None\n"
        "sys.modules['backports.zstd'] = None\n"
        "sys.modules['compression.zstd'] = None\n"
        "from proxy.codings import Undecodable, inflate\n"
        "for coding in ('br', 'zstd'):\n"
        "    try:\n"
        "        inflate(b'x', coding, 100)\n"
        "    except Undecodable as exc:\n"
        "        print(coding, exc.reason)\n"
        "print(inflate(__import__('gzip').compress(b'ok'), 'gzip', 100).decode())\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).parents[1],  # this checkout's proxy/, not an installed one
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n") == [f"br {UNSUPPORTED}", f"zstd {UNSUPPORTED}", "ok", ""]


def test_a_member_inflating_past_one_step_then_more_bytes_is_read_not_looped_on() -> None:
    """zlib on 3.11 keeps input in `unconsumed_tail` after a member's end when a call's
    output was capped: a gzip member over 256 KiB inflated followed by another member, or
    a zlib stream followed by trailing bytes, once made the inflate loop forever."""
    first = b"a" * 300_000
    assert inflate(gzip.compress(first) + gzip.compress(b"second"), "gzip", 1 << 20) == (
        first + b"second"
    )
    assert inflate(zlib.compress(first) + b"trailing", "deflate", 1 << 20) == first


@pytest.mark.parametrize(
    ("lines", "expected"),
    [([], None), (["gzip"], "gzip"), (["deflate", "gzip"], "deflate, gzip")],
)
def test_a_messages_content_coding_is_its_lines_joined_in_order(
    lines: list[str], expected: str | None
) -> None:
    """Several Content-Encoding lines are one list (RFC 9110): the failover's reading of
    an error and the telemetry record's of an answer both take them all, so a body coded
    twice inflates (with the first line alone it was corrupt to telemetry)."""
    headers = CIMultiDictProxy(CIMultiDict([("Content-Encoding", line) for line in lines]))
    assert content_coding(headers) == expected
    attempt = AttemptRecord(
        1, 1, provider="p", system="s", host="h", port=1, target="t", model=None
    )
    attempt.on_response(200, headers)
    assert attempt.encoding == expected
    if expected is not None:
        body = gzip.compress(zlib.compress(b"doc")) if len(lines) == 2 else gzip.compress(b"doc")
        assert inflate(body, expected, 1024) == b"doc"
