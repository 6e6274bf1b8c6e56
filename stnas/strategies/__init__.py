"""Search strategies: they see a space and a scorer, never a model (evolution; beam search follows)."""
from stnas.strategies.evolution import Candidate, EvolutionConfig, best_under, evolve, pareto_front

__all__ = ["Candidate", "EvolutionConfig", "best_under", "evolve", "pareto_front"]
