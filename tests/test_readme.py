"""The README stays true: the two commands match .ci/run, and every config key is documented."""
import re
from pathlib import Path

from dncsim.common import model_classes
from dncsim.simulator.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def all_keys(model, seen=None):
    seen = set() if seen is None else seen
    for name, field in model.model_fields.items():
        seen.add(name)
        for sub in model_classes(field.annotation):
            all_keys(sub, seen)
    return seen


def test_every_config_key_is_in_the_readme():
    spans = re.findall(r"`([^`\n]+)`", README)
    missing = sorted(k for k in all_keys(RunConfig)
                     if not any(re.search(rf"(^|[.\s{{]){k}($|[.:\s])", span) for span in spans))
    assert not missing, f"undocumented config keys: {missing}"


def test_every_metric_name_is_defined_in_the_readme():
    """Every name a registered metric emits (and every metric constant) has a definition row."""
    from dncsim.analysis import names
    from dncsim.analysis.metrics import DEFAULT_METRICS
    not_metrics = ("NCC", "LINEAR", "REFIT", "FROZEN", "CI_LOW", "CI_HIGH")      # probes, protocols, suffixes
    metrics = [v for k, v in vars(names).items() if k.isupper() and isinstance(v, str) and k not in not_metrics]
    metrics += [name for cls in DEFAULT_METRICS for name in cls.emits]
    assert len(set(metrics)) >= 18          # the 18 metric names of the shipped collection, at least
    missing = sorted({m for m in metrics if f"`{m}`" not in README})
    assert not missing, f"metrics without a README definition: {missing}"


def test_the_ci_script_runs_the_readme_test_command():
    blocks = re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)
    assert len(blocks) >= 2
    test_cmd = next(b for b in blocks if "pytest" in b).strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci
