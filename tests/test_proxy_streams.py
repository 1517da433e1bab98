"""Streams and lifecycle: incremental relay, client disconnects, upstream breaks after the
commit point, graceful shutdown of a real spangate process, and the health endpoints.

No test measures time: "before the stall ends" is checked by reading with a timeout much
shorter than the fake provider's stall.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from conftest import Running, basic_config
from fakeprovider import SSE_TYPE, FakeProvider, custom, delay, reset_after, sse, stall
from harness import SpangateProcess
from opentelemetry.trace import StatusCode

GPT = "gpt-4o-mini"
CLAUDE = "claude-sonnet-4-6"
HELLO: Any = [{"role": "user", "content": "hi there"}]
CHAT_STREAM = {"model": GPT, "messages": HELLO, "stream": True}
CLAUDE_STREAM = {"model": CLAUDE, "max_tokens": 64, "messages": HELLO, "stream": True}
RESPONSES_STREAM = {"model": "gpt-4o", "input": "hello", "stream": True}
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "k"}
READ_TIMEOUT_S = 1.0  # much shorter than every stall below
STALL_S = 5.0
STALL_PROBE_S = 0.2  # "nothing more yet" check, well inside the stall

# (path, body, headers, events the provider sends before stalling). spangate holds opening
# frames back until the first content event (its commit point, see proxy/failover.py), so
# each stall comes one event after the first content: chat role chunk, "Hello", " from";
# message_start, content_block_start, ping, two text deltas; four Responses lifecycle
# events, two text deltas.
STREAMS = pytest.mark.parametrize(
    ("path", "body", "headers", "before_stall"),
    [
        ("/v1/chat/completions", CHAT_STREAM, {}, 3),
        ("/v1/messages", CLAUDE_STREAM, ANTHROPIC_HEADERS, 5),
        ("/v1/responses", RESPONSES_STREAM, {}, 6),
    ],
    ids=["chat", "messages", "responses"],
)


async def read_event(resp: aiohttp.ClientResponse) -> bytes:
    """One SSE event, or TimeoutError when none arrives within READ_TIMEOUT_S."""
    return await asyncio.wait_for(resp.content.readuntil(b"\n\n"), READ_TIMEOUT_S)


def events_of(raw: bytes) -> list[bytes]:
    return [block + b"\n\n" for block in raw.split(b"\n\n") if block]


def spans_by_kind(running: Running) -> dict[str, Any]:
    """{"server": span, "client": span} of the one request a test made.

    A request's telemetry is submitted when its handler ends, which may be just after the
    client saw the end of the response, so this polls (bounded) until both spans exist.
    """
    deadline = time.monotonic() + 5
    spans = running.finished_spans()
    while len(spans) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
        spans = running.finished_spans()
    assert len(spans) == 2, [s.name for s in spans]
    server = next(s for s in spans if s.name.startswith("POST "))
    client = next(s for s in spans if not s.name.startswith("POST "))
    return {"server": server, "client": client}


# --------------------------------------------------------------------------- incremental relay


@STREAMS
async def test_stream_events_arrive_before_the_upstream_stall_ends(
    path: str,
    body: dict[str, Any],
    headers: dict[str, str],
    before_stall: int,
    fake: FakeProvider,
    spangate: Running,
) -> None:
    """Events the provider sent are readable while it is still stalling (no buffering)."""
    fake.script(stall(after=before_stall, seconds=STALL_S))
    async with aiohttp.ClientSession() as http:
        resp = await http.post(spangate.url + path, json=body, headers=headers)
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        first = [await read_event(resp) for _ in range(before_stall)]
        with pytest.raises(asyncio.TimeoutError):  # the stall: nothing more is available yet
            await asyncio.wait_for(resp.content.readuntil(b"\n\n"), STALL_PROBE_S)
        resp.close()
    assert all(b"data: {" in event for event in first)


async def test_stream_is_flushed_on_event_boundaries(fake: FakeProvider, spangate: Running) -> None:
    """An event split across upstream writes reaches the client whole, never half of it."""
    events = [
        b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n',
        b'data: {"choices":[{"index":0,"delta":{"content":"b"}}]}\n\n',
        b"data: [DONE]\n\n",
    ]
    fake.script(sse([events[0], events[1][:20], (0.2, events[1][20:]), events[2]]))
    reads: list[bytes] = []
    async with aiohttp.ClientSession() as http:
        resp = await http.post(spangate.openai_base_url + "/chat/completions", json=CHAT_STREAM)
        while chunk := await resp.content.readany():
            reads.append(chunk)
    assert b"".join(reads) == b"".join(events)
    assert all(chunk.endswith(b"\n\n") for chunk in reads), reads


#: struct tcp_info (linux/tcp.h): tcpi_data_segs_in, segments that carried data.
_TCPI_DATA_SEGS_IN = 152


@pytest.mark.skipif(sys.platform != "linux", reason="reads Linux's TCP_INFO")
async def test_a_stream_the_provider_sent_whole_reaches_the_client_in_one_send(
    fake: FakeProvider, spangate: Running
) -> None:
    """When the provider's whole stream is in hand, the client's response — headers,
    events and the end of the chunked body — leaves spangate in one send, not three
    (headers at prepare, the events, the terminating chunk): one data segment arrives."""
    events = (
        b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",'
        b'"choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}\n\n'
        b"data: [DONE]\n\n"
    )
    fake.script(custom(200, events, content_type=SSE_TYPE))
    body = json.dumps(CHAT_STREAM).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", spangate.server.port)
    try:
        writer.write(request)
        answer = b""
        while not answer.endswith(b"\r\n0\r\n\r\n"):
            answer += await asyncio.wait_for(reader.read(65536), READ_TIMEOUT_S)
        sock = writer.get_extra_info("socket")
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    finally:
        writer.close()
    head, _, chunked = answer.partition(b"\r\n\r\n")
    size, _, rest = chunked.partition(b"\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer
    assert (rest[: int(size, 16)], rest[int(size, 16) :]) == (events, b"\r\n0\r\n\r\n")
    if len(info) < _TCPI_DATA_SEGS_IN + 4:
        pytest.skip("this kernel's tcp_info has no tcpi_data_segs_in")
    (data_segments,) = struct.unpack_from("I", info, _TCPI_DATA_SEGS_IN)
    assert data_segments == 1, answer


# --------------------------------------------------------------------------- client disconnects


@STREAMS
async def test_client_disconnect_mid_stream_cancels_the_upstream_request(
    path: str,
    body: dict[str, Any],
    headers: dict[str, str],
    before_stall: int,
    fake: FakeProvider,
    spangate: Running,
) -> None:
    """Closing the client response mid-stream closes spangate's upstream connection too."""
    fake.script(stall(after=before_stall, seconds=STALL_S * 2))
    async with aiohttp.ClientSession() as http:
        resp = await http.post(spangate.url + path, json=body, headers=headers)
        for _ in range(before_stall):  # all of them: spangate is now waiting on the provider
            await read_event(resp)
        resp.close()
    assert await fake.await_disconnects(1, within=STALL_S)


