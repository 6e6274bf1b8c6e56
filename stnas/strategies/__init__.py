"""Search strategies: they see a space and a scorer, never a model (evolution, beam search)."""
from stnas.strategies.beam import OPEN, BeamConfig, beam_search, complete
from stnas.strategies.evolution import Candidate, EvolutionConfig, best_under, evolve, pareto_front

__all__ = ["OPEN", "BeamConfig", "Candidate", "EvolutionConfig", "beam_search", "best_under", "complete", "evolve",
           "pareto_front"]
