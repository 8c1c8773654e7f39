import polars as pl
import pytest

from entropy_lens.analysis.categories import Lexicon, category_proportions, category_updates, classify_vocab

from tests.analysis.store_builders import make_tokens, make_updates

VOCAB = {0: " Therefore", 1: ",", 2: "3", 3: "\\frac", 4: "frac", 5: " wait", 6: "Let", 7: " the",
         8: "theory", 9: " but", 10: "=", 11: " check", 12: "{"}
EXPECTED = ["logical", "support", "formal", "formal", "formal", "metacognitive", "metacognitive", "support",
            "support", "logical", "formal", "metacognitive", "formal"]


def _vocab():
    return pl.LazyFrame({"token_id": list(VOCAB), "token": list(VOCAB.values())}, schema={"token_id": pl.Int32, "token": pl.Utf8})


def test_classify_known_strings():
    assert classify_vocab(vocab=_vocab())["category"].to_list() == EXPECTED


def test_custom_lexicon():
    lx = Lexicon(logical_words=("the",))
    df = classify_vocab(vocab=_vocab(), lexicon=lx)
    assert df.filter(pl.col("token_id") == 7)["category"].item() == "logical"
    assert df.filter(pl.col("token_id") == 0)["category"].item() == "support"


def test_category_updates_exact():
    # tokens: formal "3" (Δp 0.3), formal "=" (0), logical " but" (0.1), support " the" ×2 (0, 0)
    tokens = make_tokens([dict(step=0, prompt_id=0, sample_id=0, entropy=[1.0, 2.0, 3.0, 4.0, 5.0],
                               token_ids=[2, 10, 9, 7, 7])])
    updates = make_updates(tokens, {(0, 0, 0, 0): 0.8, (0, 0, 0, 2): 0.6})
    df = category_updates(tokens=tokens, updates=updates, vocab=_vocab(), top_frac=0.2)
    r = {x["category"]: x for x in df.iter_rows(named=True)}
    assert r["formal"]["n"] == 2 and r["formal"]["share_tokens"] == pytest.approx(0.4)
    assert r["formal"]["mean_abs_delta_p"] == pytest.approx(0.15, abs=1e-6)
    assert r["formal"]["share_of_significant"] == 1.0
    assert r["formal"]["share_abs_delta_p_mass"] == pytest.approx(0.75, abs=1e-6)
    assert r["logical"]["share_abs_delta_p_mass"] == pytest.approx(0.25, abs=1e-6)
    assert r["support"]["share_significant"] == 0.0 and r["support"]["entropy_mean"] == pytest.approx(4.5)


def test_category_proportions():
    tokens = make_tokens([dict(step=0, prompt_id=0, sample_id=0, entropy=[1.0] * 4, token_ids=[2, 10, 9, 7])])
    df = category_proportions(tokens=tokens, vocab=_vocab())
    assert dict(zip(df["category"], df["proportion"])) == {"formal": 0.5, "logical": 0.25, "support": 0.25}
