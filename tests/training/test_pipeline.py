"""Training: chat-template parity between training and serving, resume after a kill, merge, manifest/verify,
the Modelfile, and the whole nano pipeline (`fxgate train all --preset nano`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fxgate.engine import sample_bars
from fxgate.engine.cli import cli
from fxgate.engine.config import DEFAULT_MODULES, GateConfig, L4Config
from fxgate.training.datasets import SplitSpec, build
from fxgate.training.pipeline import merge, verify, write_manifest, write_modelfile
from fxgate.training.presets import get_preset

EIGHT = DEFAULT_MODULES[:8]  # the data builder's fixed list before it took the serving config


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    p = d / "EURUSD.csv"
    sample_bars().to_csv(p)
    # the budget test below sizes its contexts for the eight-module formula section (the 18 default modules'
    # catalogue alone is longer than its 700-token margin); the served-config parity is tested in test_datasets
    build([p], d / "out", SplitSpec(horizon=1, spread=8e-5), config=GateConfig(l4=L4Config(modules=EIGHT)))
    return d / "out"


#: Qwen2's ChatML chat template (the second template the training/serving parity is tested on)
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _data_with_budget(src: Path, dst: Path, n_ctx: int, rows: list[dict]) -> Path:
    """A copy of a data directory's manifest with another serving budget, holding ``rows`` as its training
    scenarios."""
    m = json.loads((src / "manifest.json").read_text())
    m["prompt_budget"] = {**m["prompt_budget"], "n_ctx": n_ctx}
    (dst / "train").mkdir(parents=True)
    (dst / "manifest.json").write_text(json.dumps(m))
    (dst / "train" / "scenarios.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dst


@pytest.mark.parametrize("template", ["r1-distill", "chatml"])
def test_training_prompt_is_the_served_prompt_token_for_token(nano, data, tmp_path, template):
    """Real sample bars' scenarios: the prompt SFT/DPO train on (sft_examples, dpo_examples) is the live judge's
    prompt (LlmRuntime.build) text for text and token for token — with every section, and over the budget, where
    the live judge drops sections: training drops the same ones. For the R1-Distill template of the GGUF and for
    ChatML (an [llm] chat_template override), each also equal to transformers' apply_chat_template."""
    from fxgate.models.llm import LlmRuntime, LlmSettings
    from fxgate.models.prompt import load_template
    from fxgate.training.dpo import dpo_examples
    from fxgate.training.export import load_tokenizer
    from fxgate.training.sft import sft_examples

    tok = load_tokenizer(nano["hf"])
    kw = {}
    if template == "chatml":
        tok.chat_template = CHATML
        (tmp_path / "chatml.jinja").write_text(CHATML)
        kw["chat_template"] = str(tmp_path / "chatml.jinja")
    tpl = load_template(json.loads((data / "manifest.json").read_text())["template"]["id"])  # the config's
    rows = [json.loads(x) for x in (data / "val" / "scenarios.jsonl").read_text().splitlines()[::97][:6]]
    assert len(rows) == 6 and all("values" in r for r in rows)
    think, answer = 384, 512
    rt = LlmRuntime(LlmSettings(model=str(nano["q8"]), n_ctx=8192, **kw))
    full = max(rt.build(tpl, r["values"], think_budget=think, answer_budget=answer).n_tokens for r in rows)
    # the contexts: all sections fit; the lowest-priority section cannot fit; two sections cannot
    formulas = len(tok("## How the checks are computed", add_special_tokens=False)["input_ids"])
    seen_drops = set()
    for n_ctx in (full + think + answer + 8, full + think + answer + 8 - formulas, full + think + answer + 8 - 700):
        live_rt = LlmRuntime(LlmSettings(model=str(nano["q8"]), n_ctx=n_ctx, **kw))
        d = _data_with_budget(data, tmp_path / f"d{n_ctx}", n_ctx, rows)
        trained = sft_examples(d, tok)
        assert len(trained) == len(rows)
        for r, t in zip(rows, trained, strict=True):
            live = live_rt.build(tpl, r["values"], think_budget=think, answer_budget=answer)
            assert t["prompt"] == live.text
            # and both are what Hugging Face's apply_chat_template makes of the messages the judge sent
            assert live.text == tok.apply_chat_template(list(live.messages), tokenize=False, add_generation_prompt=True)
            ids_hf = tok(t["prompt"], add_special_tokens=False)["input_ids"]
            assert live_rt.tokenize(live.text) == ids_hf and len(ids_hf) == live.n_tokens
            seen_drops.add(live.dropped)
            if template == "r1-distill":
                joint = tok(t["prompt"] + r["completion"], add_special_tokens=False)["input_ids"]
                assert joint[: len(ids_hf)] == ids_hf  # the completion-only loss starts where the served context ends
        dpo_rows = [{**r, "chosen": r["completion"], "rejected": "x"} for r in rows]
        (d / "train" / "dpo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dpo_rows))
        assert [e["prompt"] for e in dpo_examples(d, tok)] == [e["prompt"] for e in trained]
        live_rt.close()
    rt.close()
    assert () in seen_drops and ("formulas",) in seen_drops  # every section, and over the budget
    assert any(len(x) >= 2 for x in seen_drops), seen_drops


def test_resume_after_a_kill_equals_an_uninterrupted_run(nano, data, tmp_path):
    import torch
    from safetensors.torch import load_file

    from fxgate.training.sft import train_sft

    p = replace(get_preset("nano"), save_steps=3, max_train_examples=24)
    a = train_sft(nano["hf"], data, tmp_path / "a", p, max_steps=6)
    env = dict(os.environ, FXGATE_FAULT_EXIT_AT_STEP="3")
    cmd = [
        sys.executable,
        "-m",
        "fxgate.training.sft",
        "--preset",
        "nano",
        "--base",
        str(nano["hf"]),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "b"),
        "--max-steps",
        "6",
        "--save-steps",
        "3",
    ]
    # the preset's example cap is part of the data order: pass the same one through the environment-free path
    killed = subprocess.run(cmd + ["--max-examples", "24"], env=env, capture_output=True, text=True)
    assert killed.returncode == 17, killed.stderr[-2000:]
    assert (tmp_path / "b" / "checkpoint-3").is_dir() and not (tmp_path / "b" / "adapter").exists()
    resumed = subprocess.run(cmd + ["--max-examples", "24", "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert b["resumed"] and b["steps"] == a["steps"] == 6
    wa = load_file(str(tmp_path / "a" / "adapter" / "adapter_model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "adapter" / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert worst < 1e-5, worst  # stated tolerance: CPU fp32, same seed, restored RNG and data order
    assert any(float(v.abs().max()) > 0 for k, v in wa.items() if "lora_B" in k)  # it did train
    # merging the adapter gives the logits of the adapted model (PEFT's forward as the reference)
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    merged_dir = merge(nano["hf"], tmp_path / "a" / "adapter", tmp_path / "merged")
    ids = torch.tensor([list(range(5, 60))])
    peft = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(nano["hf"])), str(tmp_path / "a" / "adapter")
    ).eval()
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir)).eval()
    with torch.no_grad():
        np.testing.assert_allclose(merged(ids).logits.numpy(), peft(ids).logits.numpy(), atol=1e-5)


