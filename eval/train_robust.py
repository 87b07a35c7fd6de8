"""Robust training from the command line: the loop of :mod:`manifold_defense.training.robust` with
its attacks built from the ``attacks`` package.

The script lives here, above both packages, because the core library never imports ``attacks``
(dependencies point one way); the loop receives its attacks as
:class:`manifold_defense.training.robust.Adversaries`.

    python -m eval.train_robust --out manifold_defense/weights/fashion_mnist/classifier_robust
    python -m eval.train_robust --pgd-weight 1 --manifold-weight 0 --projection-weight 0 --init "" \\
        --out manifold_defense/weights/fashion_mnist/classifier_pgd          # plain Madry PGD training
    torchrun --nproc_per_node 2 -m eval.train_robust --quick                 # data-parallel (DDP)

Converged baselines (a learning-rate schedule, a held-out learning curve in the checkpoint JSON,
a wall-clock budget with resume). The shipped ``classifier_pgd_at`` was made by the first command (Madry
PGD-AT, 10 epochs of 59,000 images at batch 128, PGD-7, cosine schedule); the second, with two
thirds of its iterations, is its convergence check (README, "Baselines"):

    python -m eval.train_robust --init "" --clean-weight 0 --pgd-weight 1 --manifold-weight 0 \\
        --projection-weight 0 --batch-size 128 --lr 1e-3 --lr-schedule cosine --iterations 4600 \\
        --eval-every 460 --val-size 1000 --threads 1 --out runs/pgd_at_10ep      # then copied to
                                          # manifold_defense/weights/fashion_mnist/classifier_pgd_at
    python -m eval.train_robust --init "" --clean-weight 0 --pgd-weight 1 --manifold-weight 0 \\
        --projection-weight 0 --batch-size 128 --lr 1e-3 --lr-schedule cosine --iterations 3067 \\
        --eval-every 307 --val-size 1000 --threads 1 --out runs/pgd_at_7ep
    python -m eval.train_robust --init "" --clean-weight 1 --trades-beta 6 --manifold-weight 0 \\
        --projection-weight 0 --pgd-steps 10 --batch-size 128 --lr 1e-3 --lr-schedule cosine \\
        --iterations 4600 --eval-every 460 --val-size 1000 --threads 1 --max-minutes 150 \\
        --out runs/trades_10ep       # TRADES, beta 6: copied to .../classifier_trades
    python -m eval.train_robust --init runs/trades_10ep --clean-weight 1 --trades-beta 6 \
        --manifold-weight 0 --projection-weight 0 --pgd-steps 10 --batch-size 128 --lr 5e-4 \
        --lr-schedule cosine --iterations 2300 --eval-every 460 --val-size 1000 --threads 1 \
        --out runs/trades_15ep       # its convergence check: 50% more training (5 more epochs)
    python -m eval.train_robust --defense-weight 1 --manifold-weight 0 --out runs/defense_at
                                                  # the classifier trained on P(x_adv), x_adv against C(G(E(x)))

The shipped default defense, ``amortised_at`` (classifier_amortised_at + encoder_amortised_at):
C(G(E(x))) adversarially trained as a whole (E and C; G frozen) from the PGD-AT classifier and the
shipped encoder, PGD-7 against the pipeline's exact gradient, with a reconstruction term:

    python -m eval.train_robust --init manifold_defense/weights/fashion_mnist/classifier_pgd_at \\
        --train-encoder true --clean-weight 0 --pgd-weight 1 --manifold-weight 0 --projection-weight 0 \\
        --reconstruction-weight 0.01 --batch-size 128 --lr 5e-4 --lr-schedule cosine --iterations 2300 \\
        --eval-every 230 --val-size 1000 --threads 1 --max-minutes 100 --out runs/amortised_at
                                  # then runs/amortised_at{,_encoder} copied to the weights as
                                  # classifier_amortised_at and encoder_amortised_at

Its convergence check (50% more training from the shipped classifier and encoder; the defense
bundle ``runs/amortised_at_more_defense`` is what ``eval.robustness --defense`` evaluates):

    python -m eval.train_robust --init manifold_defense/weights/fashion_mnist/classifier_amortised_at \\
        --encoder manifold_defense/weights/fashion_mnist/encoder_amortised_at --train-encoder true \\
        --clean-weight 0 --pgd-weight 1 --manifold-weight 0 --projection-weight 0 \\
        --reconstruction-weight 0.01 --batch-size 128 --lr 2.5e-4 --lr-schedule cosine --iterations 1150 \\
        --eval-every 230 --val-size 1000 --threads 1 --out runs/amortised_at_more

Every run with a learning curve stores the convergence rule's verdict in its JSON (``convergence``:
the change of held-out robust accuracy over the last quarter, :mod:`manifold_defense.training.convergence`).
``--val-square-queries Q`` adds Square with Q queries to each curve point, and the rule then reads the
per-image worst case of PGD-10 and Square: a model that masks its gradients passes PGD-10 alone.

Add ``--max-minutes M`` to stop and save within a budget, then the same command with ``--resume``
to continue; ``torchrun --nproc_per_node N -m eval.train_robust ...`` splits each batch over N
processes.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Sequence

import torch.distributed as dist

from manifold_defense.training.cli import config_parser, parse_config
from manifold_defense.training.robust import RobustConfig, train

from .suite.adversaries import adversaries

__all__ = ["adversaries", "main"]


def build_parser() -> argparse.ArgumentParser:
    """This script's command line: one flag per field of :class:`RobustConfig` (range-checked)."""
    return config_parser(RobustConfig)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = parse_config(RobustConfig, argv)
    train(config, adversaries(config))
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"saved {config.out}.safetensors and {config.out}.json")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    from manifold_defense.utils import run

    run(main)
