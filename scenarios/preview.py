"""A scenario at a glance: a text summary of its experiences and attributes, and a PNG grid of example images."""
from __future__ import annotations

import io
from itertools import combinations
from typing import Optional

import torch

from dncsim.analysis.orthogonality import labeling_independence
from dncsim.analysis.text_table import format_table
from dncsim.common import atomic_write_bytes
from dncsim.scenarios.sources import SourceData
from dncsim.scenarios.streams import Scenario

__all__ = ["describe", "describe_attributes", "save_example_grid", "example_grid_png"]

MAX_PAIRED = 12          # Cramér's V is computed among the first this many labelings
MAX_PAIR_ROWS = 20       # pair rows shown (the most dependent first)


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def describe(sc: Scenario) -> str:
    """Summary: source, input shape, split sizes and evaluation data, then a row per experience (task
    label, labeling or shift, classes with names, train and test sizes; for a factor stream which
    attribute varies and what the others are held at) and a row per evaluation task."""
    src = sc.source
    cfg = sc.config
    shape = "x".join(map(str, src.input_shape))
    probe = src.evaluation_split("train")
    where = ("rendered independently of the training data" if src.probe is not None
             else "the source's train and test splits")
    digests = sc.input_digests()
    same = len(set(digests)) < len(digests)
    head = (f"source {src.name}: {'images' if src.is_image else 'vectors'} {shape}, "
            f"{len(src.train)} train / {len(src.test)} test samples; labelings: {', '.join(src.labelings)}\n"
            f"evaluation data: {len(probe)} probe-train / {len(src.test)} probe-test samples ({where})\n"
            f"stream {sc.stream_type}: {len(sc.experiences)} experiences (seed {cfg.seed}); training inputs "
            + ("IDENTICAL in some experiences" if same else "differ between experiences"))
    rows = []
    factor = any(e.varying for e in sc.experiences)
    for e in sc.experiences:
        what = e.labeling if not e.shift_name else f"{e.labeling} / {e.shift_name}"
        row = [e.index, e.task_label, what, len(e.classes), _short(", ".join(e.class_names)), len(e.train_idx),
               len(e.test_idx)]
        if factor:
            held = "; ".join(f"{a}={'/'.join(v)}" for a, v in e.held.items()) or "nothing (everything varies)"
            row.append(_short(held, 70))
        rows.append(row)
    header = ["exp", "task", "labeling", "C", "classes", "train", "test"] + (["held (others vary)"] if factor else [])
    table = format_table(header, rows, title="Training experiences")
    task_rows = [[t.index, t.name, "watched" if t.learned_at is None else t.learned_at, len(t.classes),
                  len(t.train_idx), len(t.test_idx)] for t in sc.eval_tasks]
    tasks = format_table(["task", "name", "learned in exp", "C", "probe-train", "probe-test"], task_rows,
                         title="Evaluation tasks (probed after every experience)")
    selection = f"\n{src.info['selection']}" if src.info.get("selection") else ""
    return head + selection + "\n\n" + table + "\n\n" + tasks + "\n\n" + describe_attributes(src)


def describe_attributes(src: SourceData) -> str:
    """The source's labelings as attributes: per labeling its values with their train / test counts and
    whether its classes are exactly balanced; then, per pair of labelings, Cramér's V on the train and
    test splits (``analysis.orthogonality.labeling_independence``; 0 = independent, as Prop. 4.2
    assumes), the most dependent pairs first."""
    rows = []
    for lab in src.labelings:
        K = src.num_classes(lab)
        tr = torch.bincount(src.train.labels[lab], minlength=K).tolist()
        te = torch.bincount(src.test.labels[lab], minlength=K).tolist()
        values = ", ".join(f"{n} {a}/{b}" for n, a, b in zip(src.label_names[lab], tr, te))
        rows.append([lab, K, _short(values, 90), "yes" if len(set(tr)) == 1 and len(set(te)) == 1 else "no"])
    out = format_table(["attribute", "K", "values (train/test count)", "balanced"], rows,
                       title="Attributes (labelings of the source)")
    paired = src.labelings[:MAX_PAIRED]
    if len(paired) < 2:
        return out
    pairs = []
    for a, b in combinations(paired, 2):
        tr = labeling_independence(src.train.labels[a], src.train.labels[b])
        te = labeling_independence(src.test.labels[a], src.test.labels[b])
        pairs.append((tr["cramers_v"], te["cramers_v"], f"{a} - {b}",
                      "yes" if tr["independent"] and te["independent"] else "no"))
    pairs.sort(key=lambda p: (-p[0], p[2]))
    shown = [[name, f"{v:.3f}", f"{w:.3f}", ind] for v, w, name, ind in pairs[:MAX_PAIR_ROWS]]
    more = len(pairs) - len(shown)
    note = (f"\n... {more} more pairs, V <= {pairs[MAX_PAIR_ROWS - 1][0]:.3f} on train" if more > 0 else "")
    if len(src.labelings) > MAX_PAIRED:
        note += f"\n(pairs among the first {MAX_PAIRED} of {len(src.labelings)} labelings)"
    return out + "\n\n" + format_table(["pair", "V train", "V test", "independent"], shown,
                                        title="Pairwise Cramér's V (0: independent, as Prop. 4.2 assumes)") + note


def save_example_grid(sc: Scenario, path, *, per_experience: int = 8, split: str = "train") -> bool:
    """Save :func:`example_grid_png` to ``path`` (atomically; only a regular file is replaced). Returns
    False (and writes nothing) for vector sources."""
    png = example_grid_png(sc, per_experience=per_experience, split=split)
    if png is None:
        return False
    atomic_write_bytes(path, png)
    return True


def example_grid_png(sc: Scenario, *, per_experience: int = 8, split: str = "train") -> Optional[bytes]:
    """A PNG with one row per experience: ``per_experience`` training images (classes taken in turn)
    titled with their class name; None for vector sources."""
    if not sc.source.is_image:
        return None
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
        axes[t][0].set_ylabel(f"exp {t}\n{e.shift_name or e.labeling}" + ("\nvaries" if e.varying else ""),
                              fontsize=8)
    fig.suptitle(f"{sc.source.name} - {sc.stream_type}: example {split} images per experience", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