async def test_client_disconnect_marks_the_attempt_span(
    fake: FakeProvider, spangate: Running
) -> None:
    """An abandoned stream ends its CLIENT span with client_disconnected and ERROR status."""
    fake.script(stall(after=2, seconds=STALL_S * 2))
    async with aiohttp.ClientSession() as http:
        resp = await http.post(spangate.openai_base_url + "/chat/completions", json=CHAT_STREAM)
        for _ in range(2):  # all sent events: spangate is now waiting on the provider
            await read_event(resp)
        resp.close()
    assert await fake.await_disconnects(1, within=STALL_S)
    spans = await asyncio.to_thread(spans_by_kind, spangate)
    assert spans["server"].attributes["error.type"] == "client_disconnected"
    client = spans["client"]
    assert client.attributes.get("spangate.stream.outcome") == "client_disconnected"
    assert client.status.status_code == StatusCode.ERROR


def test_sdk_closing_right_after_done_is_a_completed_stream(
    fake: FakeProvider, spangate: Running
) -> None:
    """A client that got every event up to [DONE] and then closed had a successful stream."""
    fake.script(stall(after=1000, seconds=0.5))  # all events, then a pause before end of body
    with openai.OpenAI(base_url=spangate.openai_base_url, api_key="k", max_retries=0) as client:
        chunks = list(client.chat.completions.create(model=GPT, messages=HELLO, stream=True))
    assert chunks[-1].choices[0].finish_reason == "stop"
    spans = spans_by_kind(spangate)
    server = spans["server"]
    assert "error.type" not in server.attributes
    assert server.attributes["http.response.status_code"] == 200
    assert server.status.status_code != StatusCode.ERROR
    assert spans["client"].attributes.get("spangate.stream.outcome") == "completed"


