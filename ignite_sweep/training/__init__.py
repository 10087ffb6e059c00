"""The built-in Ignite trainer: config.py (TrainConfig, the hyperparameters and their rules), data.py (datasets),
models.py, train.py (one run: ``train(cfg, reporter) -> summary``), wandb_logging.py. It knows nothing of stores or
backends: it reports through the callback it is given."""
