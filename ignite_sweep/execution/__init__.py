"""How one run executes: process.py (a forked child per run, signals, events), program.py (a user program run as
`wandb agent` runs it), pool.py (agents over slots and GPUs, the live view). Not what runs next: that is backends/."""
