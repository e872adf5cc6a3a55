"""A verifiers.v1 plugin written for the tests (no hub): a taskset of products and a harness with a tool.

verifiers loads a taskset and a harness by module id (this module: ``vf_calc``), each the one subclass
``__all__`` exports. The harness runs its agent loop in-process, as verifiers' harness contract allows:
every model call goes to the endpoint verifiers hands it (verifiers' interception, which relays to
k2rl's chat endpoint), and the ``multiply`` tool runs here. A first reply that calls no tool gets one
nudge (a user turn), so even an untrained policy plays multi-turn episodes. Tool errors are answers
the policy reads; a task whose prompt says ``crash`` makes the harness fail (an environment error).
"""

import json

import verifiers.v1 as vf
from openai import AsyncOpenAI
from verifiers.v1.runtimes import ProgramResult

__all__ = ["Products", "CalcHarness"]

TOOLS = [{"type": "function", "function": {
    "name": "multiply", "description": "The product of two integers",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"]}}}]


class ProductData(vf.TaskData):
    answer: str


class ProductTask(vf.Task[ProductData]):
    @vf.reward
    async def correct(self, task, trace) -> float:
        return float(task.answer in (trace.last_reply or ""))

    @vf.reward(weight=0.2)
    async def used_tool(self, trace) -> float:
        return float(any(str(m.content).strip() for m in trace.tool_messages))

    @vf.reward(weight=0.1)
    async def letters(self, trace) -> float:
        """The share of the reply that is ASCII letters: it varies even between an untrained policy's replies."""
        reply = trace.last_reply or ""
        return sum(c.isascii() and c.isalpha() for c in reply) / max(len(reply), 1)


class ProductsConfig(vf.TasksetConfig):
    crashing: int = 0  # this many extra tasks whose episodes fail in the harness (an environment error)


class Products(vf.Taskset[ProductTask, ProductsConfig]):
    def load(self):
        for a in range(11, 17):
            for b in (3, 7):
                yield ProductTask(ProductData(prompt=f"What is {a} * {b}?", answer=str(a * b)))
        for i in range(self.config.crashing):
            yield ProductTask(ProductData(prompt=f"crash {i}", answer="0"))


class CalcConfig(vf.HarnessConfig):
    max_model_calls: int = 3
    nudge: str | None = "Use the multiply tool, then answer."  # sent once if the first reply calls no tool
    max_tokens: int | None = None  # per model call


def multiply(arguments: dict) -> str:
    try:
        return str(int(arguments["a"]) * int(arguments["b"]))
    except (KeyError, TypeError, ValueError) as exc:
        return f"error: multiply needs integers a and b ({type(exc).__name__})"


class CalcHarness(vf.Harness[CalcConfig]):
    NEEDS_CONTAINER = False
    EXECUTES_CODE = False

    async def launch(self, ctx, trace, runtime, endpoint, secret, mcp_urls, data):
        if "crash" in str(data.prompt):
            raise RuntimeError("the calculator harness crashed")
        client = AsyncOpenAI(base_url=endpoint, api_key=secret, max_retries=0)
        messages = [{"role": "user", "content": data.prompt}]
        cap = {"max_tokens": self.config.max_tokens} if self.config.max_tokens else {}
        nudged = False
        try:
            for _ in range(self.config.max_model_calls):
                reply = await client.chat.completions.create(model=ctx.model, messages=messages, tools=TOOLS, **cap)
                message = reply.choices[0].message
                messages.append(message.model_dump(exclude_none=True))
                if not message.tool_calls:
                    if nudged or not self.config.nudge or any(m["role"] == "tool" for m in messages):
                        break
                    messages.append({"role": "user", "content": self.config.nudge})
                    nudged = True
                    continue
                for call in message.tool_calls:
                    messages.append({"role": "tool", "tool_call_id": call.id,
                                     "content": multiply(json.loads(call.function.arguments))})
        finally:
            await client.close()
        return ProgramResult(exit_code=0, stdout="", stderr="")
