"""The backend's HTTP server: thin routes, the error middleware, and `semcache backend`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from semcache.embeddings.settings import EmbeddingSettings
from semcache.proxy.gc_tuning import tune_gc

from . import apis, protocol
from .embedding import Embedder, EmbeddingsUnavailable
from .engine import Engine
from .errors import BackendError, InvalidRequest, ModelLoadError
from .serving import Completer
from .settings import BackendSettings
from .timing import GcPauses

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", BackendSettings)
ENGINE = web.AppKey("engine", Engine)
COMPLETER = web.AppKey("completer", Completer)
GC_PAUSES = web.AppKey("gc_pauses", GcPauses)
EMBEDDER = web.AppKey("embedder", asyncio.Task)
"""The encoder's loading task: /v1/embeddings awaits it, so requests that arrive while the
encoder loads wait for it instead of failing, and a failed load fails them with a 503."""

# How often a non-streaming request checks that its client is still connected.
DISCONNECT_POLL_S = 0.25


def _error(request: web.Request, status: int, message: str, type_: str, code: str,
           param: str | None = None) -> web.Response:
    if request.path.startswith("/v1/messages"):  # Anthropic's clients read their own shape
        if param is not None:
            message = f"{param}: {message}"
        return web.json_response(apis.anthropic_error(status, message), status=status)
    return web.json_response(protocol.error_body(message, type_, code, param), status=status)


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error leaves in the OpenAI shape (Anthropic's under /v1/messages); unexpected
    ones without their details."""
    try:
        return await handler(request)
    except BackendError as e:
        param = getattr(e, "param", None)
        return _error(request, e.status, str(e), e.type, e.code, param)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _error(request, e.status, e.reason, "invalid_request_error", str(e.status))
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unexpected error serving %s", request.path)
        return _error(request, 500, "internal error in the inference backend", "server_error",
                      "internal_error")


async def _body(request: web.Request) -> Any:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidRequest("the request body is not valid JSON") from e


Whole = Callable[[Completer, protocol.CompletionRequest], Awaitable[dict]]
"""A route's non-streaming answer."""
Events = Callable[[Completer, protocol.CompletionRequest, tuple], AsyncIterator[bytes]]
"""A route's event stream, the SSE bytes of each event, over the opened sequences."""


async def _chat_events(completer: Completer, req: protocol.CompletionRequest,
                       opened: tuple) -> AsyncIterator[bytes]:
    events: AsyncIterator[dict] = completer.stream_events(req, opened)
    try:
        async for payload in events:
            yield b"data: " + json.dumps(payload).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def chat_completions(request: web.Request) -> web.StreamResponse:
    marks = {"arrived": time.perf_counter()}
    req = protocol.parse_request(await _body(request), chat=True)
    return await _serve(request, req, marks, Completer.complete, _chat_events)


async def completions(request: web.Request) -> web.StreamResponse:
    marks = {"arrived": time.perf_counter()}
    req = protocol.parse_request(await _body(request), chat=False)
    return await _serve(request, req, marks, Completer.complete, _chat_events)


async def responses(request: web.Request) -> web.StreamResponse:
    """The OpenAI Responses API over the chat engine (apis.py)."""
    marks = {"arrived": time.perf_counter()}
    body = await _body(request)
    req = apis.parse_responses(body)
    return await _serve(request, req, marks,
                        lambda c, r: apis.responses_whole(c, r, body),
                        lambda c, r, o: apis.responses_events(c, r, o, body))


async def messages(request: web.Request) -> web.StreamResponse:
    """The Anthropic Messages API over the chat engine (apis.py)."""
    marks = {"arrived": time.perf_counter()}
    body = await _body(request)
    req = apis.parse_messages(body)
    return await _serve(request, req, marks,
                        lambda c, r: apis.messages_whole(c, r, body),
                        lambda c, r, o: apis.messages_events(c, r, o, body))


async def _serve(request: web.Request, req: protocol.CompletionRequest,
                 marks: dict[str, float], whole: Whole, events: Events) -> web.StreamResponse:
    completer = request.app[COMPLETER]
    marks["parsed"] = time.perf_counter()
    if req.stream:
        return await _stream(request, req, completer, marks, events)
    task = asyncio.ensure_future(whole(completer, req))
    try:
        # aiohttp does not cancel handlers when the client leaves, so watch the connection:
        # a sequence nobody will read must free its slot.
        while not task.done():
            await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if request.transport is None or request.transport.is_closing():
                task.cancel()
                raise ConnectionResetError("client disconnected")
        return web.json_response(task.result())
    finally:
        task.cancel()


async def _stream(request: web.Request, req: protocol.CompletionRequest,
                  completer: Completer, marks: dict[str, float],
                  render: Events) -> web.StreamResponse:
    opened = await completer.open(req, marks)  # 429/400 still possible, before any header
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
    events = render(completer, req, opened)
    try:
        await response.prepare(request)
        async for event in events:
            await response.write(event)
            if "text" in marks and "written" not in marks:  # the first token's chunk
                marks["written"] = time.perf_counter()
                request.app[ENGINE].ttft.add(marks, prompt_tokens=opened[0][0],
                                             cached_tokens=opened[1][0].seq.cached)
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        log.debug("client left a stream; its sequences are cancelled")
        raise
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    return response


