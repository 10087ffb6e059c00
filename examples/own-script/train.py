"""Your own training script, written as W&B's Ignite docs show (argparse, Ignite's WandBLogger), on the
digits that scikit-learn ships. Knows nothing of ignite-sweep. ``--sleep`` slows each epoch (to stop it mid-run)."""

import argparse
import time

import torch
from ignite.engine import Events, create_supervised_evaluator, create_supervised_trainer
from ignite.handlers.wandb_logger import WandBLogger
from ignite.metrics import Accuracy, Loss
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.05)
parser.add_argument("--hidden", type=int, default=32)
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--sleep", type=float, default=0.0)
args = parser.parse_args()

torch.manual_seed(0)
x, y = load_digits(return_X_y=True)
x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
train = DataLoader(TensorDataset(x[:1400], y[:1400]), batch_size=64, shuffle=True)
val = DataLoader(TensorDataset(x[1400:], y[1400:]), batch_size=256)
model = nn.Sequential(nn.Linear(64, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
criterion = nn.CrossEntropyLoss()
trainer = create_supervised_trainer(model, optimizer, criterion)
evaluator = create_supervised_evaluator(model, metrics={"accuracy": Accuracy(), "loss": Loss(criterion)})

wandb_logger = WandBLogger(project="digits-script", config=vars(args))
wandb_logger.attach_output_handler(trainer, event_name=Events.ITERATION_COMPLETED(every=10), tag="training",
                                   output_transform=lambda loss: {"loss": loss})
wandb_logger.attach_output_handler(evaluator, event_name=Events.EPOCH_COMPLETED, tag="validation",
                                   metric_names=["accuracy", "loss"],
                                   global_step_transform=lambda *_: trainer.state.iteration)  # as Ignite's docs


@trainer.on(Events.EPOCH_COMPLETED)
def validate(engine):
    evaluator.run(val)
    print(f"epoch {engine.state.epoch}: accuracy {evaluator.state.metrics['accuracy']:.3f}", flush=True)
    time.sleep(args.sleep)


trainer.run(train, max_epochs=args.epochs)
wandb_logger.close()