def test_manifest_and_verify_catch_missing_short_and_altered_files(tmp_path):
    d = tmp_path / "run"
    (d / "sub").mkdir(parents=True)
    (d / "model.gguf").write_bytes(b"GGUF" + bytes(range(200)))
    (d / "sub" / "a.json").write_text('{"x": 1}')
    (d / "checkpoint-5").mkdir()
    (d / "checkpoint-5" / "opt.pt").write_bytes(b"x")
    m = write_manifest(d, note="t")
    assert set(m["files"]) == {"model.gguf", "sub/a.json"} and verify(d) == []
    r = CliRunner().invoke(cli, ["train", "verify", str(d)])
    assert r.exit_code == 0 and "OK: 2 files" in r.output
    (d / "model.gguf").write_bytes(b"GGUF" + bytes(range(100)))
    assert verify(d) == ["model.gguf: 104 bytes, expected 204 (truncated or altered)"]
    (d / "model.gguf").write_bytes(b"GGUF" + bytes(range(1, 201)))
    assert verify(d) == ["model.gguf: sha256 differs from the manifest (altered)"]
    (d / "sub" / "a.json").unlink()
    assert "sub/a.json: missing" in verify(d)
    r = CliRunner().invoke(cli, ["train", "verify", str(d)])
    assert r.exit_code == 1 and "FAIL sub/a.json: missing" in r.output
    assert verify(tmp_path / "nothing")[0].endswith("no such directory — nothing to verify")
    (tmp_path / "empty").mkdir()
    assert verify(tmp_path / "empty")[0].endswith("missing — nothing to verify against")
    # a manifest that lists nothing (or no model) verifies nothing: it must not say OK
    e = tmp_path / "nomodel"
    (e / "sub").mkdir(parents=True)
    (e / "sub" / "a.json").write_text("{}")
    write_manifest(e)
    assert len(verify(e)) == 1 and "lists no .gguf file" in verify(e)[0]