# --------------------------------------------------------------------------- upstream breaks


def test_openai_stream_reset_after_content_raises_in_the_sdk(
    fake: FakeProvider, spangate: Running
) -> None:
    """A reset after two events ends the stream with an error event; the SDK raises APIError."""
    fake.script(reset_after(events=2))
    received = []
    with (
        openai.OpenAI(base_url=spangate.openai_base_url, api_key="k", max_retries=0) as client,
        pytest.raises(openai.APIError) as caught,
    ):
        for chunk in client.chat.completions.create(model=GPT, messages=HELLO, stream=True):
            received.append(chunk)
    assert len(received) == 2
    assert received[1].choices[0].delta.content == "Hello"
    assert "spangate" in caught.value.message
    assert "incomplete" in caught.value.message
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "stream_interrupted"


async def test_openai_stream_reset_wire_ends_with_one_error_event(
    fake: FakeProvider, spangate: Running
) -> None:
    """On the wire: the delivered events, then one `data: {"error": ...}` event, no [DONE]."""
    fake.script(reset_after(events=2))
    async with (
        aiohttp.ClientSession() as http,
        http.post(spangate.openai_base_url + "/chat/completions", json=CHAT_STREAM) as resp,
    ):
        raw = await resp.read()
    events = events_of(raw)
    assert len(events) == 3
    assert raw.endswith(b"\n\n")
    assert b"[DONE]" not in raw
    last = json.loads(events[-1].removeprefix(b"data: "))
    assert set(last) == {"error"}
    assert set(last["error"]) == {"message", "type", "param", "code"}
    assert last["error"]["type"] == "server_error"


def test_anthropic_stream_reset_after_content_raises_in_the_sdk(
    fake: FakeProvider, spangate: Running
) -> None:
    """A reset after content ends the stream with `event: error`; messages.stream raises."""
    fake.script(reset_after(events=4))  # message_start, block start, ping, first delta
    texts: list[str] = []
    with (
        anthropic.Anthropic(base_url=spangate.url, api_key="k", max_retries=0) as client,
        pytest.raises(anthropic.APIError) as caught,
        client.messages.stream(model=CLAUDE, max_tokens=64, messages=HELLO) as stream,
    ):
        texts.extend(stream.text_stream)
    assert texts == ["Hello"]
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] == "api_error"
    assert "incomplete" in body["error"]["message"]


async def test_anthropic_stream_reset_wire_ends_with_error_event(
    fake: FakeProvider, spangate: Running
) -> None:
    """On the wire: the delivered events, then `event: error` with an Anthropic error body."""
    fake.script(reset_after(events=4))  # past the commit point (the first text delta)
    async with (
        aiohttp.ClientSession() as http,
        http.post(spangate.url + "/v1/messages", json=CLAUDE_STREAM) as resp,
    ):
        raw = await resp.read()
    events = events_of(raw)
    assert [e.split(b"\n", 1)[0] for e in events] == [
        b"event: message_start",
        b"event: content_block_start",
        b"event: ping",
        b"event: content_block_delta",
        b"event: error",
    ]
    data = json.loads(events[-1].split(b"\ndata: ", 1)[1])
    assert data["type"] == "error"
    assert set(data["error"]) == {"type", "message"}


