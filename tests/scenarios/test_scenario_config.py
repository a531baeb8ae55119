"""The scenario schema: defaults, and one-line errors naming the key with accepted values / did-you-mean."""
import pytest

from dncsim.analysis import DncsimError
from dncsim.scenarios.config import ScenarioConfig, load_scenario_config, scenario_from_mapping


def test_defaults_are_the_shapes_factor_stream():
    cfg = ScenarioConfig()
    assert cfg.source.name == "shapes" and cfg.stream.type == "factor"
    assert cfg.stream.attributes is None and cfg.stream.hold == "one" and cfg.seed == 0
    same = scenario_from_mapping({"source": {"name": "shapes"}, "stream": {"type": "factor", "hold": "one"}})
    assert same == cfg


@pytest.mark.parametrize("data,message", [
    ({"sourc": {}}, "scenario: unknown key 'sourc' (did you mean 'source'?); accepted keys: seed, source, stream"),
    ({"source": {"name": "shapes", "colour": ["red"]}},
     "scenario.source: unknown key 'colour' (did you mean 'colors'?)"),
    ({"source": {"name": "shape"}},
     "scenario.source.name: 'shape' is not one of shapes, digits, mnist, fashion_mnist, kmnist, cifar10, cifar100, "
     "features, dsprites, shapes3d, celeba_attributes, image_table (did you mean 'shapes'?)"),
    ({"stream": {"type": "multi_label", "labelings": ["color"]}},
     "scenario.stream.type: 'multi_label' is not one of factor, class_incremental, task_incremental, "
     "domain_incremental, multilabel, joint (did you mean 'multilabel'?)"),
    ({"stream": {"type": "class_incremental", "experiences": "five"}},
     "scenario.stream.experiences: input should be a valid integer (got 'five')"),
    ({"stream": {"type": "class_incremental", "experiences": 0}},
     "scenario.stream.experiences: input should be greater than or equal to 1 (got 0)"),
    ({"stream": {"type": "domain_incremental", "experiences": 3, "shift": "rotation"}},
     "scenario.stream.shift: 'rotation' is not one of permute, rotate, color"),
    ({"stream": {"type": "multilabel", "labelings": []}}, "scenario.stream.labelings: list should have at least 1 "
                                                          "item"),
    ({"stream": {"type": "multilabel", "labelings": ["color", "color"]}}, "scenario.stream.labelings: labelings repeat "
                                                                          "color"),
    ({"stream": {"type": "class_incremental"}}, "scenario.stream.experiences: required key is missing"),
    ({"stream": {"experiences": 2}}, "scenario.stream: missing key 'type'"),
    ({"seed": -1}, "scenario.seed: input should be greater than or equal to 0 (got -1)"),
    ({"source": {"name": "features"}}, "scenario.source.path: required key is missing"),
    ({"source": {"name": "mnist", "data_root": "/x", "downlaod": True}}, "(did you mean 'download'?)"),
    ([1, 2], "scenario: expected a mapping of keys (source, stream, seed); got list"),
])
def test_bad_config_is_one_line_naming_the_key(data, message):
    with pytest.raises(DncsimError) as err:
        scenario_from_mapping(data)
    text = str(err.value)
    assert message in text, text
    assert "\n" not in text


def test_yaml_file_errors(tmp_path):
    with pytest.raises(DncsimError, match="no such file"):
        load_scenario_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("scenario:\n  source: [unclosed\n")
    with pytest.raises(DncsimError, match=r"bad.yaml: not valid YAML \(line \d+, column \d+\)"):
        load_scenario_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(DncsimError, match="expected a YAML mapping"):
        load_scenario_config(lst)
    other = tmp_path / "other.yaml"
    other.write_text("backbone: convnet\n")
    with pytest.raises(DncsimError, match="no 'scenario' section"):
        load_scenario_config(other)
    ok = tmp_path / "ok.yaml"
    ok.write_text("scenario:\n  seed: 3\n  stream: {type: class_incremental, experiences: 2, labeling: shape}\n")
    cfg = load_scenario_config(ok)
    assert cfg.seed == 3 and cfg.stream.experiences == 2 and cfg.source.name == "shapes"
