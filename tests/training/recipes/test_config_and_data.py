"""Config validation, snapshot checks and the CLI: bad input gets a clear error naming what and where."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.recipes import METHODS, recipe
from training.recipes.config import ConfigError
from training.recipes.data import SnapshotError, load_snapshot

from .conftest import base_config, write_snapshot

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("method", METHODS)
def test_every_field_has_help(method):
    helps = recipe(method).Config.field_help()
    assert helps and all(text.strip() for text in helps.values()), [
        k for k, v in helps.items() if not v.strip()
    ]


def test_errors_name_every_bad_field(tmp_path):
    dpo = recipe("dpo")
    with pytest.raises(ConfigError) as info:
        dpo.Config.from_dict(
            {"snapshot_dir": "s", "output_dir": "o", "beta": -1, "learning_rate": 3, "save_mode": "zip"}
        )
    msg = str(info.value)
    for name in ("model_name_or_path", "beta", "learning_rate", "save_mode"):
        assert f"- {name}:" in msg
    with pytest.raises(ConfigError, match="expected int"):
        dpo.Config.from_dict(base_config(tmp_path, tmp_path, tmp_path, max_steps="ten"))
    with pytest.raises(ConfigError, match="unknown field for dpo"):
        dpo.Config.from_dict(base_config(tmp_path, tmp_path, tmp_path, betta=0.2))
    with pytest.raises(ConfigError, match="is for 'kto'"):
        dpo.Config.from_dict({**base_config(tmp_path, tmp_path, tmp_path), "method": "kto"})


def test_method_specific_rules(tmp_path):
    common = base_config(tmp_path, tmp_path, tmp_path)
    with pytest.raises(ConfigError, match="KTO needs > 1"):
        recipe("kto").Config.from_dict({**common, "per_device_train_batch_size": 1})
    with pytest.raises(ConfigError, match="reward_model_path: is required"):
        recipe("ppo").Config.from_dict(common)
    with pytest.raises(ConfigError, match="num_mini_batches"):
        recipe("ppo").Config.from_dict({**common, "reward_model_path": "rm", "num_mini_batches": 3})
    with pytest.raises(ConfigError, match="always saved merged"):
        recipe("reward").Config.from_dict({**common, "save_mode": "adapter"})
    with pytest.raises(ConfigError, match="loss_weights"):
        recipe("dpo").Config.from_dict({**common, "loss_type": ["sigmoid", "sft"], "loss_weights": [1.0]})
    ok = recipe("dpo").Config.from_dict({**common, "loss_type": ["sigmoid", "sft"], "loss_weights": [1, 0.5]})
    assert ok.loss_weights == [1.0, 0.5] and ok.learning_rate == 5e-3


def test_yaml_loading_overrides_and_syntax_errors(tmp_path):
    good = tmp_path / "run.yaml"
    good.write_text(
        "# python -m training.recipes.sft --config run.yaml\nmodel_name_or_path: m\nsnapshot_dir: s\noutput_dir: o\n"
    )
    cfg = recipe("sft").Config.from_yaml(good, ["max_steps=7", "use_lora=false"])
    assert cfg.max_steps == 7 and cfg.use_lora is False and cfg.learning_rate == 2e-4
    # YAML 1.1 reads an exponent without a dot ("1e-4") as a string: still a float here
    cfg = recipe("sft").Config.from_yaml(good, ["learning_rate=1e-4", "weight_decay=5E-2"])
    assert cfg.learning_rate == 1e-4 and cfg.weight_decay == 0.05
    with pytest.raises(ConfigError, match="learning_rate"):
        recipe("sft").Config.from_yaml(good, ["learning_rate=fast"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name_or_path: m\nsnapshot_dir: [s\noutput_dir: o\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d"):
        recipe("sft").Config.from_yaml(bad)


def test_snapshot_checks(tmp_path):
    snap = write_snapshot(tmp_path / "s", "preference")
    with pytest.raises(SnapshotError, match="kind 'preference' cannot be used"):
        load_snapshot(snap, kinds=("sft",))
    lines = (snap / "train.jsonl").read_text().splitlines()
    lines[2] = lines[2][:-5]
    (snap / "train.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(SnapshotError, match=r"train.jsonl:3: invalid JSON"):
        load_snapshot(snap, kinds=("preference",))
    lines[2] = json.dumps(
        {"prompt": [{"role": "user", "content": "x"}], "chosen": "not messages", "rejected": []}
    )
    (snap / "train.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(SnapshotError, match=r"train.jsonl:3: column 'chosen'"):
        load_snapshot(snap, kinds=("preference",))
    (snap / "train.jsonl").write_text("\n".join(lines[:2] + lines[3:]) + "\n")
    with pytest.raises(SnapshotError, match=r"manifest\.json row_counts says 12"):
        load_snapshot(snap, kinds=("preference",))
    with pytest.raises(SnapshotError, match=r"manifest\.json is missing"):
        load_snapshot(tmp_path, kinds=("preference",))


def test_truncated_rows_dropped_by_default(tmp_path):
    extra = {
        "prompt": [{"role": "user", "content": "q"}],
        "completion": [{"role": "assistant", "content": "cut"}],
        "truncated": True,
    }
    snap = write_snapshot(tmp_path / "s", "sft", train=4, extra_rows=[extra])
    s = load_snapshot(snap, kinds=("sft",))
    assert len(s.train) == 4 and s.dropped_truncated["train"] == 1 and "truncated" not in s.train[0]
    assert len(load_snapshot(snap, kinds=("sft",), drop_truncated=False).train) == 5


def test_pad_equal_to_eos_is_replaced(tmp_path, tiny_lm_pad_is_eos):
    """SmolLM2 ships pad == eos; recipes pad with another token so end-of-turn is never masked."""
    snap = write_snapshot(tmp_path / "snap", "preference")
    dpo = recipe("dpo")
    result = dpo.run(
        dpo.Config.from_dict(base_config(tiny_lm_pad_is_eos, snap, tmp_path / "out", max_steps=1))
    )
    tok = json.loads((Path(result["final_dir"]) / "tokenizer_config.json").read_text())
    assert tok["pad_token"] != tok["eos_token"]


def test_cli_runs_a_recipe_and_reports_config_errors(tmp_path, tiny_lm):
    snap = write_snapshot(tmp_path / "snap", "sft")
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(json.dumps(base_config(tiny_lm, snap, tmp_path / "out", max_steps=2)))  # JSON is YAML
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "training.recipes.sft", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "succeeded" and (tmp_path / "out" / "final" / "model.safetensors").exists()
    bad = subprocess.run(
        [sys.executable, "-m", "training.recipes.sft", "--config", str(cfg), "--set", "lora_dropout=2"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert bad.returncode == 2 and "lora_dropout: must be in [0, 1)" in bad.stderr


@pytest.mark.parametrize("method", METHODS)
def test_example_configs_load_and_start_with_their_launch_command(method):
    path = ROOT / "training" / "configs" / f"{method}.yaml"
    assert path.read_text().startswith(f"# python -m training.recipes.{method} --config")
    cfg = recipe(method).Config.from_yaml(path)
    assert cfg.METHOD == method and not cfg.model_name_or_path.startswith("~")


def test_accelerate_configs_parse():
    import yaml

    for name in ("multi_gpu", "deepspeed_zero2", "deepspeed_zero3"):
        data = yaml.safe_load((ROOT / "training" / "configs" / "accelerate" / f"{name}.yaml").read_text())
        assert data["distributed_type"] in ("MULTI_GPU", "DEEPSPEED") and data["num_processes"] >= 2


def test_configs_validate_without_importing_torch():
    """The web process validates run configs through these classes: it must not pull in torch."""
    code = (
        "import sys\n"
        "from training.recipes import METHODS, recipe\n"
        "for m in METHODS: recipe(m).Config\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.stdout.split() == ["False", "False"], done.stderr
