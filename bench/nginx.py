"""nginx as the fake upstream (canned answers) and as a plain reverse-proxy hop.

One process each (`master_process off`, one worker): its PID is the process
whose CPU we read. Access logs are off so that nginx is never the bottleneck.
"""

from __future__ import annotations

import subprocess

from bench import canned
from bench.procs import LOAD_CORE, PROXY_CORE, Proc, Procs, free_port, wait_tcp

_MAIN = """daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{server}
}}
"""

_UPSTREAM = """    upstream bench_chunks {{
        server 127.0.0.1:{chunks_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /v1/chat/completions {{
            if ($http_{chunks_var}) {{ rewrite ^ /chunks/v1/chat/completions last; }}
            if ($http_{stream_var}) {{ rewrite ^ /stream/v1/chat/completions last; }}
            default_type application/json;
{json_parts}
            return 200 "{json_vars}";
        }}
        location = /stream/v1/chat/completions {{
            default_type text/event-stream;
            add_header Cache-Control no-cache;
{sse_parts}
            return 200 "{sse_vars}";
        }}
        location = /chunks/v1/chat/completions {{
            proxy_pass http://bench_chunks;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}"""

_HOP = """    upstream bench_upstream {{
        server 127.0.0.1:{upstream_port};
        keepalive 256;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}"""


#: nginx refuses config tokens over 4 KiB: long bodies are split over several variables.
_PIECE = 1500


def _quote(text: str) -> str:
    """Text for a single-quoted nginx string (nginx turns `\\n` back into a newline)."""
    if "'" in text or "$" in text or "\\" in text:
        raise ValueError("canned bodies must not contain quotes, `$` or backslashes")
    return text.replace("\n", "\\n")


def _pieces(prefix: str, body: bytes) -> tuple[str, str]:
    """`set $prefix_N '...';` lines and the `$prefix_0$prefix_1...` expression joining them."""
    text = body.decode()
    chunks = [text[i : i + _PIECE] for i in range(0, len(text), _PIECE)]
    names = [f"${prefix}_{i}" for i in range(len(chunks))]
    sets = [f"            set {n} '{_quote(c)}';" for n, c in zip(names, chunks, strict=True)]
    return "\n".join(sets), "".join(names)


def _start(procs: Procs, name: str, server: str, core: str, port: int) -> Proc:
    directory = procs.workdir / name
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "nginx.conf"
    conf.write_text(_MAIN.format(dir=directory, server=server))
    argv = ["nginx", "-c", str(conf), "-p", str(directory), "-e", str(directory / "error.log")]
    proc = procs.start(name, argv, core)
    wait_tcp(proc, port)
    return proc


def start_upstream(procs: Procs, chunks_port: int = 0) -> tuple[Proc, int]:
    """The canned OpenAI upstream on the load core; returns the process and its port.

    Requests with the chunks header are passed to `chunks_port` (bench/slow_stream.py
    sending one event per write), unbuffered: a stream that arrives chunk by chunk.
    """
    port = free_port()
    json_parts, json_vars = _pieces("json", canned.chat_completion())
    sse_parts, sse_vars = _pieces("sse", canned.sse_stream())
    server = _UPSTREAM.format(
        port=port,
        stream_var=canned.STREAM_HEADER.replace("-", "_"),
        chunks_var=canned.CHUNKS_HEADER.replace("-", "_"),
        chunks_port=chunks_port or free_port(),  # nothing listens: such a request gets a 502
        json_parts=json_parts,
        json_vars=json_vars,
        sse_parts=sse_parts,
        sse_vars=sse_vars,
    )
    return _start(procs, "nginx-upstream", server, LOAD_CORE, port), port


def start_hop(procs: Procs, upstream_port: int) -> tuple[Proc, int]:
    """nginx as a plain keep-alive reverse proxy, pinned like the proxy under test."""
    port = free_port()
    server = _HOP.format(port=port, upstream_port=upstream_port)
    return _start(procs, "nginx-hop", server, PROXY_CORE, port), port


def version() -> str:
    out = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False)
    return (out.stderr or out.stdout).strip().removeprefix("nginx version: ")
