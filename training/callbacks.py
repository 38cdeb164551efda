"""Lightning callbacks of ``n2m train``."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import Callback

from n2m.budget import TimeBudget


class LastCheckpoint(Callback):
    """Writes ``last.ckpt`` every ``every`` steps and when training ends (the file ``--resume`` continues from)."""

    def __init__(self, path: Path, every: int):
        self.path, self.every = Path(path), max(1, int(every))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0:
            trainer.save_checkpoint(str(self.path), weights_only=False)

    def on_train_end(self, trainer, pl_module) -> None:
        trainer.save_checkpoint(str(self.path), weights_only=False)


class BudgetStop(Callback):
    """Starts a :class:`n2m.budget.TimeBudget` when training starts and stops training once it is spent (every rank
    stops at the same step: the decision is reduced across them, any rank's spent budget stopping all)."""

    def __init__(self, budget: TimeBudget):
        self.budget = budget

    def on_train_start(self, trainer, pl_module) -> None:
        self.budget.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.strategy.reduce_boolean_decision(self.budget.spent(), all=False):
            trainer.should_stop = True
