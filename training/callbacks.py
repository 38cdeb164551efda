"""Lightning callbacks of ``n2m train``."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import Callback


class LastCheckpoint(Callback):
    """Writes ``last.ckpt`` every ``every`` steps and when training ends (the file ``--resume`` continues from)."""

    def __init__(self, path: Path, every: int):
        self.path, self.every = Path(path), max(1, int(every))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every == 0:
            trainer.save_checkpoint(str(self.path), weights_only=False)

    def on_train_end(self, trainer, pl_module) -> None:
        trainer.save_checkpoint(str(self.path), weights_only=False)
