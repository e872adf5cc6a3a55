"""Two processes on CPU (gloo), launched the documented way: one run directory, sharded batches, one log."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

RECIPE = [
    "data.train_size=64",
    "data.eval_size=8",
    "warm_start.max_steps=2",
    "warm_start.batch_size=8",
    "trainer.max_steps=3",
    "trainer.per_device_train_batch_size=4",  # x 2 processes = the global batch of 8
    "trainer.num_generations=4",
    "trainer.max_completion_length=6",
    "trainer.eval_steps=2",
    "trainer.logging_steps=1",
    "trainer.save_steps=3",
    "eval.max_new_tokens=6",
    "trainer.lora.expert_selection.threshold_p=0.5",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_run_with_gloo(tmp_path, request):
    root = request.config.rootpath
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [
        str(accelerate), "launch", "--config_file", str(root / "configs" / "accelerate" / "cpu_gloo.yaml"),
        "--main_process_port", str(_free_port()),
        "-m", "k2rl.cli", "train", str(root / "configs" / "quickstart.yaml"),
        f"output_dir={tmp_path}", "run_name=two", *RECIPE,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, cwd=root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two"]  # both processes used one run directory
    run_dir = tmp_path / "two"
    # The main process speaks for the run: one final line, one record per logged step.
    assert done.stdout.count("k2rl: eval accuracy before=") == 1
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rl_steps = [r["step"] for r in records if r["phase"] == "rl" and "reward" in r]
    assert rl_steps == [1, 2, 3]
    # Both processes trained every step, each on its own prompts (the batch is sharded, not repeated).
    order = [json.loads(line) for line in (run_dir / "rl_tmp" / "data_order.jsonl").read_text().splitlines()]
    for step in (1, 2, 3):
        shards = {r["process"]: set(r["prompts"]) for r in order if r["step"] == step}
        assert set(shards) == {0, 1}
        assert not shards[0] & shards[1]
    checkpoint = run_dir / "rl_tmp" / "checkpoint-3"
    assert {"rng_state_0.pth", "rng_state_1.pth", "trainer_state.json"} <= {p.name for p in checkpoint.iterdir()}
    for name in ("adapter", "summary.json", "routing_profile.png", "expert_selection.json"):
        assert (run_dir / name).exists(), name
