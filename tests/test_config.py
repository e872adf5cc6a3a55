from pathlib import Path

import pytest

from k2rl.cli import main
from k2rl.config import load_config
from k2rl.errors import K2RLError

QUICKSTART = "configs/quickstart.yaml"


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch, request):
    monkeypatch.chdir(request.config.rootpath)


def test_quickstart_parses_with_typed_defaults():
    config = load_config(QUICKSTART)
    assert config.policy.preset == "k2-tiny"
    assert isinstance(config.trainer.learning_rate, float)
    assert config.rewards[0].name == "exact_answer"


def test_dotted_overrides_are_typed():
    config = load_config(QUICKSTART, ["trainer.learning_rate=5e-4", "trainer.lora.r=4", "data.options.max_operand=9"])
    assert config.trainer.learning_rate == 5e-4
    assert config.trainer.lora.r == 4
    assert config.data.options["max_operand"] == 9


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.learnig_rate=1", "unknown key 'trainer.learnig_rate'"),
        ("trainer.max_steps=ten", "trainer.max_steps: expected an integer, got str 'ten'"),
        ("trainer.lora.alpha=1.5", "trainer.lora.alpha: expected an integer"),
        ("warm_start.enabled=maybe", "warm_start.enabled: expected bool"),
        ("rewards=[{weight: 2}]", "missing required key 'rewards[0].name'"),
        ("trainer.algorithm=sgd", "trainer.algorithm: expected one of"),
    ],
)
def test_bad_values_name_key_and_file(override, message):
    with pytest.raises(K2RLError) as info:
        load_config(QUICKSTART, [override])
    assert message in str(info.value)
    assert QUICKSTART in str(info.value)