def test_responses_stream_reset_raises_in_the_sdk(fake: FakeProvider, spangate: Running) -> None:
    """A broken Responses API stream also makes the openai SDK raise instead of truncating."""
    fake.script(reset_after(events=5))
    with (
        openai.OpenAI(base_url=spangate.openai_base_url, api_key="k", max_retries=0) as client,
        pytest.raises(openai.APIError),
    ):
        list(client.responses.create(model="gpt-4o", input="hello", stream=True))


def test_stream_idle_timeout_ends_with_an_error_event(
    fake: FakeProvider, spangate_for: Callable[..., Running]
) -> None:
    """Silence over timeouts.idle_s after content: the SDK raises, naming the idle timeout."""
    running = spangate_for(basic_config(fake, server={"timeouts": {"idle_s": 0.3}}))
    fake.script(stall(after=2, seconds=STALL_S))
    with (
        openai.OpenAI(base_url=running.openai_base_url, api_key="k", max_retries=0) as client,
        pytest.raises(openai.APIError) as caught,
    ):
        list(client.chat.completions.create(model=GPT, messages=HELLO, stream=True))
    assert "idle" in caught.value.message


async def test_idle_timeout_counts_each_silence_not_the_whole_stream(
    fake: FakeProvider, spangate_for: Callable[..., Running]
) -> None:
    """Gaps each shorter than timeouts.idle_s, adding up to more than it: the stream is
    relayed whole (the idle clock restarts with every read)."""
    running = spangate_for(basic_config(fake, server={"timeouts": {"idle_s": 0.6}}))
    chunks = [
        b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",'
        b'"choices":[{"index":0,"delta":{"content":"%d"},"finish_reason":null}]}\n\n' % i
        for i in range(6)
    ]
    fake.script(sse([chunks[0], *[(0.25, c) for c in chunks[1:]], (0.25, b"data: [DONE]\n\n")]))
    async with aiohttp.ClientSession() as http:
        resp = await http.post(running.openai_base_url + "/chat/completions", json=CHAT_STREAM)
        raw = await resp.read()
    assert raw == b"".join(chunks) + b"data: [DONE]\n\n"


async def test_idle_timeout_ends_a_relayed_non_event_stream_body(
    fake: FakeProvider, spangate_for: Callable[..., Running]
) -> None:
    """A chunked body that is not an event stream is copied as it comes; silence over
    timeouts.idle_s ends it there, as a broken transfer (there is no event to say it in,
    and a clean end would pass a short body off as whole), and the attempt records
    stream_idle_timeout."""
    running = spangate_for(basic_config(fake, server={"timeouts": {"idle_s": 0.3}}))
    fake.script(sse([b"a", (0.1, b"b"), (STALL_S, b"c")], content_type="application/octet-stream"))
    body = b""
    async with aiohttp.ClientSession() as http:
        resp = await http.post(running.openai_base_url + "/chat/completions", json=CHAT_STREAM)
        with pytest.raises(aiohttp.ClientPayloadError):
            async for piece in resp.content.iter_any():
                body += piece
    assert body == b"ab"
    spans = spans_by_kind(running)
    assert spans["client"].attributes.get("error.type") == "stream_idle_timeout"


# --------------------------------------------------------------------------- usage injection bytes


