"""CLI command ``serve``: the routing gateway (registered on :data:`tokenrace.cli.app`)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from tokenrace.cli import StoreOpt, UserError, _user_errors, app, console, run_async
from tokenrace.config import EndpointConfig, find_config, load_config
from tokenrace.store import Store

if TYPE_CHECKING:
    from tokenrace.gateway.app import GatewayApp
    from tokenrace.gateway.server import GatewayServer

GRACEFUL_S = 5.0  # calls in flight at Ctrl-C/SIGTERM get this long to finish before they are cancelled
SWITCH_INTERVAL_S = 0.0002  # as during a benchmark: the record writer must not hold the GIL for 5 ms


@app.command()
def serve(
    config: Annotated[str | None, typer.Option("--config", help="endpoints, routes and gateway section")] = None,
    host: Annotated[str | None, typer.Option("--host", help="listen address \\[default: gateway.host]")] = None,
    port: Annotated[
        int | None, typer.Option("--port", "-p", help="listen port, 0 for a free one \\[default: gateway.port]")
    ] = None,
    store: StoreOpt = None,
) -> None:
    """Run the routing gateway: OpenAI- and Anthropic-compatible endpoints that route every call.

    Every call is recorded like a benchmark request (one gateway run per process, see `tokenrace usage`);
    local engines of the config are started for the gateway's lifetime. Ctrl-C or SIGTERM stops it.
    """
    from tokenrace.engines.local import running_endpoint
    from tokenrace.gateway.app import GatewayApp
    from tokenrace.gateway.server import GatewayServer, StartupFailed

    with _user_errors():
        path = find_config(config)
        if path is None:
            raise UserError(
                "no config found (looked for --config, $TOKENRACE_CONFIG, ./tokenrace.yaml, ./tokenrace.toml); "
                "the gateway needs endpoints (and routes) from one; see tokenrace.example.yaml"
            )
        cfg = load_config(path)
        listen_host = host or cfg.gateway.host
        listen_port = cfg.gateway.port if port is None else port
        if not 0 <= listen_port <= 65535:
            raise UserError(f"--port must be in 0..65535, got {listen_port}")
        db = Store.open(store)
    with contextlib.ExitStack() as stack, _user_errors():
        endpoints: dict[str, EndpointConfig] = {}
        for endpoint in cfg.endpoints:
            running, _info = stack.enter_context(running_endpoint(endpoint, log=lambda line: console.print(line)))
            endpoints[endpoint.name] = running
        gateway = GatewayApp(
            cfg, db, endpoints=endpoints, args={"config": str(path), "host": listen_host, "port": listen_port}
        )
        sock = _bind(listen_host, listen_port)
        listen_port = sock.getsockname()[1]
        url = f"http://{_url_host(listen_host)}:{listen_port}"
        console.print(f"tokenrace gateway on [bold]{url}[/] (OpenAI: {url}/v1, Anthropic: {url})", highlight=False)
        for route in cfg.routes:
            tiers = ", ".join(route.endpoints) + (f" | premium: {', '.join(route.premium)}" if route.premium else "")
            console.print(f"  route {route.name}: {route.policy} over {tiers}", highlight=False)
        for name, ep in endpoints.items():
            console.print(f"  endpoint {name}: {ep.api} {ep.model}", highlight=False)
        if not cfg.gateway.keys:
            console.print("  no gateway keys configured: anyone who can reach the port can call it", style="yellow")
        server = GatewayServer(gateway, graceful_s=GRACEFUL_S)
        saved = sys.getswitchinterval()
        sys.setswitchinterval(min(saved, SWITCH_INTERVAL_S))
        _settle_heap()
        try:
            run_async(_serve(server, sock, gateway))
        except StartupFailed as exc:
            raise UserError(str(exc)) from None
        finally:
            sys.setswitchinterval(saved)
            db.close()


def _settle_heap() -> None:
    """Load what every call needs, then freeze the start-up heap out of the garbage collector's scans.

    The tokenizer's tables and the imported modules are hundreds of thousands of long-lived objects; a full
    collection scanning them pauses the event loop for milliseconds, which lands in the p99 of whatever
    calls are in flight. Frozen, they are never scanned; what calls allocate is still collected.
    """
    from tokenrace.tokenizer import count_tokens

    count_tokens("warm up the tokenizer")
    gc.collect()
    gc.freeze()


async def _serve(server: GatewayServer, sock: socket.socket, gateway: GatewayApp) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, server.request_exit)
    task = asyncio.create_task(server.serve([sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    telemetry = gateway.telemetry
    if server.started:
        run_id = telemetry.run.run_id if telemetry.run is not None else "?"
        console.print(f"ready: recording into run {run_id}; Ctrl-C to stop", highlight=False)
    await task
    counts = telemetry.counts
    console.print(
        f"stopped: {sum(counts.values())} calls ({counts.get('ok', 0)} ok, {counts.get('failed', 0)} failed, "
        f"{counts.get('incomplete', 0)} cancelled or cut off), {telemetry.refused} refused before routing; "
        "run complete",
        highlight=False,
    )


def _bind(host: str, port: int) -> socket.socket:
    """Bind before the server starts, so a taken port is one clear line rather than a log message."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UserError(f"cannot listen on {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
