"""Settings of super-weight identification, with defaults measured on real models."""

from __future__ import annotations

from dataclasses import dataclass, field

# Varied prompts: the super activation appears whatever the text, so a coordinate that
# recurs across unrelated prompts is a property of the weights, not of one input.
DEFAULT_PROMPTS = [
    "The capital of France is Paris, and it is known for the Eiffel Tower.",
    "My favourite recipe uses fresh tomatoes, basil and a little olive oil.",
    "In 1969, astronauts landed on the Moon for the first time.",
    "def add(a, b):\n    return a + b",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please summarise the following report in three short sentences.",
    "Water boils at 100 degrees Celsius at sea level.",
    "She opened the old wooden door and stepped into the quiet garden.",
]

# A fixed plain-English passage (written for this project) on which perplexity is measured.
DEFAULT_PASSAGE = (
    "The village stood at the edge of a wide valley, where the river turned slowly towards the sea. "
    "Every morning the baker opened his shop before sunrise, and the smell of fresh bread drifted "
    "along the narrow streets. Children walked to the small school on the hill, carrying books and "
    "bags, while their parents went to work in the fields or in the market square. In the summer, "
    "travellers came from the city to rest by the water, to eat in the old inn and to listen to the "
    "stories of the people who had lived there for many years. When autumn arrived, the leaves turned "
    "red and gold, the days grew shorter, and the farmers brought the harvest home before the first "
    "cold rain. Life in the valley was simple, but nobody who lived there wished to be anywhere else."
)


@dataclass
class IdentifyConfig:
    """What ``superlora identify`` does; every field can be set in YAML or as key=value."""

    model: str = "smollm2-135m"
    tokenizer: str | None = None  # default: the model's own
    prompts: list[str] = field(default_factory=lambda: list(DEFAULT_PROMPTS))
    # A block's MLP output spike is a candidate when its max |output| is above BOTH:
    abs_threshold: float = 100.0  # an absolute magnitude, and
    median_ratio: float = 200.0  # this multiple of the block's median |output| on that prompt
    min_recurrence: float = 0.5  # share of prompts on which a coordinate must be the spike
    max_count: int = 10  # cap on super weights found by the zero-and-rerun loop
    passage: str = DEFAULT_PASSAGE  # perplexity text for the ablation proof
    min_ppl_ratio: float = 2.0  # zeroing a proven super weight multiplies perplexity by at least this
    min_distortion: float = 0.1  # encoders: ... or moves the final hidden states by this mean cosine distance
    seed: int = 0  # for the random-weights control
    out: str | None = None  # report folder; default runs/identify/<model name>
    plots: bool = True
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if not self.prompts or any(not p.strip() for p in self.prompts):
            raise ValueError("prompts must be a non-empty list of non-empty strings")
        if not self.passage.strip():
            raise ValueError("passage must not be empty")
        if self.max_count < 1:
            raise ValueError("max_count must be at least 1")
        if not 0 < self.min_recurrence <= 1:
            raise ValueError("min_recurrence must be in (0, 1]")
