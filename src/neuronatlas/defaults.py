"""Defaults shared by the command line, the flows and the benches (no heavy imports here)."""

SCORERS = "auto"
"""Scorers a score run uses unless `--scorers` names them: "auto" is simulation, embedding and, with
a simulator that reads prompt probabilities (a local model), fuzzing (`flows.score.parse_scorers`)."""
