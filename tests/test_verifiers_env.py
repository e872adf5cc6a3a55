"""Multi-turn verifiers.v1 environments through k2rl's OpenAI-compatible chat endpoint (plugin in
tests/vf_calc.py, no hub): replies carry tool calls in OpenAI's format, each episode's recorded tokens
are what the policy sampled (log-probs re-scored by the policy), rewards equal what verifiers computes
alone on the same trace, failed episodes get no reward and no loss, bad requests get one-line 400s, and
a multi-turn taskset with a tool trains two steps."""

import json
import urllib.error
import urllib.request

import pytest
import torch

vf = pytest.importorskip("verifiers.v1")

from k2rl.cli import main  # noqa: E402
from k2rl.config import DataConfig  # noqa: E402
from k2rl.data.sources import load_task_data  # noqa: E402
from k2rl.errors import K2RLError  # noqa: E402
from k2rl.policy.build import load_policy  # noqa: E402
from k2rl.rewards import get_reward  # noqa: E402
from k2rl.rollouts.backends import Sampling, TransformersBackend  # noqa: E402
from k2rl.rollouts.chat_endpoint import ChatEndpoint  # noqa: E402
from k2rl.rollouts.tool_calls import SECTION_BEGIN, SECTION_END, TURN_END, format_call  # noqa: E402
from k2rl.rollouts.verifiers_env import VerifiersRollouts  # noqa: E402
from test_verifiers import alone  # noqa: E402

ENV = {"taskset": {"id": "vf_calc"}, "agent": {"harness": {"id": "vf_calc"}, "runtime": {"type": "subprocess"}}}


@pytest.fixture(scope="module")
def policy(tiny_policy_dir):
    return load_policy(str(tiny_policy_dir))


class ScriptedPolicy:
    """A policy that always calls ``multiply`` on the question's numbers, then answers with the tool's result.

    Its log-probabilities are fixed numbers: what the endpoint records is checked against what it returned.
    """

    def __init__(self, tokenizer, wrong_json: bool = False):
        self.tokenizer, self.wrong_json, self.sampled = tokenizer, wrong_json, []

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def __call__(self, contexts, max_new_tokens, sampling):
        out = []
        for context, limit in zip(contexts, max_new_tokens):
            text = self.tokenizer.decode(context, skip_special_tokens=False)
            if "## Return of" in text:
                answer = text.rsplit("## Return of", 1)[1].split("\n", 1)[1].split(TURN_END)[0]
                reply = f"The answer is {answer}."
            else:
                a, b = text.rsplit("What is ", 1)[1].split("?")[0].split(" * ")
                call = format_call("multiply", {"a": int(a), "b": int(b)})
                reply = f"{SECTION_BEGIN}{call.replace('}', ',}') if self.wrong_json else call}{SECTION_END}"
            ids = self.ids(reply + TURN_END)[:limit]
            self.sampled.append(ids)
            out.append((ids, [-0.25 - 0.01 * i for i in range(len(ids))]))
        return out


