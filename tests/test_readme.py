"""The README and the documentation stay true: the two commands match .ci/run, the README stays short,
every config key is in the generated configuration reference and every metric has a definition."""
import re
import sys
from pathlib import Path

from dncsim.common import model_classes
from dncsim.simulator.config import RunConfig
from dncsim.simulator.study import StudyConfig

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "hooks"))
import gen_ref  # noqa: E402  (the generator of the reference pages, docs/hooks/gen_ref.py)


def all_paths(model, prefix=""):
    """Every dotted key of the schema, through every form of a section."""
    out = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        out.add(path)
        for sub in model_classes(field.annotation):
            out |= all_paths(sub, path)
    return out


def test_every_config_key_has_a_described_row_in_the_generated_reference():
    page = gen_ref.configuration_page()
    rows = dict(re.findall(r"^\| `([^`]+)` \|(.*)$", page, flags=re.M))
    keys = all_paths(RunConfig) | all_paths(StudyConfig)
    assert len(keys) >= 180          # 185 keys today; other helpers add more
    missing = sorted(k for k in keys if k not in rows)
    assert not missing, f"config keys missing from the generated reference: {missing}"
    undescribed = sorted(k for k in keys if rows[k].rstrip().endswith("|  |"))
    assert not undescribed, f"config keys without a description (Field(description=...)): {undescribed}"


def test_the_generated_reference_states_type_default_and_allowed_values():
    page = gen_ref.configuration_page()
    row = next(line for line in page.splitlines() if line.startswith("| `analysis.ddof` |"))
    assert "`0`" in row and "`1`" in row and "delta degrees of freedom" in row
    row = next(line for line in page.splitlines() if line.startswith("| `training.lr` |"))
    assert "| float |" in row and "`0.001`" in row and "> 0" in row


def test_every_cli_flag_is_in_the_generated_cli_reference():
    from dncsim.simulator.cli import build_parser
    page = gen_ref.cli_page()
    parser = build_parser()
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    assert set(subs) == {"analyze", "scenario", "run", "report", "study", "stats"}
    for name, sub in subs.items():
        section = page.split(f"## `dncsim {name}`", 1)[1].split("\n## ", 1)[0]
        for action in sub._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}" in section, f"dncsim {name} {flag} missing from the CLI reference"


def test_every_metric_name_is_defined_in_the_docs():
    """Every name a registered metric emits (and every metric constant) has a definition row."""
    from dncsim.analysis import names
    from dncsim.analysis.metrics import DEFAULT_METRICS
    metrics_page = (DOCS / "methods" / "metrics.md").read_text()
    not_metrics = ("NCC", "LINEAR", "REFIT", "FROZEN", "CI_LOW", "CI_HIGH")      # probes, protocols, suffixes
    metrics = [v for k, v in vars(names).items() if k.isupper() and isinstance(v, str) and k not in not_metrics]
    metrics += [name for cls in DEFAULT_METRICS for name in cls.emits]
    assert len(set(metrics)) >= 18          # the 18 metric names of the shipped collection, at least
    missing = sorted({m for m in metrics if f"`{m}`" not in metrics_page})
    assert not missing, f"metrics without a definition in docs/methods/metrics.md: {missing}"


def test_the_ci_script_runs_the_readme_test_command():
    blocks = re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)
    assert len(blocks) >= 2
    test_cmd = next(b for b in blocks if "pytest" in b).strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci


def test_the_readme_is_short_and_its_commands_are_the_install_pages():
    assert len(README) <= 15_000
    blocks = re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)
    install = (DOCS / "getting-started" / "install.md").read_text()
    for block in blocks[:2]:
        assert block in install, "docs/getting-started/install.md differs from the README's two commands"
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README)
    assert figures, "the README shows one figure of the quickstart's report"
    for fig in figures:
        assert (ROOT / fig).is_file() and (ROOT / fig).stat().st_size < 200_000, fig