async def test_injected_usage_leaves_no_trace_in_client_bytes(
    fake: FakeProvider, spangate: Running
) -> None:
    """The client's stream bytes equal the un-injected provider stream (ids aside)."""
    async with aiohttp.ClientSession() as http:
        url = "/chat/completions"
        async with http.post(fake.openai_base_url + url, json=CHAT_STREAM) as resp:
            direct = await resp.read()
        async with http.post(spangate.openai_base_url + url, json=CHAT_STREAM) as resp:
            proxied = await resp.read()
    direct_id = json.loads(events_of(direct)[0][6:])["id"].encode()
    proxied_id = json.loads(events_of(proxied)[0][6:])["id"].encode()
    assert proxied.replace(proxied_id, direct_id) == direct


# --------------------------------------------------------------------------- health endpoints


async def test_healthz_and_readyz_answer_200(spangate: Running) -> None:
    """/healthz is 200 while alive; /readyz is 200 once the listener is up."""
    async with aiohttp.ClientSession() as http:
        async with http.get(spangate.url + "/healthz") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "alive"
        async with http.get(spangate.url + "/readyz") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "ready"


# --------------------------------------------------------------------------- graceful shutdown


async def http_get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
) -> tuple[int, bytes]:
    """GET `path` on an open keep-alive connection."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: spangate\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        int(v) for n, _, v in (x.partition(":") for x in lines) if n.lower() == "content-length"
    )
    return int(lines[0].split()[1]), await reader.readexactly(length)


async def refuses_connections(port: int, within: float) -> bool:
    """True once a new TCP connection to `port` is refused (polled until `within` s pass)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            return True
        except ConnectionResetError:  # caught in the backlog as the listener closed
            await asyncio.sleep(0.02)
            continue
        writer.close()
        await asyncio.sleep(0.02)
    return False


