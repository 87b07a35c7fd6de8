"""The report's figures: clean / adversarial / purified images side by side.
"""

from __future__ import annotations

from pathlib import Path

import torch

from attacks import APGD, ExactGradient
from manifold_defense import DefendedClassifier, PurifiedClassifier

from ..suite import Row

__all__ = []


def _figures(out: Path, per_eps: dict[float, list[Row]], defended: PurifiedClassifier, x: torch.Tensor,
             y: torch.Tensor, eps: float, *, examples: bool = True) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps_values = sorted(per_eps)
    fig, ax = plt.subplots(figsize=(6, 4))
    series: dict[tuple[str, str], list[float]] = {}
    for e in eps_values:
        for r in per_eps[e]:
            if r.threat.startswith("Linf") or r.attack.startswith("worst"):
                series.setdefault((r.model, r.attack), []).append(r.accuracy)
    for (model, attack), accs in series.items():
        if len(accs) == len(eps_values):
            style = "-" if attack.startswith("worst") else ":"
            ax.plot(eps_values, accs, style, marker="o", label=f"{model}: {attack}")
    ax.set_xlabel("Linf eps")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_eps.png", dpi=120)
    plt.close(fig)
    if not examples:
        return

    adv = APGD(eps=eps, steps=20, loss="dlr", bounds=defended.pixel_range, seed=0)(ExactGradient(defended), x, y).adversarial
    with torch.no_grad():
        projected = defended.purifier(adv)
    shown = "G(z*)" if isinstance(defended, DefendedClassifier) else "P(x_adv)"
    fig, axes = plt.subplots(3, len(x), figsize=(len(x) * 1.2, 4), squeeze=False)
    for j in range(len(x)):
        for i, (img, title) in enumerate(((x, "x"), (adv, f"exact-gradient APGD eps {eps:g}"), (projected, shown))):
            lo, hi = defended.pixel_range
            pixels = ((img[j].detach().cpu() - lo) / (hi - lo)).clamp(0, 1)  # shown in [0, 1]
            if pixels.shape[0] == 1:
                axes[i, j].imshow(pixels[0], cmap="gray", vmin=0, vmax=1)
            else:
                axes[i, j].imshow(pixels[:3].permute(1, 2, 0))
            axes[i, j].axis("off")
            if j == 0:
                axes[i, j].set_title(title, fontsize=7, loc="left")
    fig.tight_layout()
    fig.savefig(out / "examples.png", dpi=120)
    plt.close(fig)