def _entry(p: Path) -> dict:
    import hashlib

    return {"bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}


def test_verify_checks_the_run_directory_only(tmp_path):
    """A manifest entry outside the run directory (absolute, '..', or through a symlink) is a problem, even when
    the file it points at matches its hash: verify never vouches for a file the run does not hold."""
    d = tmp_path / "run"
    d.mkdir()
    (d / "model.gguf").write_bytes(b"GGUF" + bytes(50))
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes(b"not part of the run")
    m = write_manifest(d)
    files = dict(m["files"])
    files["../elsewhere.bin"] = _entry(outside)
    files[str(outside)] = _entry(outside)
    (d / "link.bin").symlink_to(outside)
    files["link.bin"] = _entry(outside)
    (d / "manifest.json").write_text(json.dumps({**m, "files": files}))
    problems = verify(d)
    assert len(problems) == 3, problems
    assert any(p.startswith("../elsewhere.bin: not a path inside the run directory") for p in problems)
    assert any(p.startswith(f"{outside}: not a path inside the run directory") for p in problems)
    assert any(p.startswith("link.bin: a symlink pointing outside the run directory") for p in problems)
    r = CliRunner().invoke(cli, ["train", "verify", str(d)])
    assert r.exit_code == 1 and "FAIL link.bin" in r.output
    # a run directory with a symlink cannot get a manifest either
    with pytest.raises(ValueError, match="a symlink in the run directory"):
        write_manifest(d)


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        ('{"fxgate_manifest": 1, "files": {"a": ', "unreadable"),
        ("[1, 2]", "not a manifest"),
        ('{"fxgate_manifest": 1, "files": ["a"]}', '"files" is missing or not an object'),
        ('{"fxgate_manifest": 1}', '"files" is missing or not an object'),
        ('{"fxgate_manifest": 1, "files": {"a": {"bytes": 1}}}', "a: malformed manifest entry"),
        ('{"fxgate_manifest": 1, "files": {"a": 7}}', "a: malformed manifest entry"),
        ('{"files": {}}', "not a manifest written by `fxgate train all` or `fxgate train data`"),
        (b"\xff\xfe{}", "unreadable"),
    ],
)
def test_a_malformed_manifest_is_rc_1_with_a_message(tmp_path, text, msg):
    d = tmp_path / "run"
    d.mkdir()
    (d / "a").write_bytes(b"x")
    mp = d / "manifest.json"
    mp.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert any(msg in p for p in verify(d)), verify(d)
    r = CliRunner().invoke(cli, ["train", "verify", str(d)])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert msg in r.output and "Traceback" not in r.output


def test_modelfile(tmp_path):
    p = write_modelfile(tmp_path / "model-q8_0.gguf", tmp_path / "Modelfile")
    t = p.read_text()
    assert "FROM ./model-q8_0.gguf" in t and 'PARAMETER stop "<｜end▁of▁sentence｜>"' in t
    assert "PARAMETER temperature 0" in t
    tpl = t.split('TEMPLATE """')[1].split('"""')[0]
    # the roles' markers and the generation prompt are those of the chat template the judge renders with
    assert "<｜User｜>{{ .Content }}" in tpl and tpl.endswith("<｜Assistant｜><think>\n")


