"""A scenario at a glance: a text summary of its experiences and a PNG grid of example images."""
from __future__ import annotations

from pathlib import Path

import torch

from dncsim.analysis.text_table import format_table
from dncsim.scenarios.streams import Scenario

__all__ = ["describe", "save_example_grid"]


def describe(sc: Scenario) -> str:
    """Summary: source, input shape, split sizes, then a row per experience (task label, labeling or
    shift, classes with names, train and test sizes)."""
    src = sc.source
    cfg = sc.config
    shape = "x".join(map(str, src.input_shape))
    head = (f"source {src.name}: {'images' if src.is_image else 'vectors'} {shape}, "
            f"{len(src.train)} train / {len(src.test)} test samples; labelings: {', '.join(src.labelings)}\n"
            f"stream {sc.stream_type}: {len(sc.experiences)} experiences (seed {cfg.seed})")
    rows = []
    for e in sc.experiences:
        names = ", ".join(e.class_names)
        if len(names) > 60:
            names = names[:57] + "..."
        what = e.labeling if not e.shift_name else f"{e.labeling} / {e.shift_name}"
        rows.append([e.index, e.task_label, what, len(e.classes), names, len(e.train_idx), len(e.test_idx)])
    table = format_table(["exp", "task", "labeling", "C", "classes", "train", "test"], rows)
    return head + "\n\n" + table


def save_example_grid(sc: Scenario, path, *, per_experience: int = 8, split: str = "train") -> bool:
    """Save a PNG with one row per experience: ``per_experience`` training images (classes taken in turn)
    titled with their class name. Returns False (and writes nothing) for vector sources."""
    if not sc.source.is_image:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = len(sc.experiences)
    fig, axes = plt.subplots(T, per_experience, figsize=(1.3 * per_experience, 1.45 * T + 0.4), squeeze=False)
    gen = torch.Generator().manual_seed(sc.config.seed)
    for t, e in enumerate(sc.experiences):
        x, y = sc.experience_data(t, split)
        picks = []
        for k in range(per_experience):          # cycle through the classes so each one shows up
            c = e.classes[k % len(e.classes)]
            pool = (y == c).nonzero().flatten()
            picks.append(int(pool[torch.randint(len(pool), (1,), generator=gen)]) if len(pool) else None)
        for k, ax in enumerate(axes[t]):
            ax.set_xticks([])
            ax.set_yticks([])
            if picks[k] is None:
                ax.axis("off")
                continue
            img = x[picks[k]].clamp(0, 1)
            ax.imshow(img.permute(1, 2, 0).numpy() if img.shape[0] == 3 else img[0].numpy(),
                      cmap=None if img.shape[0] == 3 else "gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(e.class_names[e.classes.index(int(y[picks[k]]))], fontsize=8)
        axes[t][0].set_ylabel(f"exp {t}\n{e.shift_name or e.labeling}", fontsize=8)
    fig.suptitle(f"{sc.source.name} - {sc.stream_type}: example {split} images per experience", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return True
