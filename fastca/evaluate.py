"""The article's evaluation protocol: 200 steps, mutate every digit, 200 more steps."""

import dataclasses
import json
import os

import numpy as np

from .data import alive_mask
from .simulate import mutate, simulate


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
    from ``seed``), and runs ``half`` more; digits are processed in batches of ``batch``
    (the metrics are summed over batches exactly as over one batch; the random keys use
    the sample index within its batch, so results depend on ``batch`` as on ``seed``).
    ``storage="float16"`` (numba-cpu) keeps the states as float16. Returns an Evaluation.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    n = len(images)
    if n == 0:
        raise ValueError("no digits to evaluate")
    perm = np.random.default_rng([seed, 0x3A7]).integers(0, n, n)
    alive_sum = np.zeros(2 * half)
    correct_sum = np.zeros(2 * half)
    agree_sum = np.zeros(2 * half)
    name = getattr(model, "name", "model")
    used = backend
    for lo in range(0, n, batch):
        hi = min(n, lo + batch)
        for phase, (imgs, tgts) in enumerate([(images[lo:hi], labels[lo:hi]), (images[perm[lo:hi]], labels[perm[lo:hi]])]):
            if phase == 0:
                r = simulate(model, imgs, half, labels=tgts, backend=backend, seed=seed, progress=progress,
                             storage=storage)
            else:
                r = simulate(model, mutate(r.state, imgs), half, labels=tgts, backend=backend, seed=seed,
                             start_step=half, progress=progress, storage=storage)
            used = r.backend
            # alive cells do not change within a phase
            alive = float(alive_mask(imgs, model.alive_threshold).sum())
            sl = slice(phase * half, (phase + 1) * half)
            alive_sum[sl] += alive
            correct_sum[sl] += r.accuracy / 100 * alive
            agree_sum[sl] += r.agreement / 100 * (hi - lo)
    return Evaluation(100 * correct_sum / alive_sum, 100 * agree_sum / n, half, name, used, seed, n)
