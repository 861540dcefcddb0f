"""The gateway's ASGI application: routes, the life cycle of a call, and the run it records into.

A plain ASGI callable (no framework: a dict from path to handler), served in one process by the gateway's
own server (:mod:`tokenrace.gateway.server`, whose direct path streams use) or by any ASGI server. Routes:

=========================  ===========================================================================
``POST /v1/chat/completions``  OpenAI chat, streamed or not
``POST /v1/completions``       OpenAI completions: completions endpoints, or chat ones for a plain prompt
``POST /v1/messages``          Anthropic Messages, streamed or not (``x-api-key`` accepted as the key)
``GET  /v1/models``            routes and endpoints (OpenAI list shape, with Anthropic's fields too)
``POST /v1/feedback``          ``{"request_id", "score"}``: a quality signal in [0, 1] for an earlier call
``GET  /metrics``              Prometheus exposition (no key needed: keep the gateway on a trusted network)
``GET  /health``               liveness
=========================  ===========================================================================

Life cycle of a generation call: the body is refused with 413 past ``gateway.max_body_bytes`` (at once
when ``Content-Length`` says so, before anything is read); the key (``Authorization: Bearer`` or
``x-api-key``) is checked; the JSON is parsed (400 in the API's own error shape); the router plans the
candidates from the model name and the overrides (body ``route``/``sort``/``max_price``, removed before
forwarding, or headers ``x-tokenrace-route``/``-sort``/``-max-price``; the body wins); the key is admitted
with an estimate (prompt characters / 4 + ``max_tokens`` or 1024, at the first candidate's price); the
proxy answers; the reservation is settled with the real tokens and cost (or released when nothing was
answered). Every response carries ``x-tokenrace-endpoint``, ``x-tokenrace-route-reason`` and
``x-tokenrace-request-id``.

A client that disconnects (the server reports ``http.disconnect`` to a ``receive`` waiting beside the call)
cancels the call at once: the upstream connection is aborted and the record says ``cancelled``.

Feedback is stored in the store's ``feedback`` table (request id, run id, score, key id, time), not in the
request's record, which is written once and never rewritten: the join is left to readers
(``Store.feedback(run_id)``; the latest score per request wins). Only calls this process served (the
latest ``RECENT_REQUESTS``) take feedback, and with keys configured only from the key that made the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from time import perf_counter
from typing import Any

import orjson

from tokenrace.config import Config, ConfigError, EndpointConfig
from tokenrace.gateway.access import AccessControl, AccessDenied, KeyState, Reservation, spent_by_key
from tokenrace.gateway.breaker import CircuitBreaker
from tokenrace.gateway.checks import automatic_checks
from tokenrace.gateway.difficulty import (
    DifficultyEstimator,
    HeuristicDifficulty,
    last_user_text,
    message_text,
    prompt_fingerprint,
)
from tokenrace.gateway.livestats import LiveStats
from tokenrace.gateway.policies import Overrides, Router, UnknownModelError
from tokenrace.gateway.prommetrics import GatewayMetrics
from tokenrace.gateway.proxy import CHAT, COMPLETIONS, MESSAGES, Call, Proxy, error_body, error_type, stream_error
from tokenrace.gateway.telemetry import Telemetry, billed_tokens, cancelled, record_cost
from tokenrace.records import ERR_CANCELLED, ERR_HTTP_4XX, ERR_HTTP_5XX, FAILED, OK, RequestRecord
from tokenrace.store import Store

__all__ = ["DEFAULT_MAX_TOKENS", "GatewayApp"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

DEFAULT_MAX_TOKENS = 1024  # the admission estimate's output when the call sets no max_tokens
_CHARS_PER_TOKEN = 4

_JSON = (b"content-type", b"application/json")
_NO_ENDPOINT = (b"x-tokenrace-endpoint", b"none")
_NOT_ROUTED = (b"x-tokenrace-route-reason", b"not routed")
_CLOSE = (b"connection", b"close")
_OVERRIDE_FIELDS = ("route", "sort", "max_price")


class _BadRequest(Exception):
    """A request the gateway refuses before routing; status, message and a machine code for the body."""

    def __init__(self, status: int, message: str, code: str | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.retry_after_s = retry_after_s


def _difficulty_estimator(setting: str | None) -> DifficultyEstimator:
    """``gateway.difficulty``: the heuristic, or a trained router file (a bad file stops start-up, named)."""
    if setting is None or setting == "heuristic":
        return HeuristicDifficulty()
    from tokenrace.routing.estimator import load_estimator  # numpy and the routers only when configured

    try:
        return load_estimator(Path(setting).expanduser())
    except ValueError as exc:
        raise ConfigError(str(exc), field="gateway.difficulty") from None


class GatewayApp:
    """``tokenrace serve``'s ASGI app: one per process, holding the router, the pools and the run.

    ``endpoints`` are the endpoints as they run (local engines with their real URL); by default the
    config's. The run is created at lifespan start-up and completed at shutdown.
    """

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        endpoints: Mapping[str, EndpointConfig] | None = None,
        environ: Mapping[str, str] | None = None,
        args: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        gateway = config.gateway
        eps = dict(endpoints) if endpoints is not None else {ep.name: ep for ep in config.endpoints}
        self.endpoints = eps
        self.stats = LiveStats(gateway.ewma_alpha)
        self.breaker = CircuitBreaker(gateway.breaker.failures, gateway.breaker.cooldown_s)
        self.metrics = GatewayMetrics()
        self.router = Router(config, self.stats, self.breaker, _difficulty_estimator(gateway.difficulty))
        spent = spent_by_key(store) if gateway.keys else None
        self.access = AccessControl(gateway.keys, environ=environ, spent=spent)
        self.telemetry = Telemetry(
            store,
            endpoints=eps,
            routes=config.routes,
            stats=self.stats,
            breaker=self.breaker,
            metrics=self.metrics,
            args=args,
        )
        self.proxy = Proxy(eps, self.telemetry, environ=environ)
        self.max_body = gateway.max_body_bytes
        self.record_prompts = gateway.record_prompts
        self._handlers: dict[str, tuple[str, Callable[[Scope, Receive, Send], Awaitable[None]]]] = {
            "/v1/chat/completions": ("POST", self._chat),
            "/v1/completions": ("POST", self._completions),
            "/v1/messages": ("POST", self._messages),
            "/v1/models": ("GET", self._models),
            "/v1/feedback": ("POST", self._feedback),
            "/metrics": ("GET", self._metrics),
            "/health": ("GET", self._health),
        }
        self._models_body = self._model_list()

    # -- ASGI ---------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            entry = self._handlers.get(path) or self._handlers.get(path.rstrip("/"))
            if entry is None:
                api = MESSAGES if path.endswith("/messages") else CHAT
                body = error_body(404, api, f"unknown path {scope['method']} {path}", "unknown_url")
                await _reply(send, 404, body, [_NO_ENDPOINT])
                return
            method, handler = entry
            if scope["method"] != method:
                body = error_body(405, CHAT, f"use {method} on {path}", "method_not_allowed")
                await _reply(send, 405, body, [_NO_ENDPOINT, (b"allow", method.encode())])
                return
            await handler(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # reported by the server, which then exits
                    await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        """Create the gateway run (its row is in the store before the first call)."""
        await asyncio.to_thread(self.telemetry.start)

    async def shutdown(self, status: str = "complete") -> None:
        """Close the upstream pools, drain the record writer and complete the run."""
        await self.proxy.close()
        await asyncio.to_thread(self.telemetry.close, status)

    # -- generation calls ---------------------------------------------------------------------------

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._generate(scope, receive, send, CHAT)

    async def _completions(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._generate(scope, receive, send, COMPLETIONS)

    async def _messages(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._generate(scope, receive, send, MESSAGES)

    async def _generate(self, scope: Scope, receive: Receive, send: Send, client_api: str) -> None:
        arrival = perf_counter()
        tel = self.telemetry
        seq = tel.next_seq()
        request_id = f"{tel.run_id}-{seq}"
        presented: str | None = None
        length = -1
        route_h = sort_h = price_h = None
        anthropic: dict[str, str] | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                text = value.decode("latin-1")
                presented = text[7:] if text[:7].lower() == "bearer " else text
            elif name == b"x-api-key":
                if presented is None:
                    presented = value.decode("latin-1")
            elif name == b"content-length":
                length = int(value) if value.isdigit() else -1
            elif name.startswith(b"x-tokenrace-"):
                if name == b"x-tokenrace-route":
                    route_h = value.decode("latin-1").strip()
                elif name == b"x-tokenrace-sort":
                    sort_h = value.decode("latin-1").strip()
                elif name == b"x-tokenrace-max-price":
                    price_h = value.decode("latin-1").strip()
            elif name == b"anthropic-version" or name == b"anthropic-beta":
                if anthropic is None:
                    anthropic = {}
                anthropic[name.decode()] = value.decode("latin-1")
        key: KeyState | None = None
        try:
            if length > self.max_body:
                raise _BadRequest(413, f"request body of {length} bytes exceeds the limit of {self.max_body} bytes")
            if self.access.enabled:
                key = self._authenticate(presented)
            body = await self._read_json_object(receive)
            if body is None:
                return  # the client left while sending
            overrides = _overrides(body, route_h, sort_h, price_h)
            model = body.get("model")
            if not isinstance(model, str):
                model = ""
            messages = _plan_messages(client_api, body)
            try:
                plan = self.router.plan(model, messages, overrides)
            except UnknownModelError as exc:
                if not model and overrides.route is None:
                    raise _BadRequest(400, "model is required", "model_not_found") from None
                raise _BadRequest(404, str(exc), "model_not_found") from None
            except ValueError as exc:
                raise _BadRequest(400, str(exc)) from None
        except _BadRequest as exc:
            await self._refuse(send, client_api, request_id, exc, key.id if key is not None else None)
            return
        call = Call(client_api, body, send, arrival, request_id)
        extensions = scope.get("extensions")
        if extensions:
            call.direct = extensions.get("tokenrace.direct")
        call.plan = plan
        call.prompt_text = last_user_text(messages)
        call.reason = plan.reason
        call.key_id = key.id if key is not None else None
        call.anthropic_headers = anthropic
        reservation: Reservation | None = None
        if key is not None:
            try:
                reservation = self._admit(key, call)
            except AccessDenied as exc:
                refusal = _BadRequest(exc.status, exc.message, exc.code, exc.retry_after_s)
                await self._refuse(send, client_api, request_id, refusal, key.id)
                return
        task = call.task = asyncio.current_task()
        watcher = asyncio.ensure_future(receive())
        watcher.add_done_callback(lambda fut: _on_receive(call, fut))
        try:
            await self.proxy.run(call)
        except asyncio.CancelledError:
            # Ours (the client left) or the server's (shutdown past its grace period): either way this call
            # ends here, recorded as cancelled; a client still there is told so in its API's format.
            if task is not None:
                task.uncancel()
            if call.disconnected:
                self._finish(call, seq, reservation, "client disconnected")
                return
            self._finish(call, seq, reservation, "cancelled: the gateway is shutting down")
            await self._abandon(call)
            return
        except OSError:  # a server whose send raises once the client is gone (uvicorn's just returns)
            call.disconnected = True
            call.abort_upstream()
            self._finish(call, seq, reservation, "client disconnected")
            return
        except BaseException:
            call.done = True
            call.abort_upstream()
            if reservation is not None:
                reservation.release()
            raise
        self._finish(call, seq, reservation)

    async def _abandon(self, call: Call) -> None:
        """End a call the gateway itself stops: a 503, or an error event that closes the stream."""
        message = "the gateway is shutting down"
        with contextlib.suppress(Exception):
            if not call.committed:
                call.committed = call.done = True
                body = error_body(503, call.client_api, message, "shutting_down")
                await _reply(call.send, 503, body, [_NO_ENDPOINT, _CLOSE])
            elif not call.done:
                call.done = True
                event = stream_error(call.client_api, ERR_CANCELLED, message)
                await call.send({"type": "http.response.body", "body": event, "more_body": False})

    def _authenticate(self, presented: str | None) -> KeyState | None:
        try:
            return self.access.authenticate(presented)
        except AccessDenied as exc:
            raise _BadRequest(exc.status, exc.message, exc.code, exc.retry_after_s) from None

    def _admit(self, key: KeyState, call: Call) -> Reservation:
        plan = call.plan
        assert plan is not None
        max_tokens = call.max_tokens or DEFAULT_MAX_TOKENS
        prompt = _prompt_chars(call.client_api, call.body) // _CHARS_PER_TOKEN
        price = self.proxy.upstreams[plan.candidates[0].name].price if plan.candidates else None
        est_cost = None if price is None else (prompt * price.input + max_tokens * price.output) * 1e-6
        return self.access.admit(key, route=plan.route, est_tokens=prompt + max_tokens, est_cost_usd=est_cost)

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None if the client disconnected; _BadRequest 413 past the limit."""
        message = await receive()
        if message["type"] != "http.request":
            return None
        body = message.get("body", b"")
        if not message.get("more_body"):
            if len(body) > self.max_body:
                raise _BadRequest(413, f"request body exceeds the limit of {self.max_body} bytes")
            return body
        parts = [body]
        size = len(body)
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _BadRequest(413, f"request body exceeds the limit of {self.max_body} bytes")
            parts.append(chunk)
            if not message.get("more_body"):
                return b"".join(parts)

    async def _read_json_object(self, receive: Receive) -> dict[str, Any] | None:
        """The body as a JSON object, or None if the client disconnected; _BadRequest 400/413 otherwise."""
        raw = await self._read_body(receive)
        if raw is None:
            return None
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _BadRequest(400, f"the request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise _BadRequest(400, "the request body must be a JSON object")
        return body

    async def _refuse(
        self, send: Send, client_api: str, request_id: str, exc: _BadRequest, key_id: str | None = None
    ) -> None:
        """An error before any routing: the API's error body and the gateway's headers. Counted (Prometheus
        ``tokenrace_gateway_refused``, the closing line) but not recorded: no endpoint was involved."""
        self.metrics.refused(exc.status, exc.code or error_type(exc.status, client_api), key_id)
        self.telemetry.refused += 1
        headers = [_NO_ENDPOINT, _NOT_ROUTED, (b"x-tokenrace-request-id", request_id.encode())]
        if exc.retry_after_s is not None:
            headers.append((b"retry-after", b"%d" % max(1, math.ceil(exc.retry_after_s))))
        if exc.status == 413:
            headers.append(_CLOSE)  # the rest of the body is not read: do not reuse the connection
        await _reply(send, exc.status, error_body(exc.status, client_api, exc.message, exc.code), headers)

    def _finish(self, call: Call, seq: int, reservation: Reservation | None, stopped: str | None = None) -> None:
        """Complete the call's record (whatever happened) and hand it to telemetry; settle the key."""
        tel = self.telemetry
        plan = call.plan
        assert plan is not None
        record = call.record
        if record is None:  # no upstream was tried
            failed = call.status or 503
            record = RequestRecord(
                run_id=tel.run_id,
                seq=seq,
                endpoint=call.endpoint or next(iter(plan.excluded), plan.route),
                api=call.client_api,
                model=str(call.body.get("model") or ""),
                workload="gateway",
                status=FAILED,
                error_category=ERR_HTTP_5XX if failed >= 500 else ERR_HTTP_4XX,
                error_detail=f"HTTP {failed} from the gateway: no upstream tried",
                http_status=failed,
                output_tokens_requested=call.max_tokens,
            )
            record.done_s = perf_counter() - tel.origin
        if stopped is not None:
            cancelled(record, stopped)
        record.seq = seq
        record.scheduled_s = record.sent_s = call.arrival - tel.origin
        up = self.proxy.upstreams.get(record.endpoint)
        cost = record_cost(record, up.price) if up is not None and call.record is not None else None
        extra = record.extra
        extra["route"] = plan.route
        extra["key_id"] = call.key_id
        extra["request_id"] = call.request_id
        extra["reason"] = plan.reason
        extra["attempts"] = call.attempts
        extra["cost_usd"] = cost
        extra["client_api"] = call.client_api
        extra["stream"] = call.stream
        extra["client_status"] = call.status
        extra["prompt_sha256"] = prompt_fingerprint(call.prompt_text)
        if self.record_prompts:
            extra["prompt"] = call.prompt_text
        if call.overhead_ms is not None and not call.attempts:
            extra["gateway_overhead_ms"] = round(call.overhead_ms, 3)
        if record.status == OK and (checks := automatic_checks(call.body, record)) is not None:
            extra["checks"] = checks
        if reservation is not None:
            if call.committed and call.status == 200:
                reservation.settle(billed_tokens(record), cost)
            else:
                reservation.release()
        tel.finish(record, plan.route, cost, call.key_id)

    # -- other routes -------------------------------------------------------------------------------

    async def _models(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.access.enabled:
            try:
                self._authenticate(_presented_key(scope))
            except _BadRequest as exc:
                await _reply(send, exc.status, error_body(exc.status, CHAT, exc.message, exc.code), [_NO_ENDPOINT])
                return
        await _reply(send, 200, self._models_body, [_NO_ENDPOINT])

    def _model_list(self) -> bytes:
        """Routes then endpoints, in OpenAI's list shape plus the fields Anthropic's SDK reads."""
        data = []
        routes = {r.name for r in self.config.routes}
        for name in self.router.model_names():
            kind = "route" if name in routes else "endpoint"
            data.append(
                {
                    "id": name,
                    "object": "model",
                    "type": "model",
                    "created": 0,
                    "created_at": "1970-01-01T00:00:00Z",
                    "owned_by": "tokenrace",
                    "display_name": f"{name} ({kind})",
                    "tokenrace_kind": kind,
                }
            )
        first = data[0]["id"] if data else None
        last = data[-1]["id"] if data else None
        return orjson.dumps({"object": "list", "data": data, "has_more": False, "first_id": first, "last_id": last})

    async def _feedback(self, scope: Scope, receive: Receive, send: Send) -> None:
        key_id: str | None = None
        try:
            if self.access.enabled:
                key = self._authenticate(_presented_key(scope))
                key_id = key.id if key is not None else None
            body = await self._read_json_object(receive)
            if body is None:
                return
            request_id = body.get("request_id")
            score = body.get("score")
            if not isinstance(request_id, str) or not request_id:
                raise _BadRequest(400, "request_id (the x-tokenrace-request-id of the call) is required")
            if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
                raise _BadRequest(400, "score must be a number in [0, 1]")
            known = self.telemetry.recent.get(request_id, _MISSING)
            if known is _MISSING or (self.access.enabled and known != key_id):
                raise _BadRequest(
                    404,
                    f"unknown request_id {request_id!r}: feedback is taken for calls this gateway served",
                    "not_found",
                )
        except _BadRequest as exc:
            await _reply(send, exc.status, error_body(exc.status, CHAT, exc.message, exc.code), [_NO_ENDPOINT])
            return
        run_id = self.telemetry.run_id
        await asyncio.to_thread(self.store.add_feedback, request_id, float(score), key_id, time.time(), run_id=run_id)
        body_out = orjson.dumps({"ok": True, "request_id": request_id, "score": float(score)})
        await _reply(send, 200, body_out, [_NO_ENDPOINT])

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        for name in self.endpoints:  # open -> half-open happens with time, not with an event
            self.metrics.set_breaker(name, self.breaker.state(name))
        payload, content_type = self.metrics.exposition()
        await _reply(send, 200, payload, [_NO_ENDPOINT], content_type=content_type.encode())

    async def _health(self, scope: Scope, receive: Receive, send: Send) -> None:
        run_id = self.telemetry.run.run_id if self.telemetry.run is not None else None
        await _reply(send, 200, orjson.dumps({"status": "ok", "run_id": run_id}), [_NO_ENDPOINT])


_MISSING = object()


def _on_receive(call: Call, fut: asyncio.Future[dict[str, Any]]) -> None:
    """``receive`` returned while the call runs: the client disconnected; cancel the call and its upstream."""
    if call.done or fut.cancelled():
        return
    try:
        message = fut.result()
    except Exception:
        message = {"type": "http.disconnect"}
    if message.get("type") != "http.disconnect":
        return
    call.disconnected = True
    call.abort_upstream()
    if call.task is not None:
        call.task.cancel()


async def _reply(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    content_type: bytes = b"application/json",
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", b"%d" % len(body)), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _presented_key(scope: Scope) -> str | None:
    presented = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            text = value.decode("latin-1")
            return text[7:] if text[:7].lower() == "bearer " else text
        if name == b"x-api-key":
            presented = value.decode("latin-1")
    return presented


def _overrides(body: dict[str, Any], route: str | None, sort: str | None, max_price: str | None) -> Overrides:
    """The client's routing wishes: body fields (removed: upstreams must not see them) over headers."""
    values: dict[str, Any] = {"route": route or None, "sort": sort or None, "max_price": max_price or None}
    for name in _OVERRIDE_FIELDS:
        if name in body:
            value = body.pop(name)
            if value is not None:
                values[name] = value
    if values["route"] is not None and not isinstance(values["route"], str):
        raise _BadRequest(400, "route must be a string")
    if values["sort"] is not None and not isinstance(values["sort"], str):
        raise _BadRequest(400, "sort must be a string")
    price = values["max_price"]
    if price is not None:
        try:
            if isinstance(price, bool):
                raise ValueError
            price = float(price)
        except (TypeError, ValueError):
            raise _BadRequest(400, f"max_price must be a number ($ per 1M output tokens), got {price!r}") from None
        if not math.isfinite(price) or price < 0:
            raise _BadRequest(400, f"max_price must be >= 0, got {price!r}")
    return Overrides(route=values["route"], sort=values["sort"], max_price=price)


def _plan_messages(client_api: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The conversation the router scores (cascade), in OpenAI's shape; validated enough to route."""
    if client_api == COMPLETIONS:
        prompt = body.get("prompt")
        if prompt is None:
            raise _BadRequest(400, "prompt is required")
        if isinstance(prompt, list):
            prompt = " ".join(p for p in prompt if isinstance(p, str))
        return [{"role": "user", "content": prompt if isinstance(prompt, str) else ""}]
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise _BadRequest(400, "messages is required and must be a list")
    if client_api == MESSAGES:
        system = body.get("system")
        if system:
            return [{"role": "system", "content": system}, *messages]
    return messages


def _prompt_chars(client_api: str, body: dict[str, Any]) -> int:
    """Characters of prompt text, for the admission estimate (images and tool schemas are not counted)."""
    if client_api == COMPLETIONS:
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            return len(prompt)
        if isinstance(prompt, list):
            return sum(len(p) for p in prompt if isinstance(p, str))
        return 0
    total = 0
    for message in body.get("messages") or ():
        if isinstance(message, dict):
            total += len(message_text(message))
    system = body.get("system")
    if isinstance(system, str):
        total += len(system)
    elif isinstance(system, list):
        total += len(message_text({"content": system}))
    return total
