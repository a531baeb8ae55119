"""The tiny run config of the tests (16-pixel shapes, a 4-wide convnet, one epoch, a 5-step probe) and
:func:`tiny_config`, which derives a test's own config from it by dotted-key changes."""
import copy

#: the shared tiny run: two factor tasks (color, style) on 16-pixel shapes; seconds on a CPU
TINY_BASE = {"scenario": {"source": {"name": "shapes", "image_size": 16, "train_repeats": 1, "test_repeats": 2},
                          "stream": {"type": "factor", "attributes": ["color", "style"]}},
             "backbone": {"name": "convnet", "width": 4, "feature_dim": 8},
             "training": {"epochs": 1, "batch_size": 32},
             "evaluation": {"linear_steps": 5}, "analysis": {"shots": [1], "episodes": 4},
             "output": {"report": False, "tensorboard": False, "checkpoints": False}}

#: a value of :func:`tiny_config` that removes the key (the run config's default then applies)
DROP = object()


def tiny_config(changes=None, **top) -> dict:
    """A deep copy of ``TINY_BASE`` with ``changes`` (``{"dotted.key": value}``; ``DROP`` removes the key)
    and top-level keys ``top`` (``name=``, ``seed=``, ``objective=``...) applied."""
    cfg = copy.deepcopy(TINY_BASE)
    for key, value in {**(changes or {}), **top}.items():
        *path, last = key.split(".")
        node = cfg
        for part in path:
            node = node.setdefault(part, {})
        if value is DROP:
            node.pop(last, None)
        else:
            node[last] = copy.deepcopy(value)
    return cfg