async def test_sigterm_drains_an_inflight_stream_and_exits_zero(fake: FakeProvider) -> None:
    """SIGTERM: new connections are refused, /readyz turns 503, the open stream finishes, exit 0."""
    fake.script(stall(after=3, seconds=2))  # past the commit point: role, "Hello", " from"
    with SpangateProcess(basic_config(fake)) as proc:
        port = int(proc.url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await http_get(reader, writer, "/readyz"))[0] == 200
        async with aiohttp.ClientSession() as http:
            resp = await http.post(proc.url + "/v1/chat/completions", json=CHAT_STREAM)
            assert resp.status == 200
            first = await read_event(resp)  # the stream is committed and in flight
            proc.terminate()
            assert await refuses_connections(port, within=1.5)
            status, body = await http_get(reader, writer, "/readyz")  # an already-open connection
            assert (status, json.loads(body)["status"]) == (503, "draining")
            rest = await asyncio.wait_for(resp.content.read(), 10)
        writer.close()
        assert await asyncio.to_thread(proc.wait, 20) == 0
        events = events_of(first + rest)
        assert events[-1] == b"data: [DONE]\n\n"
        chunks = [json.loads(e[6:]) for e in events[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert text == f"Hello from {GPT}: hi there"
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        logged = [entry["event"] for entry in proc.logs()]
        assert "spangate.draining" in logged and "spangate.stopped" in logged
        assert "spangate.drain_timeout" not in logged
        assert "Traceback" not in proc.raw_output()


#: Short, so that a stream outlives it.
DRAIN_S = 3.0
#: How long the client and the test wait for spangate before failing rather than hanging:
#: a hang guard, not a bound on the shutdown's speed (the provider stalls longer still, so
#: a stream spangate never ends cannot finish by itself either).
HANG_GUARD_S = 30.0


def stream_outliving_the_drain(proc: SpangateProcess) -> tuple[bytes, int]:
    """A streaming chat request whose provider stalls for a minute; once its first event
    is here, SIGTERM. (the stream's bytes as the client got them, up to spangate closing
    the connection; the process's exit code)."""
    port = int(proc.url.rsplit(":", 1)[1])
    body = json.dumps(CHAT_STREAM).encode()
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: spangate\r\n"
    head += b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD_S) as client:
        client.sendall(head + body)
        received = client.recv(65536)
        while b"data: " not in received:  # the stream is committed and in flight
            received += client.recv(65536)
        proc.terminate()
        while chunk := client.recv(65536):  # until spangate closes it
            received += chunk
    return received, proc.wait(HANG_GUARD_S)


def test_sigterm_ends_a_stream_that_outlives_the_drain_within_it(fake: FakeProvider) -> None:
    """A stream still open when server.drain_timeout_s runs out is cancelled by the drain
    itself (aiohttp's shutdown used to wait it out a second time): the client reads an
    error event saying spangate is shutting down (not a stream cut mid-answer), its
    connection ends, and the process exits 0 on its own, its request logged after the
    drain timeout and before the stop, as ended by the shutdown (not by a client that
    left)."""
    fake.script(stall(after=3, seconds=60))
    config = basic_config(fake, server={"drain_timeout_s": DRAIN_S})
    with SpangateProcess(config) as proc:
        received, code = stream_outliving_the_drain(proc)
        assert code == 0
        assert b"[DONE]" not in received  # cut, not finished
        assert b"spangate is shutting down" in received.rsplit(b'data: {"error"', 1)[-1]
        assert received.endswith(b"\r\n0\r\n\r\n")  # the chunked response ended
        completed = next(e for e in proc.logs() if e["event"] == "request.completed")
        assert completed["error_type"] == completed["attempts"][0]["error_type"] == "shutdown"
        drained = next(e for e in proc.logs() if e["event"] == "spangate.drain_timeout")
        assert drained["abandoned"] == 1
        logged = [entry["event"] for entry in proc.logs()]
        assert logged.index("spangate.drain_timeout") < logged.index("request.completed")
        assert logged.index("request.completed") < logged.index("spangate.stopped")
        assert "Traceback" not in proc.raw_output()


def call_openai(base_url: str) -> None:
    with openai.OpenAI(base_url=base_url + "/v1", api_key="k", max_retries=0) as client:
        client.chat.completions.create(model=GPT, messages=HELLO)


def call_anthropic(base_url: str) -> None:
    with anthropic.Anthropic(base_url=base_url, api_key="k", max_retries=0) as client:
        client.messages.create(model=CLAUDE, max_tokens=16, messages=HELLO)


@pytest.mark.parametrize(
    ("call", "error_type"),
    [(call_openai, "server_error"), (call_anthropic, "overloaded_error")],
    ids=["openai", "anthropic"],
)
def test_a_request_still_before_its_commit_point_when_the_drain_runs_out_gets_503(
    call: Callable[[str], None], error_type: str, fake: FakeProvider
) -> None:
    """A request still waiting for its provider's answer (nothing sent to its client yet)
    when server.drain_timeout_s runs out is answered rather than dropped: the SDK raises a
    503 in its wire format saying spangate is shutting down, with Retry-After and
    Connection: close, and the request and its attempt are recorded as `shutdown`, not
    as a client that left."""
    fake.script(delay(60))
    config = basic_config(fake, server={"drain_timeout_s": 0.5})
    with SpangateProcess(config) as proc, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(call, proc.url)
        assert fake.wait_for_requests(1, within=10)
        proc.terminate()
        error = pending.exception(timeout=20)
        assert proc.wait(20) == 0
        logged = proc.logs()
        assert "Traceback" not in proc.raw_output()
    assert isinstance(error, openai.APIStatusError | anthropic.APIStatusError), error
    assert error.status_code == 503
    assert error.response.headers["retry-after"] == "1"
    assert error.response.headers["connection"] == "close"
    body = error.body
    assert isinstance(body, dict)
    inner = body.get("error", body)
    assert inner["type"] == error_type
    assert "spangate is shutting down" in inner["message"] and "retry" in inner["message"]
    completed = next(e for e in logged if e["event"] == "request.completed")
    assert (completed["status"], completed["error_type"]) == (503, "shutdown")
    assert completed["attempts"][0]["error_type"] == "shutdown"
