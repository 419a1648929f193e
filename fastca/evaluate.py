"""The article's evaluation protocol: 200 steps, mutate every digit, 200 more steps."""

import dataclasses
import json
import os
import sys

import numpy as np

from . import metrics
from .simulation import Simulation
from .errors import InputError


@dataclasses.dataclass
class Evaluation:
    """Curves over the 2 * half steps (percent), and the article's table row."""

    accuracy: np.ndarray
    agreement: np.ndarray
    half: int
    model: str
    backend: str
    seed: int
    digits: int

    def row(self):
        """Top accuracy (step), accuracy at ``half``, top agreement (step), agreement at ``half``
        (the article's table, over the first ``half`` steps)."""
        acc, agr = self.accuracy[: self.half], self.agreement[: self.half]
        return {
            "top_accuracy": float(acc.max()), "top_accuracy_step": int(acc.argmax() + 1),
            "accuracy_at_half": float(acc[-1]),
            "top_agreement": float(agr.max()), "top_agreement_step": int(agr.argmax() + 1),
            "agreement_at_half": float(agr[-1]),
        }

    def table_line(self):
        r = self.row()
        return (f"top accuracy {r['top_accuracy']:.1f} at {r['top_accuracy_step']} | accuracy@{self.half} "
                f"{r['accuracy_at_half']:.1f} | top agreement {r['top_agreement']:.1f} at {r['top_agreement_step']} | "
                f"agreement@{self.half} {r['agreement_at_half']:.1f}")

    def save(self, folder):
        """Write curves.csv, evaluation.json and curves.png into ``folder``; returns the paths."""
        from .viz import plot_curves

        os.makedirs(folder, exist_ok=True)
        csv_path = os.path.join(folder, "curves.csv")
        steps = np.arange(1, len(self.accuracy) + 1)
        np.savetxt(csv_path, np.column_stack([steps, self.accuracy, self.agreement]), delimiter=",",
                   header="step,accuracy,agreement", comments="", fmt=["%d", "%.4f", "%.4f"])
        json_path = os.path.join(folder, "evaluation.json")
        with open(json_path, "w", encoding="utf-8") as f:
            json.dump({"model": self.model, "backend": self.backend, "seed": self.seed, "digits": self.digits,
                       "half": self.half, **self.row(), "accuracy": self.accuracy.round(4).tolist(),
                       "agreement": self.agreement.round(4).tolist()}, f, indent=1)
        png_path = os.path.join(folder, "curves.png")
        plot_curves({self.model: (self.accuracy, self.agreement)}, png_path, mutation_step=self.half,
                    title=f"{self.model}: {self.digits} test digits, seed {self.seed}")
        return [csv_path, json_path, png_path]


def evaluate(model, images, labels, *, half=200, backend="auto", seed=0, batch=2000, progress=None,
             storage="float32"):
    """Run the protocol on (images (N, 28, 28) uint8, labels (N,)).

    Every digit runs ``half`` steps, is mutated into a random other test digit (drawn
    from ``seed``), and runs ``half`` more. Digits are processed in batches of ``batch``,
    each one resident :class:`fastca.Simulation` keyed by the digits' indices in the whole
    set (``origin``), so the results do not depend on ``batch``; the metrics are summed
    over batches. ``storage="float16"`` keeps the states as float16. ``progress``: one bar
    over all digits (default: when stderr is a terminal). Returns an Evaluation.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    n = len(images)
    if n == 0:
        raise InputError("no digits to evaluate")
    perm = np.random.default_rng([seed, 0x3A7]).integers(0, n, n)
    # per step, summed over batches: metrics.tallies (correct, targeted, agreeing, living)
    tally = np.zeros((4, 2 * half), np.int64)
    bar = None
    if progress or (progress is None and sys.stderr.isatty()):
        from tqdm.auto import tqdm

        bar = tqdm(total=2 * n, desc=f"eval {getattr(model, 'name', 'model')}", unit="digit-phase")
    name = getattr(model, "name", "model")
    used = backend
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        sim = Simulation(model, images[lo:hi], backend=backend, seed=seed, storage=storage, origin=(lo, 0, 0))
        used = sim.backend
        for phase, tgts in enumerate((labels[lo:hi], labels[perm[lo:hi]])):
            if phase == 1:
                sim.mutate(images[perm[lo:hi]])
            c = sim.run(half, targets=tgts, progress=False)  # (half, batch, 13)
            tally[:, phase * half:(phase + 1) * half] += metrics.tallies(c)
            if bar is not None:
                bar.update(hi - lo)
    if bar is not None:
        bar.close()
    return Evaluation(*metrics.percentages(*tally), half, name, used, seed, n)
