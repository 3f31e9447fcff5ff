"""``fxgate demo``: the bundled EURUSD H1 sample replayed walk-forward through all four layers, with its gate.toml
(the commented defaults, a 0.8-pip spread, layers 2 and 3 on the nano model unless ``--no-llm``)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import click

from fxgate.engine.cli._replay_file import Job
from fxgate.engine.cli._runs import check_out_path, run_replays
from fxgate.engine.cli._signals import stop_on_signals
from fxgate.engine.config import DEFAULT_TOML, GateConfig, config_from_dict
from fxgate.engine.core.atomic import write_text
from fxgate.engine.loader import sample_path

__all__ = ["demo_cmd"]

#: the precision the demo asks the walk-forward certification for: above a coin, below what a real edge gives
DEMO_TARGET = 0.55


def _toml_set(text: str, section: str | None, key: str, value: str) -> str:
    """``text`` with the value of ``key`` in ``[section]`` (None: the top level) replaced, its comment kept."""
    lines = text.split("\n")
    cur: str | None = None
    for i, line in enumerate(lines):
        head = re.match(r"^\[([^\]]+)\]", line)
        if head:
            cur = head.group(1).strip()
            continue
        m = re.match(rf"^({re.escape(key)}\s*=\s*)(\"[^\"]*\"|[^\s#]+)(.*)$", line)
        if m and cur == section:
            pad = max(1, len(m.group(2)) + len(m.group(3)) - len(m.group(3).lstrip()) - len(value))
            rest = m.group(3).lstrip()
            lines[i] = m.group(1) + value + (" " * pad + rest if rest else "")
            return "\n".join(lines)
    raise RuntimeError(f"fxgate bug: DEFAULT_TOML has no {key!r} in [{section or 'top level'}]")


def _demo_config(llm: bool, where: str) -> tuple[str, GateConfig]:
    """The demo's gate.toml: the commented defaults with a 0.8-pip spread and, with ``llm``, layers 2 and 3 on the
    nano model (else off). Returns the text and the config it loads as (checked: the defaults file may change)."""
    text = _toml_set(DEFAULT_TOML, None, "spread", "0.00008")
    # certify each walk-forward window's thresholds on the 1,000 bars before it, next to the fixed 0.95 ones
    text = _toml_set(text, "certify", "target", str(DEMO_TARGET))
    text = _toml_set(text, "llm", "model", '"nano"' if llm else '""')
    for layer in ("l2", "l3"):
        text = _toml_set(text, layer, "enabled", "true" if llm else "false")
    cfg = config_from_dict(tomllib.loads(text), where)
    got = (cfg.spread, cfg.llm.model, cfg.l2.enabled, cfg.l3.enabled, cfg.certify.target)
    if got != (0.00008, "nano" if llm else "", llm, llm, DEMO_TARGET):
        raise RuntimeError("fxgate bug: the demo's gate.toml does not load as the demo's settings")
    return text, cfg


@click.command("demo")
@click.option("--out", type=click.Path(path_type=Path), default=Path("fxgate-demo"), show_default=True)
@click.option("--no-llm", is_flag=True, help="Replay layers 1 and 4 only (no nano model, no torch needed).")
@click.option("--force", is_flag=True, help="Write into --out even if its run.json does not match its files.")
def demo_cmd(out: Path, no_llm: bool, force: bool) -> None:
    """Replay the bundled EURUSD H1 sample walk-forward through all four layers and write the report.

    The sample has no spread column: costs assume a 0.8-pip EURUSD spread. Layer 1 is refit on all earlier bars
    before each 1,000-bar window; the first 2,000 bars are history only. Layers 2 and 3 run fxgate's nano model —
    random weights, built on first use — which shows the machinery, not a trading edge: point [llm] model at a
    trained GGUF for that.
    """
    text, cfg = _demo_config(llm=not no_llm, where=str(out / "gate.toml"))
    cfg_path = out / "gate.toml"
    with stop_on_signals() as stop:
        check_out_path(out)

        def announce() -> None:
            write_text(cfg_path, text)
            click.echo(f"demo: bundled EURUSD H1 sample ({sample_path()}), config {cfg_path}")
            if not no_llm:
                click.echo(
                    "demo: layers 2 and 3 use the nano LLM (random weights: it exercises the machinery; its "
                    "verdicts are noise)"
                )

        run_replays(
            [Job(sample_path(), out)],
            cfg,
            cfg_path,
            None,
            {"symbol": "EURUSD"},
            1,
            force,
            stop,
            probe_llm=not no_llm,
            extra_files=("gate.toml",),
            before=announce,
        )
