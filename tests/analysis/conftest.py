"""Hand-built tiny stores with known answers."""

import pytest

from tests.analysis.store_builders import make_samples, make_tokens


@pytest.fixture
def tiny_store():
    """Step 0 and 1; one prompt; samples 0 (correct) and 1 (incorrect)."""
    tokens = make_tokens([
        dict(step=0, prompt_id=0, sample_id=0, entropy=[1.0, 2.0]),
        dict(step=0, prompt_id=0, sample_id=1, entropy=[3.0, 4.0, 5.0, 6.0]),
        dict(step=1, prompt_id=0, sample_id=0, entropy=[0.5]),
        dict(step=1, prompt_id=0, sample_id=1, entropy=[1.0, 3.0]),
        dict(step=1, prompt_id=0, sample_id=2, entropy=[2.0, 4.0]),
    ])
    samples = make_samples([
        dict(step=0, prompt_id=0, sample_id=0, correct=True),
        dict(step=0, prompt_id=0, sample_id=1, correct=False),
        dict(step=1, prompt_id=0, sample_id=0, correct=True),
        dict(step=1, prompt_id=0, sample_id=1, correct=False),
        dict(step=1, prompt_id=0, sample_id=2, correct=True),
    ])
    return tokens, samples
