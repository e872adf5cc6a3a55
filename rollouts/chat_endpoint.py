"""An OpenAI-compatible chat-completions endpoint served from k2rl's own rollout backend, on localhost.

Agent programs written against OpenAI's API (verifiers' harnesses, for one) drive their own
multi-turn loop; the trainer still has to train on exactly the tokens the policy sampled. So the
endpoint does not just answer: for every request it records the prompt's token ids, the sampled
token ids and their log-probabilities, under the request's session (the ``X-Session-ID`` header
verifiers sends, one per rollout). :func:`k2rl.rollouts.verifiers_env.trajectory_from_turns` turns a
session's turns back into one trajectory whose tool and environment tokens are masked out.

Continuing a session does not re-tokenise what the policy wrote: when a request repeats the
session's previous messages (the reply included, as the endpoint sent it), its prompt is the
previous context's token ids followed by the new messages rendered alone, the way k2rl's own engine
appends tool answers. A re-rendered assistant turn could tokenise differently from what was sampled.

What a request may contain is a small, checked subset of OpenAI's schema; anything else (another
model name, streaming, ``n > 1``, a sampling setting that differs from the recipe's, an unknown
field) is answered with a 400 whose message is one ``k2rl: error: ...`` line, never a traceback.
Replies carry tool calls in OpenAI's format, parsed from K2's tool-call section
(:func:`k2rl.rollouts.tool_calls.parse_turn`); calls the policy wrote too broken to execute are
left out of ``tool_calls`` (the turn then ends the episode, as a final answer would).
"""

from __future__ import annotations

import itertools
import json
import secrets
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from k2rl.rollouts.backends import Sampling
from k2rl.rollouts.tool_calls import parse_turn

SESSION_HEADER = "X-Session-ID"
SUPPORTED_FIELDS = frozenset({"model", "messages", "tools", "tool_choice", "max_tokens", "max_completion_tokens",
                              "temperature", "top_p", "stream", "n", "parallel_tool_calls", "user"})
ROLES = ("system", "user", "assistant", "tool")
PATHS = ("/v1/chat/completions", "/chat/completions")
MAX_BODY_BYTES = 16 * 2**20


class RequestError(Exception):
    """A request the endpoint does not serve: answered with the HTTP ``status`` and one line."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Turn:
    """One answered request: what the policy saw and what it sampled."""

    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    finish_reason: str


def _text(content, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise RequestError(f"{where}.content: only text is supported (a string or text parts)")


def _arguments(raw, where: str) -> dict:
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as exc:
        raise RequestError(f"{where}.function.arguments is not valid JSON ({exc.msg})") from exc
    if not isinstance(value, dict):
        raise RequestError(f"{where}.function.arguments must be a JSON object")
    return value


def normalise(messages) -> list[dict]:
    """The request's messages in the form the chat template renders (arguments as objects), checked."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list")
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise RequestError(f"{where}.role must be one of {', '.join(ROLES)}")
        message = {"role": m["role"], "content": _text(m.get("content"), where)}
        if m["role"] == "tool":
            message["tool_call_id"] = str(m.get("tool_call_id") or "")
        for j, call in enumerate(m.get("tool_calls") or [] if m["role"] == "assistant" else []):
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise RequestError(f"{where}.tool_calls[{j}] needs function.name")
            message.setdefault("tool_calls", []).append(
                {"id": str(call.get("id") or f"functions.{function['name']}:{j}"), "type": "function",
                 "function": {"name": function["name"],
                              "arguments": _arguments(function.get("arguments") or "{}", f"{where}.tool_calls[{j}]")}})
        out.append(message)
    return out