@pytest.mark.slow
def test_train_all_nano_passes_parity_and_verify(tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(cli, ["train", "all", "--preset", "nano", "--out", str(out)])
    assert r.exit_code == 0, r.output[-3000:]
    m = json.loads((out / "manifest.json").read_text())
    assert m["parity"]["tokenizer_mismatches"] == 0 and m["parity"]["q8_top1_agreement"] >= 0.98
    assert m["metrics"]["sft"]["last_logged_loss"] < m["metrics"]["sft"]["first_logged_loss"]
    assert {"model-f16.gguf", "model-q8_0.gguf", "Modelfile", "parity.json", "eval.json"} <= set(m["files"])
    assert CliRunner().invoke(cli, ["train", "verify", str(out)]).exit_code == 0
    # the parity check ran on >= 200 distinct validation prompts, F16 logits on >= 32 of them
    assert m["parity"]["prompts"] >= 200 and m["parity"]["f16_logit_prompts"] >= 32
    assert len(m["timings_s"]) >= 8  # every step's time is recorded; judging it is benchmarks/' job, not a test's
    # the model trained is served with the [l4] its data was built for (the default config's), refused under another
    from fxgate.engine.config import L2Config, L3Config, LlmConfig
    from fxgate.engine.gate import Gate
    from fxgate.models.llm import ModelFileError

    assert m["data_manifest"]["serving"]["l4"]["modules"] == list(GateConfig().l4.modules)
    served = GateConfig(llm=LlmConfig(model=str(out / "model-q8_0.gguf"), cache=""), l2=L2Config(), l3=L3Config())
    g = Gate(served, None, timeframe="H1")
    try:
        assert g.llm.error is None and g.llm.judge is not None
    finally:
        g.close()
    with pytest.raises(ModelFileError, match=r"\[l4\] does not match its training data"):
        Gate(replace(served, l4=L4Config(modules=EIGHT)), None, timeframe="H1")


@pytest.mark.parametrize("name", ["ddp.yaml", "fsdp.yaml"])
def test_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import ClusterConfig

    import fxgate.training

    c = ClusterConfig.from_yaml_file(str(Path(fxgate.training.__file__).parent / "accelerate" / name))
    assert c.num_processes == 8 and c.mixed_precision == "bf16"
    assert (c.distributed_type == "MULTI_GPU") if name == "ddp.yaml" else c.fsdp_config["fsdp_version"] == 2


def test_examples_longer_than_max_length_are_warned_about_and_counted():
    """An example longer than the preset's ``max_length`` loses its completion to the trainer's truncation: warned,
    with the count; one exactly ``max_length`` long is not. Counted as TRL builds the sequence: the tokenizer's
    special tokens (here a BOS) and the EOS TRL appends to a completion that lacks it are tokens too."""
    from fxgate.training.errors import DatasetWarning
    from fxgate.training.sft import _warn_truncated

    class Tok:  # one token per word; a BOS in front unless add_special_tokens=False, as a Llama tokenizer
        eos_token = "</s>"

        def __call__(self, text, add_special_tokens=True):  # type: ignore[no-untyped-def]
            return {"input_ids": ["<s>"] * add_special_tokens + text.replace("</s>", " </s>").split()}

    tok = Tok()
    ex = [
        {"prompt": "a b c ", "completion": "d e"},  # 5 words: 7 tokens with BOS and EOS
        {"prompt": "a b c d e f ", "completion": "g"},  # 7 words: 9 tokens
        {"prompt": "a ", "completion": "b</s>"},  # already ends with its EOS: 4 tokens with BOS, not 5
    ]
    with pytest.warns(DatasetWarning, match=r"1 of 3 training examples are longer than max_length = 8 .*longest 9"):
        assert _warn_truncated(ex, tok, 8, "data") == 1
    with pytest.warns(DatasetWarning, match="2 of 3"):
        assert _warn_truncated(ex, tok, 6, "data") == 2
    with pytest.warns(DatasetWarning, match="2 of 3"):
        assert _warn_truncated(ex, tok, 4, "data") == 2  # the third is exactly 4: not over
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _warn_truncated(ex, tok, 9, "data") == 0
