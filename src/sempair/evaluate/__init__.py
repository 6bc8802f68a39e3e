"""Evaluation of frozen encoders (DESIGN §5): event localization, anomaly detection, event
search and pair quality, on a dataset split by recording, with a report and a deploy gate.

    from sempair.evaluate import evaluate
    summary = evaluate("models/epg", "data/clips", "eval/epg", load_config())
"""

from sempair.evaluate.embeddings import Embeddings, EvaluationError
from sempair.evaluate.run import EvalSummary, evaluate, gate, score

__all__ = ["Embeddings", "EvalSummary", "EvaluationError", "evaluate", "gate", "score"]