async def embeddings(request: web.Request) -> web.Response:
    req = protocol.parse_embedding_request(await _body(request))
    embedder = await _embedder(request.app)
    return web.Response(body=await embedder.embed(req), content_type="application/json")


async def _embedder(app: web.Application) -> Embedder:
    loading = app[EMBEDDER]
    try:
        return await asyncio.shield(loading)  # one client leaving must not cancel the load
    except Exception as e:
        raise EmbeddingsUnavailable("the encoder behind /v1/embeddings could not be loaded"
                                    ) from e


async def models(request: web.Request) -> web.Response:
    name = request.app[COMPLETER].model_name
    return web.json_response({"object": "list", "data": [
        {"id": name, "object": "model", "created": int(time.time()), "owned_by": "semcache"}]})


async def healthz(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    if not engine.healthy:
        return web.json_response({"status": "unhealthy"}, status=503)
    return web.json_response({"status": "ok", **engine.stats(),
                              "embeddings": _embeddings_state(request.app),
                              "gc": request.app[GC_PAUSES].summary()})


def _embeddings_state(app: web.Application) -> str:
    loading = app.get(EMBEDDER)
    if loading is None:
        return "off"
    if not loading.done():
        return "loading"
    return "ready" if not loading.cancelled() and loading.exception() is None else "unavailable"


def build_app(settings: BackendSettings, engine: Engine) -> web.Application:
    """The backend app over an engine built from a loaded model (see `build_engine`).

    The app starts the engine's worker on start-up and stops it on clean-up."""
    app = web.Application(middlewares=[errors_middleware])
    app[SETTINGS] = settings
    app[ENGINE] = engine
    app[COMPLETER] = Completer(engine, engine.tokenizer, engine.model_name,
                               settings.max_tokens_for(engine.runner.device.type))

    app[GC_PAUSES] = pauses = GcPauses()

    async def engine_ctx(app: web.Application) -> AsyncIterator[None]:
        engine.start()
        pauses.install()
        yield
        pauses.remove()
        await asyncio.get_running_loop().run_in_executor(None, engine.stop)

    async def embedder_ctx(app: web.Application) -> AsyncIterator[None]:
        # Loaded beside the engine, not before it: completions are served meanwhile.
        loading = asyncio.ensure_future(Embedder.open(_embedding_settings(settings),
                                                      settings.data_dir))
        loading.add_done_callback(_log_encoder)
        app[EMBEDDER] = loading
        yield
        if loading.done() and not loading.cancelled() and loading.exception() is None:
            await loading.result().close()
        else:
            loading.cancel()

    app.cleanup_ctx.append(engine_ctx)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/responses", responses)
    app.router.add_post("/v1/messages", messages)
    if settings.embedding_model != "off":
        app.cleanup_ctx.append(embedder_ctx)
        app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/healthz", healthz)
    return app


def _embedding_settings(settings: BackendSettings) -> EmbeddingSettings:
    # The encoder follows the backend's device where it can (onnxruntime-gpu on CUDA), and
    # stays on the CPU when the backend is told to.
    device = "cpu" if settings.device == "cpu" else "auto"
    return EmbeddingSettings(model=settings.embedding_model, device=device)


def _log_encoder(loading: asyncio.Task) -> None:
    if loading.cancelled():
        return
    if loading.exception() is not None:
        log.error("no /v1/embeddings: the encoder could not be loaded: %s", loading.exception())
    else:
        log.info("/v1/embeddings served by %s", loading.result().model)


def build_engine(model: Any, tokenizer: Any, settings: BackendSettings,
                 name: str | None = None, draft_model: Any = None) -> Engine:
    """An engine over an already loaded causal LM (tests pass a tiny one), and over a
    loaded draft model when settings.speculative is "model"."""
    from .decoding import Decoder, Speculation
    from .prefix_cache import BLOCK_TOKENS, PrefixCache
    from .runner import ModelRunner
    from .speculative import DraftModel

    k = 0 if settings.speculative == "off" else settings.speculative_tokens
    blocks = settings.prefix_cache_tokens // BLOCK_TOKENS
    runner = ModelRunner(model, slots=settings.max_batch, max_seq_len=settings.max_seq_len,
                         cuda_graphs=settings.cuda_graphs, max_draft=k, prefix_blocks=blocks)
    draft = None
    if settings.speculative == "model":
        if draft_model is None:
            raise ModelLoadError("backend.speculative = model, but no draft model was loaded")
        draft_runner = ModelRunner(draft_model, slots=settings.max_batch,
                                   max_seq_len=settings.max_seq_len,
                                   cuda_graphs=settings.cuda_graphs, max_draft=k,
                                   verifies=False)
        if draft_runner.vocab_size != runner.vocab_size:
            raise ModelLoadError(f"the draft model's vocabulary ({draft_runner.vocab_size}) is "
                                 f"not the model's ({runner.vocab_size})")
        draft = DraftModel(draft_runner, k)
    speculation = Speculation(
        mode=settings.speculative, tokens=k,
        ngram_sizes=tuple(range(settings.speculative_ngram_max,
                                settings.speculative_ngram_min - 1, -1)),
        step_tokens=settings.step_tokens_for(runner.device.type))
    decoder = Decoder(runner, prefix_cache=PrefixCache(blocks) if blocks else None,
                      speculation=speculation, draft=draft)
    eos = _eos_ids(model, tokenizer)
    return Engine(decoder, eos_token_ids=eos, max_queue=settings.max_queue,
                  max_prefill_tokens=settings.max_prefill_tokens, threads=settings.threads,
                  tokenizer=tokenizer,
                  model_name=settings.model_name or name or type(model).__name__)


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None)
        ids.update(value if isinstance(value, list) else [] if value is None else [value])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def parse_args(argv: list[str]) -> BackendSettings:
    parser = argparse.ArgumentParser(prog="semcache backend",
                                     description="the bundled OpenAI-compatible LLM server")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--data-dir", dest="data_dir")
    parser.add_argument("--model", help="'packaged' or a local Hugging Face model folder")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--max-batch", dest="max_batch", type=int)
    parser.add_argument("--max-queue", dest="max_queue", type=int)
    parser.add_argument("--max-seq-len", dest="max_seq_len", type=int)
    parser.add_argument("--default-max-tokens", dest="default_max_tokens", type=int)
    parser.add_argument("--max-prefill-tokens", dest="max_prefill_tokens", type=int)
    parser.add_argument("--threads", type=int, help="torch threads on CPU (0: all cores)")
    parser.add_argument("--model-name", dest="model_name", help="model id to report")
    parser.add_argument("--embedding-model", dest="embedding_model",
                        help="encoder of /v1/embeddings: 'packaged', a local folder, or 'off'")
    parser.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                        default=None)
    parser.add_argument("--speculative", choices=["ngram", "model", "off"])
    parser.add_argument("--speculative-tokens", dest="speculative_tokens", type=int)
    parser.add_argument("--speculative-ngram-max", dest="speculative_ngram_max", type=int)
    parser.add_argument("--speculative-ngram-min", dest="speculative_ngram_min", type=int)
    parser.add_argument("--speculative-step-tokens", dest="speculative_step_tokens", type=int)
    parser.add_argument("--draft-model", dest="draft_model",
                        help="local Hugging Face folder of a smaller model, same tokenizer")
    parser.add_argument("--prefix-cache-tokens", dest="prefix_cache_tokens", type=int,
                        help="tokens of KV kept for shared prefixes (0: off)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    try:
        return dataclasses.replace(BackendSettings(), **overrides)
    except ValueError as e:
        parser.error(str(e))


def _listen_fd(argv: list[str]) -> tuple[int | None, list[str]]:
    """`--listen-fd N`: serve on an inherited listening socket (`semcache serve` binds it, so
    the port is held while the model loads); the rest of the arguments."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--listen-fd", dest="listen_fd", type=int)
    known, rest = parser.parse_known_args(argv)
    return known.listen_fd, rest


def main(argv: list[str]) -> int:
    """`semcache backend [--host H] [--port N] [--data-dir DIR] [--model PATH] ...`"""
    listen_fd, argv = _listen_fd(argv)
    settings = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from .model import load_model

    try:
        loaded = load_model(settings.model, settings.data_dir, settings.device)
        draft = None
        if settings.speculative == "model":
            draft = load_model(settings.draft_model, settings.data_dir, settings.device).model
        engine = build_engine(loaded.model, loaded.tokenizer, settings, loaded.name, draft)
        log.info("warming up %s on %s", loaded.name, loaded.device)
        engine.decoder.warmup()
    except BackendError as e:
        log.error("%s", e)
        return 1
    # torch and transformers leave ~400,000 objects that live as long as the process; a
    # full collection walks them all with every thread stopped (1.1 s on a shared 2-core
    # CPU), and would land on some request's way to its first token. Freeze them.
    tune_gc()
    app = build_app(settings, engine)
    # No access log: at thousands of streamed tokens a second the backend's one line per
    # request is noise next to the proxy's own log and metrics.
    # A socket of its own otherwise; with port 0 the kernel picks one and the log line says it.
    sock = (socket.socket(fileno=listen_fd) if listen_fd is not None
            else socket.create_server((settings.host, settings.port)))
    host, port = sock.getsockname()[:2]
    web.run_app(app, sock=sock, handler_cancellation=True, access_log=None,
                print=lambda _: log.info("serving %s on http://%s:%s", loaded.name, host, port))
    return 0