def _post(url, body, key, raw=None):
    request = urllib.request.Request(url + "/chat/completions", data=raw if raw is not None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                                              "X-Session-ID": "s1"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_endpoint_replies_with_openai_tool_calls_and_continues_the_sampled_context(policy):
    tokenizer = policy.tokenizer
    script = ScriptedPolicy(tokenizer)
    from vf_calc import TOOLS

    with ChatEndpoint(tokenizer, script, sampling=Sampling(), budget=160) as endpoint:
        url = f"http://127.0.0.1:{endpoint._server.server_port}/v1"
        messages = [{"role": "user", "content": "What is 12 * 7?"}]
        status, first = _post(url, {"model": "k2rl-policy", "messages": messages, "tools": TOOLS}, endpoint.api_key)
        assert status == 200 and first["choices"][0]["finish_reason"] == "tool_calls"
        [call] = first["choices"][0]["message"]["tool_calls"]
        assert call["function"]["name"] == "multiply" and json.loads(call["function"]["arguments"]) == {"a": 12, "b": 7}
        messages += [first["choices"][0]["message"], {"role": "tool", "tool_call_id": call["id"], "content": "84"}]
        status, second = _post(url, {"model": "k2rl-policy", "messages": messages, "tools": TOOLS}, endpoint.api_key)
        assert status == 200 and second["choices"][0]["message"]["content"] == "The answer is 84."
        turns = endpoint.take("s1")
    assert [t.completion_ids for t in turns] == script.sampled
    assert '"name": "multiply"' in tokenizer.decode(turns[0].prompt_ids)  # the request's tools reach the template
    context = turns[0].prompt_ids + turns[0].completion_ids
    assert turns[1].prompt_ids[:len(context)] == context  # the sampled tokens, not a re-rendering of them
    assert "## Return of functions.multiply:0\n84" in tokenizer.decode(turns[1].prompt_ids[len(context):])


def test_episode_rewards_equal_verifiers_alone_and_only_sampled_tokens_train(policy):
    tokenizer = policy.tokenizer
    rollouts = VerifiersRollouts(tokenizer, ENV, budget=160)
    keys = list(rollouts.tasks)[:3]
    script = ScriptedPolicy(tokenizer)
    out = rollouts.run([{"vf_task": k, "prompt": "unused"} for k in keys], script)
    assert rollouts.last_stats["infrastructure_failures"] == 0 and rollouts.last_stats["model_turns"] == 2
    for i, episode in enumerate(rollouts.last_episodes):
        trace = episode.traces[0]
        messages = [node.message for node in trace.nodes[1:]]
        assert [m.role for m in messages] == ["assistant", "tool", "assistant"]
        theirs = alone(rollouts.tasks[keys[i]], messages)
        assert json.loads(out["vf_scores"][i]) == theirs
        assert theirs["correct"] == theirs["used_tool"] == 1.0 and 0 < theirs["letters"] < 1
        ids, mask = out["completion_ids"][i], out["env_mask"][i]
        a, b = rollouts.tasks[keys[i]].data.prompt[len("What is "):-1].split(" * ")
        call = f"{SECTION_BEGIN}{format_call('multiply', {'a': int(a), 'b': int(b)})}{SECTION_END}{TURN_END}"
        expected = script.ids(call) + script.ids(f"The answer is {int(a) * int(b)}.{TURN_END}")
        assert [t for t, m in zip(ids, mask) if m] == expected  # exactly the sampled tokens are trained
        assert tokenizer.decode([t for t, m in zip(ids, mask) if not m]).startswith("<|im_system|>tool")
        assert [lp for lp, m in zip(out["logprobs"][i], mask) if m][:3] == [-0.25, -0.26, -0.27]
    # the reward hands the recorded scores on, named as the task names them
    assert get_reward("verifiers", reward="used_tool")(prompts=[""] * 3, completions=[""] * 3,
                                                       vf_scores=out["vf_scores"]) == [1.0] * 3


def test_recorded_tokens_are_what_the_policy_sampled(policy):
    """A real policy serves the endpoint: the trained tokens re-scored by the policy give the recorded log-probs."""
    tokenizer, model = policy.tokenizer, policy.model
    env = {**ENV, "agent": {**ENV["agent"], "harness": {"id": "vf_calc", "max_tokens": 10}}}
    rollouts = VerifiersRollouts(tokenizer, env, budget=48)
    torch.manual_seed(0)
    out = rollouts.run([{"vf_task": k} for k in list(rollouts.tasks)[:3]],
                       TransformersBackend(model, tokenizer).generate, Sampling(temperature=1.0))
    checked = 0
    for prompt, ids, logprobs, mask in zip(out["prompt_ids"], out["completion_ids"], out["logprobs"], out["env_mask"]):
        assert len(ids) == len(logprobs) == len(mask) and 0 < len(ids) <= 48
        with torch.no_grad():
            logits = model(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1:-1].float()
        rescored = logits.log_softmax(-1).gather(-1, torch.tensor(ids).unsqueeze(-1)).squeeze(-1)
        for new, old, trained in zip(rescored.tolist(), logprobs, mask):
            if trained:
                assert abs(new - old) < 1e-3
                checked += 1
    assert checked >= 3 * 2 * 5 and rollouts.last_stats["model_turns"] == 2  # the nudge: two sampled turns each
    for episode, ids, mask in zip(rollouts.last_episodes, out["completion_ids"], out["env_mask"]):
        trained = tokenizer.decode([t for t, m in zip(ids, mask) if m], skip_special_tokens=True)
        replies = [str(n.message.content or "").strip() for n in episode.traces[0].nodes if n.message.role == "assistant"]
        assert "Use the multiply tool" in tokenizer.decode([t for t, m in zip(ids, mask) if not m])  # masked out
        assert len(replies) == 2 and all(r in trained for r in replies)  # the harness got the sampled text


def test_a_failed_episode_gets_no_reward_and_no_loss(policy):
    env = {**ENV, "taskset": {"id": "vf_calc", "crashing": 2}}
    rollouts = VerifiersRollouts(policy.tokenizer, env, budget=160)
    crashing = [k for k, t in rollouts.tasks.items() if str(t.data.prompt).startswith("crash")]
    fine = [k for k in rollouts.tasks if k not in crashing][:2]
    rows = [{"vf_task": k} for k in (fine[0], crashing[0], fine[1], crashing[1])]
    out = rollouts.run(rows, ScriptedPolicy(policy.tokenizer))
    assert rollouts.last_stats["infrastructure_failures"] == 2 and sorted(rollouts.last_failures) == [1, 3]
    assert [s is None for s in out["vf_scores"]] == [False, True, False, True]
    assert not any(out["env_mask"][1]) and not any(out["env_mask"][3]) and all(any(out["env_mask"][i]) for i in (0, 2))
    assert out["stop_reason"][1] == "infrastructure_error"
    scores = get_reward("verifiers", reward="correct")(prompts=[""] * 4, completions=[""] * 4, vf_scores=out["vf_scores"])
    assert scores == [1.0, None, 1.0, None]  # no reward, never a fake 0


@pytest.mark.parametrize("body, status, message", [
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, 400,
     "k2rl: error: model 'gpt-4o' is not served here; this endpoint serves 'k2rl-policy'"),
    ({"model": "k2rl-policy", "messages": [{"role": "user", "content": "hi"}], "logit_bias": {"1": 5}}, 400,
     "k2rl: error: field 'logit_bias' is not supported by k2rl's endpoint"),
    ({"model": "k2rl-policy", "messages": [{"role": "user", "content": "hi"}], "stream": True}, 400,
     "k2rl: error: stream: true is not supported"),
    ({"model": "k2rl-policy", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2}, 400,
     "k2rl: error: temperature 0.2: k2rl samples at the recipe's temperature 1.0"),
    ({"model": "k2rl-policy", "messages": [{"role": "user", "content": "hi"}], "n": 3}, 400, "k2rl: error: n must be 1"),
    ({"model": "k2rl-policy", "messages": []}, 400, "k2rl: error: messages must be a non-empty list"),
    ({"model": "k2rl-policy", "messages": [{"role": "wizard", "content": "hi"}]}, 400,
     "k2rl: error: messages[0].role must be one of"),
    ({"model": "k2rl-policy", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
     "k2rl: error: messages[0].content: only text is supported"),
    ({"model": "k2rl-policy", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}, 400,
     "k2rl: error: max_tokens must be a positive integer"),
])
def test_requests_the_endpoint_does_not_serve_get_a_one_line_400(policy, body, status, message):
    script = ScriptedPolicy(policy.tokenizer)
    with ChatEndpoint(policy.tokenizer, script, sampling=Sampling(), budget=16) as endpoint:
        url = f"http://127.0.0.1:{endpoint._server.server_port}/v1"
        got, reply = _post(url, body, endpoint.api_key)
    assert got == status and reply["error"]["message"].startswith(message)
    assert "\n" not in reply["error"]["message"] and "Traceback" not in reply["error"]["message"]
    assert script.sampled == []  # refused before any generation


def test_the_endpoint_wants_its_key_and_json(policy):
    script = ScriptedPolicy(policy.tokenizer)
    body = {"model": "k2rl-policy", "messages": [{"role": "user", "content": "What is 11 * 3?"}]}
    with ChatEndpoint(policy.tokenizer, script, sampling=Sampling(), budget=160) as endpoint:
        url = f"http://127.0.0.1:{endpoint._server.server_port}/v1"
        assert _post(url, body, "guessed")[0] == 401
        assert _post(url, body, "")[0] == 401
        status, reply = _post(url, None, endpoint.api_key, raw=b"{not json")
        assert status == 400 and reply["error"]["message"] == "k2rl: error: the request body is not JSON (JSONDecodeError)"
        assert _post(url, None, endpoint.api_key, raw=b"[1, 2]")[0] == 400
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", endpoint._server.server_port, timeout=60)
        connection.putrequest("POST", "/v1/chat/completions")
        for name, value in (("Authorization", f"Bearer {endpoint.api_key}"), ("Content-Length", str(2**40))):
            connection.putheader(name, value)
        connection.endheaders()  # a huge body announced, none sent: refused before reading
        response = connection.getresponse()
        assert response.status == 413 and b"k2rl: error: the request body is over" in response.read()
        connection.close()
        assert script.sampled == []
        assert _post(url, body, endpoint.api_key)[0] == 200


def _recipe(tmp_path, data_options: str, extra: str = "") -> str:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""
policy: {{preset: k2-tiny}}
data: {{source: verifiers, eval_size: 4, options: {data_options}}}
trainer: {{max_completion_length: 48, learning_rate: 1.0e-3}}
rewards:
  - {{name: verifiers, label: correct, options: {{reward: correct}}}}
  - {{name: verifiers, label: used_tool, weight: 0.2, options: {{reward: used_tool}}}}
  - {{name: verifiers, label: letters, weight: 0.1, options: {{reward: letters}}}}
{extra}
""")
    return str(recipe)


ENV_YAML = "{env: {taskset: {id: vf_calc}, agent: {harness: {id: vf_calc, max_tokens: 10}, runtime: {type: subprocess}}}}"


def test_a_multi_turn_env_with_a_tool_trains_two_steps(tmp_path):
    fast = ["warm_start.max_steps=2", "trainer.max_steps=2", "trainer.per_device_train_batch_size=4",
            "trainer.num_generations=2", "trainer.eval_steps=0", "trainer.logging_steps=1", "eval.max_new_tokens=8"]
    assert main(["train", _recipe(tmp_path, ENV_YAML), f"output_dir={tmp_path}", "run_name=vf", *fast]) == 0
    records = [json.loads(line) for line in (tmp_path / "vf" / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in records if r["phase"] == "rl" and "loss" in r]
    assert len(rl) == 2
    assert all("rewards/correct/mean" in r and "rewards/used_tool/mean" in r for r in rl)
    assert all(r["rewards/unscored"] == 0 for r in rl)
    assert any(r["frac_reward_zero_std"] < 1 and r["grad_norm"] > 0 for r in rl)  # the episodes' tokens got a gradient
    assert all(r["rollouts/infrastructure_failures"] == 0 and r["rollouts/model_turns"] >= 2 for r in rl)  # multi-turn
    held_out = [r for r in records if "tool_use/call_rate" in r]  # evaluated on greedy episodes of the env
    assert held_out and all("correct/mean" in r for r in held_out)


def test_verifiers_env_recipes_refuse_what_does_not_compose(tmp_path, capsys):
    cases = [("rollout: {tools: [python], max_turns: 2}", "does not compose with rollout=tools"),
             ("rollout: {environment: tool_use}", "does not compose with rollout=tools"),
             ("trainer: {algorithm: ppo}", "does not compose with algorithm=ppo"),
             ("trainer: {routing_replay: true}", "does not compose with routing_replay=on"),
             ("rollout: {backend: vllm, max_staleness: 1}", "does not compose with rollout.max_staleness: 1")]
    for extra, message in cases:
        assert main(["train", _recipe(tmp_path, ENV_YAML, extra), f"output_dir={tmp_path}", "run_name=refused"]) != 0
        [line] = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("k2rl: error: data.options.env (a verifiers env) ") and message in line
    with pytest.raises(K2RLError, match="one of data.options.taskset"):
        load_task_data(DataConfig(source="verifiers", options={"taskset": "test_verifiers:SumTaskset",
                                                               "env": {"taskset": {"id": "vf_calc"}}}), seed=0)
    with pytest.raises(K2RLError, match="data.options.env must be a verifiers env config with taskset.id"):
        load_task_data(DataConfig(source="verifiers", options={"env": {"agent": {}}}), seed=0)
    with pytest.raises(K2RLError, match="data.options.env: verifiers cannot build this env: "):
        load_task_data(DataConfig(source="verifiers", options={"env": {"taskset": {"id": "no_such_taskset_xyz"}}}), seed=0)


def test_requests_that_arrive_while_the_backend_samples_are_batched(policy):
    """Three concurrent requests: the first samples alone while the other two queue; they then share one batch."""
    import threading

    script, sizes, holding = ScriptedPolicy(policy.tokenizer), [], threading.Event()

    def generate(contexts, max_new_tokens, sampling):
        sizes.append(len(contexts))
        if len(sizes) == 1:  # hold the backend until the other two requests wait for it
            holding.set()
            for _ in range(2000):
                if len(endpoint._pending) == 2:
                    break
                threading.Event().wait(0.005)
        return script(contexts, max_new_tokens, sampling)

    with ChatEndpoint(policy.tokenizer, generate, sampling=Sampling(), budget=160) as endpoint:
        url, replies = f"http://127.0.0.1:{endpoint._server.server_port}/v1", {}

        def ask(a):
            body = {"model": "k2rl-policy", "messages": [{"role": "user", "content": f"What is {a} * 3?"}]}
            replies[a] = _post(url, body, endpoint.api_key)

        first = threading.Thread(target=ask, args=(11,))
        first.start()
        holding.wait(60)
        others = [threading.Thread(target=ask, args=(a,)) for a in (12, 13)]
        for thread in [*others]:
            thread.start()
        for thread in [first, *others]:
            thread.join(60)
    assert sizes == [1, 2] and endpoint.batches == 2
    for a, (status, reply) in replies.items():  # each request got its own answer
        [call] = reply["choices"][0]["message"]["tool_calls"]
        assert status == 200 and json.loads(call["function"]["arguments"]) == {"a": a, "b": 3}


def test_a_harness_that_rewrites_history_fails_its_episode_instead_of_training_on_unsampled_tokens(policy):
    from k2rl.rollouts.verifiers_env import ContextBreak, trajectory_from_turns

    script = ScriptedPolicy(policy.tokenizer)
    endpoint = ChatEndpoint(policy.tokenizer, script, sampling=Sampling(), budget=160)
    messages = [{"role": "user", "content": "What is 14 * 3?"}]
    first = endpoint.complete({"model": "k2rl-policy", "messages": messages}, "s")["choices"][0]["message"]
    call_id = first["tool_calls"][0]["id"]
    edited = {**first, "tool_calls": [{**first["tool_calls"][0], "function": {"name": "multiply",
                                                                                "arguments": '{"a": 1, "b": 1}'}}]}
    endpoint.complete({"model": "k2rl-policy", "messages": [*messages, edited,
                                                             {"role": "tool", "tool_call_id": call_id, "content": "1"}]}, "s")
    turns = endpoint.take("s")
    assert len(turns) == 2 and turns[1].prompt_ids[:len(turns[0].prompt_ids)] == turns[0].prompt_ids
    assert turns[1].prompt_ids[:len(turns[0].prompt_ids + turns[0].completion_ids)] != \
        turns[0].prompt_ids + turns[0].completion_ids  # rendered afresh: the edited call is not what was sampled
    with pytest.raises(ContextBreak, match="does not extend"):
        trajectory_from_turns(turns, 160)
    with pytest.raises(ContextBreak, match="no model call"):
        trajectory_from_turns([], 160)


@pytest.mark.skipif(__import__("k2rl.rollouts.vllm_engine", fromlist=["vllm_python"]).vllm_python() is None,
                    reason="no vLLM environment (.venv-vllm or K2RL_VLLM_PYTHON); scripts/setup.sh builds it")
def test_episodes_sample_from_k2rls_vllm_engine_behind_the_same_endpoint(tmp_path):
    fast = ["warm_start.max_steps=2", "trainer.max_steps=2", "trainer.per_device_train_batch_size=4",
            "trainer.num_generations=2", "trainer.eval_steps=0", "trainer.logging_steps=1", "eval.max_new_tokens=8",
            "rollout.backend=vllm", "rollout.vllm_check_every=1", "rollout.vllm_check_prompts=2"]
    assert main(["train", _recipe(tmp_path, ENV_YAML), f"output_dir={tmp_path}", "run_name=vf", *fast]) == 0
    records = [json.loads(line) for line in (tmp_path / "vf" / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in records if r["phase"] == "rl" and "loss" in r]
    assert len(rl) == 2 and all(r["rollouts/model_turns"] >= 2 and r["rollouts/infrastructure_failures"] == 0 for r in rl)
    assert all(r["vllm/logprob_max_abs_diff"] < 1e-3 for r in records if "vllm/logprob_max_abs_diff" in r)
    # TRL's importance-sampling ratio on the episodes' trained tokens: the engine's recorded log-probs are the policy's
    assert all(abs(r[f"sampling/importance_sampling_ratio/{end}"] - 1) < 1e-3 for r in rl for end in ("min", "max"))
    summary = json.loads((tmp_path / "vf" / "summary.json").read_text())
    assert summary["vllm"]["pushes"] >= 2