class ChatEndpoint:
    """Serve ``generate`` (a backend's ``generate(contexts, max_new_tokens, sampling)``) as ``model`` on localhost.

    ``budget``: completion tokens one session may use in all (its sampled and inserted tokens), as a
    rollout of k2rl's own engine. The backend is not re-entrant: requests that arrive while it samples
    wait, and are then sampled together in one batch.
    A request must carry ``Authorization: Bearer <api_key>``; the key is random per endpoint.
    """

    def __init__(self, tokenizer, generate, *, sampling: Sampling, budget: int, model: str = "k2rl-policy"):
        self.tokenizer, self.generate, self.sampling, self.budget, self.model = tokenizer, generate, sampling, budget, model
        self.api_key = secrets.token_hex(16)
        self._turns: dict[str, list[Turn]] = {}
        self._contexts: dict[str, tuple[list[dict], list[int], int]] = {}  # session -> (messages, ids, prompt length)
        self._lock, self._generate_lock = threading.Lock(), threading.Lock()
        self._ids = itertools.count()
        self._pending: list[dict] = []  # requests waiting for the backend
        self.batches = 0  # generate calls made (requests are batched while the backend is busy)
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> str:
        """Listen on 127.0.0.1 (a free port); the base URL to give an OpenAI client."""
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                endpoint._handle(self)

            def do_GET(self):  # noqa: N802
                endpoint._handle(self)

            def log_message(self, *args):  # requests are recorded, not logged
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="k2rl-chat-endpoint", daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_port}/v1"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def take(self, session: str) -> list[Turn]:
        """The turns answered for ``session`` (forgotten afterwards)."""
        with self._lock:
            self._contexts.pop(session, None)
            return self._turns.pop(session, [])

    # ------------------------------------------------------------------ HTTP
    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        try:
            if request.headers.get("Authorization", "") != f"Bearer {self.api_key}":
                raise RequestError("missing or wrong API key (Authorization: Bearer ...)", 401)
            path = request.path.split("?", 1)[0].rstrip("/")
            if request.command == "GET" and path in ("/v1/models", "/models"):
                http_status, body = 200, {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "k2rl"}]}
            elif request.command == "POST" and path in PATHS:
                http_status, body = 200, self.complete(self._json(request), request.headers.get(SESSION_HEADER) or "")
            else:
                raise RequestError(f"{request.command} {path}: not served here (POST /v1/chat/completions)", 404)
        except RequestError as exc:
            http_status, body = exc.status, {"error": {"message": f"k2rl: error: {exc}", "type": "invalid_request_error",
                                                       "code": exc.status}}
        except Exception as exc:  # noqa: BLE001 - the policy's side failed: one line, the run's log has the rest
            http_status, body = 500, {"error": {"message": f"k2rl: error: generation failed: {type(exc).__name__}: {exc}",
                                                "type": "server_error", "code": 500}}
        data = json.dumps(body).encode()
        request.send_response(http_status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    @staticmethod
    def _json(request) -> dict:
        try:
            length = int(request.headers.get("Content-Length") or 0)
        except ValueError as exc:
            raise RequestError("Content-Length is not a number") from exc
        if length > MAX_BODY_BYTES:
            raise RequestError(f"the request body is over {MAX_BODY_BYTES} bytes", 413)
        try:
            body = json.loads(request.rfile.read(length) or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(f"the request body is not JSON ({type(exc).__name__})") from exc
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        return body

    # ------------------------------------------------------------------ one completion
    def _check(self, body: dict) -> int | None:
        """The request's own token cap, after checking it asks only for what k2rl serves."""
        unknown = sorted(set(body) - SUPPORTED_FIELDS)
        if unknown:
            raise RequestError(f"field {unknown[0]!r} is not supported by k2rl's endpoint "
                               f"(supported: {', '.join(sorted(SUPPORTED_FIELDS))})")
        if body.get("model") != self.model:
            raise RequestError(f"model {body.get('model')!r} is not served here; this endpoint serves {self.model!r}")
        if body.get("stream"):
            raise RequestError("stream: true is not supported; ask for the whole reply")
        if body.get("n", 1) != 1:
            raise RequestError(f"n must be 1 (one sample per request), got {body.get('n')!r}")
        if body.get("tool_choice", "auto") != "auto":
            raise RequestError(f"tool_choice {body.get('tool_choice')!r} is not supported (only 'auto')")
        for name, ours in (("temperature", self.sampling.temperature), ("top_p", self.sampling.top_p)):
            if body.get(name) is not None and body[name] != ours:
                raise RequestError(f"{name} {body[name]!r}: k2rl samples at the recipe's {name} {ours!r}, "
                                   "so the trainer's log-probabilities match what was sampled")
        tools = body.get("tools")
        if tools is not None and not (isinstance(tools, list) and all(
                isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("function"), dict)
                for t in tools)):
            raise RequestError("tools must be a list of {type: function, function: {...}}")
        cap = body.get("max_completion_tokens", body.get("max_tokens"))
        if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
            raise RequestError(f"max_tokens must be a positive integer, got {cap!r}")
        return cap

    def _render(self, messages: list[dict], tools, add_generation_prompt: bool = True) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prompt(self, session: str, messages: list[dict], tools) -> tuple[list[int], int]:
        """(prompt ids, where the session's first prompt ended): a continuation extends the session's own ids."""
        with self._lock:
            previous = self._contexts.get(session)
        if previous is not None:
            before, ids, first = previous
            if messages[:len(before)] == before and len(messages) > len(before):
                return ids + self._render(messages[len(before):], None), first
        ids = self._render(messages, tools)
        return ids, len(ids)

    def _sample(self, ids: list[int], allowance: int) -> tuple[list[int], list[float]]:
        """Sample for one request, batched with the requests that arrived while the backend was busy.

        Whoever holds the backend serves every request pending at that moment in one ``generate``
        call, so concurrent episodes share batches instead of queueing one by one.
        """
        slot: dict = {"ids": ids, "allowance": allowance, "done": False}
        with self._lock:
            self._pending.append(slot)
        with self._generate_lock:
            if not slot["done"]:
                with self._lock:
                    batch, self._pending = self._pending, []
                try:
                    outputs = self.generate([s["ids"] for s in batch], [s["allowance"] for s in batch], self.sampling)
                except Exception as exc:  # noqa: BLE001 - every request of the batch answers with it
                    outputs = [exc] * len(batch)
                for pending, output in zip(batch, outputs, strict=True):
                    pending["output"], pending["done"] = output, True
                self.batches += 1
        if isinstance(slot["output"], Exception):
            raise slot["output"]
        return slot["output"]

    def complete(self, body: dict, session: str = "") -> dict:
        """One chat completion for ``body`` (already parsed JSON), recorded under ``session``."""
        cap = self._check(body)
        messages = normalise(body.get("messages"))
        ids, first = self._prompt(session, messages, body.get("tools"))
        room = self.budget - (len(ids) - first)
        allowance = min(room, cap) if cap is not None else room
        sampled, logprobs = self._sample(ids, allowance) if allowance >= 1 else ([], [])
        eos = self.tokenizer.eos_token_id
        ended = bool(sampled) and sampled[-1] == eos
        message: dict = {"role": "assistant", "content": None}
        if ended:
            turn = parse_turn(self.tokenizer.decode(sampled, skip_special_tokens=False))
            calls = [c for c in turn.calls if c.error is None]
            message["content"] = turn.content
            if calls:
                message["tool_calls"] = [{"id": c.id, "type": "function",
                                          "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                                         for c in calls]
            finish = "tool_calls" if calls else "stop"
        else:
            message["content"] = self.tokenizer.decode(sampled, skip_special_tokens=True)
            finish = "length"
        record = Turn(list(ids), list(sampled), list(logprobs), finish)
        context = ids + sampled + ([] if ended else [eos])  # an unfinished turn is closed by the template's marker
        with self._lock:
            self._turns.setdefault(session, []).append(record)
            self._contexts[session] = (messages + normalise([message]), context, first)
        return {"id": f"chatcmpl-k2rl-{next(self._ids)}", "object": "chat.completion", "created": 0, "model": self.model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": len(ids), "completion_tokens": len(sampled),
                          "total_tokens": len(ids) + len(sampled)}}