def test_missing_required_policy(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("seed: 1\n")
    with pytest.raises(K2RLError, match=r"missing required key 'policy'.*r\.yaml"):
        load_config(recipe)


def test_cli_reports_one_line_and_exits_nonzero(capsys):
    code = main(["train", QUICKSTART, "trainer.bogus=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f"k2rl: error: unknown key 'trainer.bogus' (in override trainer.bogus=1, on {QUICKSTART})"]


def test_cli_missing_model_path(tmp_path, capsys):
    code = main(["train", QUICKSTART, "policy.preset=null", f"policy.model={tmp_path}/nope"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "model path does not exist" in err[0]


def test_cli_missing_dataset_column(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text('{"problem": "1+1?", "solution": "2"}\n' * 20)
    code = main(["train", QUICKSTART, f"data.source={data}", "data.options=null", "data.eval_size=4",
                 "data.columns={question: problem}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "missing column 'answer'" in err[0] and "solution" in err[0]


@pytest.mark.parametrize("variant, algorithm", [("configs/quickstart_k2.yaml", "k2"), ("configs/quickstart_ppo.yaml", "ppo")])
def test_variants_extend_the_quickstart(variant, algorithm):
    base, config = load_config(QUICKSTART), load_config(variant)
    assert config.trainer.algorithm == algorithm
    # Everything but the algorithm's own keys is the quickstart's: the comparison is like for like.
    assert config.data == base.data and config.warm_start == base.warm_start and config.policy == base.policy
    assert (config.trainer.max_steps, config.trainer.learning_rate, config.trainer.lora) == (
        base.trainer.max_steps, base.trainer.learning_rate, base.trainer.lora,
    )


def test_extends_merges_sections_and_overrides_apply_last(tmp_path):
    (tmp_path / "base.yaml").write_text("policy: {preset: k2-tiny}\ntrainer: {max_steps: 10, learning_rate: 1.0e-3}\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\ntrainer: {max_steps: 20}\n")
    config = load_config(tmp_path / "child.yaml", ["trainer.learning_rate=2e-3"])
    assert (config.trainer.max_steps, config.trainer.learning_rate, config.policy.preset) == (20, 2e-3, "k2-tiny")


def test_extends_errors_name_the_file(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(K2RLError, match="loops back"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(K2RLError, match=r"missing\.yaml \(extended by .*c\.yaml\)"):
        load_config(tmp_path / "c.yaml")


def test_extends_null_removes_what_the_parent_set(tmp_path):
    (tmp_path / "rows.jsonl").write_text("".join(f'{{"question": "q{i}", "answer": "{i}"}}\n' for i in range(30)))
    parent = "configs/quickstart.yaml"
    child = tmp_path / "mine.yaml"
    child.write_text(f"extends: {Path(parent).resolve()}\ndata: {{source: {tmp_path / 'rows.jsonl'}, options: null, "
                     "eval_size: 5}\nwarm_start: null\n")
    config = load_config(child)
    assert config.data.options == {} and config.data.eval_size == 5
    assert config.warm_start == load_config(Path(parent)).warm_start.__class__()  # the whole section: defaults
    from k2rl.data.sources import load_task_data

    assert len(load_task_data(config.data, 0).eval) == 5


def test_a_value_inherited_from_the_parent_is_named_with_its_file(tmp_path):
    (tmp_path / "rows.jsonl").write_text("".join(f'{{"question": "q{i}", "answer": "{i}"}}\n' for i in range(30)))
    child = tmp_path / "mine.yaml"
    child.write_text(f"extends: {Path(QUICKSTART).resolve()}\ndata: {{source: {tmp_path / 'rows.jsonl'}, eval_size: 5}}\n")
    from k2rl.data.sources import load_task_data

    with pytest.raises(K2RLError, match=r"data\.options set in .*configs/quickstart\.yaml; `options: null`"):
        load_task_data(load_config(child).data, 0)
    (tmp_path / "typo.yaml").write_text(f"extends: {Path(QUICKSTART).resolve()}\ntrainer: {{max_steps: many}}\n")
    with pytest.raises(K2RLError, match=r"trainer\.max_steps: expected an integer.*\(in .*typo\.yaml\)"):
        load_config(tmp_path / "typo.yaml")
    (tmp_path / "child.yaml").write_text("extends: typo.yaml\nseed: 1\n")  # the mistake is the parent's
    with pytest.raises(K2RLError, match=r"trainer\.max_steps: expected an integer.*\(in .*typo\.yaml\)"):
        load_config(tmp_path / "child.yaml")


@pytest.mark.parametrize("override, suggestion", [
    ("trainer.lerning_rate=1", "did you mean 'learning_rate'?"),
    ("evl.k=2", "did you mean 'eval'?"),
    ("trainer.lora.alhpa=4", "did you mean 'alpha'?"),
])
def test_misspelt_keys_get_a_did_you_mean_naming_the_override(override, suggestion):
    with pytest.raises(K2RLError) as info:
        load_config(QUICKSTART, [override])
    assert suggestion in str(info.value) and f"(in override {override}, on {QUICKSTART})" in str(info.value)


@pytest.mark.parametrize("override, message", [
    ("trainer.lerning_rate=1", "did you mean 'learning_rate'?"),
    ("data.options.nope=1", "data.options.nope: not an option"),
    ("data.eval_size=10000000", "distinct items cannot be drawn"),
    ("rollout.sandbox=bogus", "unknown sandbox backend 'bogus'"),
    ("report_to=[no_such_tracker]", "report_to[0]: expected one of"),
])
def test_a_config_error_comes_before_any_heavy_import(override, message):
    """`k2rl train RECIPE typo=1` answers before torch, transformers, TRL or datasets load (fast on 2 cores)."""
    import subprocess
    import sys

    probe = ("import sys\nfrom k2rl.cli import main\ncode = main(['train', 'configs/quickstart.yaml', "
             f"{override!r}])\nheavy = [m for m in ('torch', 'transformers', 'trl', 'datasets') "
             "if m in sys.modules]\nprint(code, heavy)\n")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "2 []", result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
