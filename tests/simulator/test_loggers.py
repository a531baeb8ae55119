"""`output.loggers`: tensorboard by default, wandb offline inside the run directory (nothing leaves the
machine), one-line errors naming the extra when a logger's package is missing."""
import json
import struct
import sys

import pytest

from dncsim.common import DncsimError
from dncsim.simulator.cli import main
from dncsim.simulator.config import run_from_mapping
from dncsim.simulator.run import run
from tests.support.tiny import DROP, tiny_config

RUN = tiny_config({"scenario.source.probe_repeats": 2, "scenario.stream.attributes": ["shape", "color"],
                   "training.batch_size": 48, "evaluation.probes": ["ncc"], "analysis.episodes": 5,
                   "analysis.bootstrap": 0, "output.tensorboard": DROP, "output.loggers": ["wandb"]},
                  name="tiny-wandb", seed=2, objective={"name": "supervised"})


def wandb_records(path):
    """The protobuf records of a .wandb transaction log (LevelDB's log format: 32 KiB blocks of
    checksum, length, type, payload after a 7-byte header), parsed as wandb's ``Record``."""
    from wandb.proto import wandb_internal_pb2 as pb
    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, payloads, partial = 7, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:                          # block trailer: padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            payloads.append(chunk)
        elif kind in (2, 3):
            partial += chunk
        elif kind == 4:
            payloads.append(partial + chunk)
            partial = b""
    records = []
    for payload in payloads:
        record = pb.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


@pytest.fixture
def no_wandb_config_outside(tmp_path, monkeypatch):
    """wandb's own settings and cache in the test's directory, WANDB_MODE unset (dncsim's default: offline)."""
    for name in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_DIR", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))


@pytest.mark.slow
def test_a_run_logs_to_an_offline_wandb_run_inside_its_directory(tmp_path, no_wandb_config_outside, capsys):
    pytest.importorskip("wandb")
    out = run(run_from_mapping(RUN), tmp_path / "run", quiet=True, stream=sys.stderr)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    run_id = manifest["wandb_run_id"]
    offline = sorted((out / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 1                                  # offline: nothing was sent anywhere
    assert not (out / "tb").exists()                          # tensorboard not asked for
    records = wandb_records(offline[0] / f"run-{run_id}.wandb")          # complete when the run returns
    header = next((r.run for r in records if r.WhichOneof("record_type") == "run"), None)
    assert header is not None, [r.WhichOneof("record_type") for r in records]
    assert (header.project, header.display_name, header.run_id) == ("dncsim", "tiny-wandb", run_id)
    config = {item.key: json.loads(item.value_json) for item in header.config.update}
    assert config["backbone"]["name"] == "convnet" and config["seed"] == 2
    logged = {item.key or "/".join(item.nested_key)             # wandb keeps a name with '/' as its parts
              for r in records if r.WhichOneof("record_type") == "history" for item in r.history.item}
    table = {r["metric"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}
    assert {"dncsim/acc/ncc/refit/Task000", "dncsim/acc/ncc/frozen/Task001", "dncsim/dir_cdnv/Task001",
            "TrainingExperience"} <= logged
    assert {name.split("/")[1] for name in logged if name.startswith("dncsim/")} == table
    assert f"wandb: offline run in {offline[0]}; upload it with: wandb sync {offline[0]}" in capsys.readouterr().err


def test_loggers_default_to_tensorboard_and_are_validated():
    assert run_from_mapping({}).output.active_loggers == ["tensorboard"]
    assert run_from_mapping({"output": {"tensorboard": False}}).output.active_loggers == []
    assert run_from_mapping({"output": {"loggers": ["tensorboard", "wandb"]}}).output.active_loggers == \
        ["tensorboard", "wandb"]
    with pytest.raises(DncsimError, match=r"^output.loggers\[1\]: 'mlflow' is not one of tensorboard, wandb$"):
        run_from_mapping({"output": {"loggers": ["wandb", "mlflow"]}})
    with pytest.raises(DncsimError, match=r"^output.loggers: 'wandb' is listed twice$"):
        run_from_mapping({"output": {"loggers": ["wandb", "wandb"]}})


def test_without_wandb_asking_for_it_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfg.json").write_text(json.dumps(RUN))
    assert main(["run", "cfg.json", "--out", "run"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("dncsim run: error: output.loggers: 'wandb' needs the wandb package: "
                           "pip install 'dncsim[wandb]'")
    assert not (tmp_path / "run").exists()


def test_a_study_names_the_wandb_project_after_itself(tmp_path):
    from dncsim.simulator.study import StudyConfig, expand_grid
    cfg = StudyConfig(name="interference", base=RUN, factors={"seed": [0, 1]})
    assert {s["config"]["output"]["wandb_project"] for s in expand_grid(cfg)} == {"interference"}
    mine = StudyConfig(name="s", base={**RUN, "output": {**RUN["output"], "wandb_project": "mine"}},
                       factors={"seed": [0]})
    assert expand_grid(mine)[0]["config"]["output"]["wandb_project"] == "mine"
    plain = StudyConfig(name="s", base={}, factors={"seed": [0]})
    assert expand_grid(plain)[0]["config"]["output"]["wandb_project"] is None
