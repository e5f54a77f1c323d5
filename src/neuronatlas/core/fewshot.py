"""Few-shot example neurons for the explainer and simulator prompts, written for this project.

Raw activations on made-up excerpts (word-level tokens, a leading space where a tokenizer would
have one); the prompts normalise them like any real record. Changing them changes every prompt:
bump `PROMPT_VERSION` in `prompts.py`.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class ExampleNeuron:
    """A hand-made neuron: excerpts, activations and the explanation a good explainer would give."""

    excerpts: tuple[tuple[tuple[str, float], ...], ...]
    """Per excerpt, (token, raw activation) pairs."""
    explanation: str
    """What completes "the main thing this neuron does is find"."""


YEARS = ExampleNeuron(
    excerpts=(
        (
            (" The", 0.0),
            (" bridge", 0.0),
            (" opened", 0.0),
            (" in", 0.3),
            (" 1932", 4.6),
            (" and", 0.0),
            (" closed", 0.0),
            (" in", 0.2),
            (" 1987", 4.1),
            (".", 0.0),
        ),
        (
            (" Born", 0.0),
            (" on", 0.0),
            (" 4", 0.9),
            (" May", 0.4),
            (" 1901", 4.4),
            (",", 0.0),
            (" she", 0.0),
            (" moved", 0.0),
            (" to", 0.0),
            (" Lyon", 0.0),
            (" in", 0.1),
            (" 1920", 3.8),
        ),
    ),
    explanation="years written as four-digit numbers in dates.",
)

OF_IN_NAMES = ExampleNeuron(
    excerpts=(
        (
            (" He", 0.0),
            (" studied", 0.0),
            (" at", 0.0),
            (" the", 0.0),
            (" University", 0.6),
            (" of", 2.9),
            (" Cambridge", 0.8),
            (" with", 0.0),
            (" the", 0.0),
            (" Duke", 0.1),
            (" of", 3.2),
            (" York", 0.5),
            (".", 0.0),
        ),
        (
            (" The", 0.0),
            (" Bank", 0.3),
            (" of", 2.7),
            (" England", 0.4),
            (" raised", 0.0),
            (" rates", 0.0),
            (" of", 0.2),
            (" interest", 0.0),
            (".", 0.0),
        ),
    ),
    explanation='the word "of" inside the names of institutions and titles.',
)

EXPLAINER_EXAMPLES = (YEARS, OF_IN_NAMES)
SIMULATOR_EXAMPLES = (YEARS,)
LINE_EXAMPLES = (YEARS, OF_IN_NAMES)
