"""Training: ``train_and_evaluate(cfg) -> RunResult``."""
