import polars as pl
import pytest

from entropy_lens.analysis.vocab import token_shift, top_token_shifts
from entropy_lens.errors import UnknownNameError

from tests.analysis.store_builders import make_tokens


def _store():
    rows = []
    for s in range(12):
        start = s < 2
        # token 5 ("erot"): entropy 3.0 at the start, 0.5 at the end; token 7 ("="): 1 → 5 occurrences
        ids = [5, 7] + [9] * 7 if start else [5, 7, 7, 7, 7, 7] + [9] * 3
        ent = [3.0 if (start and i == 5) else 0.5 if i == 5 else 1.0 for i in ids]
        rows.append(dict(step=s, prompt_id=0, sample_id=0, entropy=ent, token_ids=ids))
    vocab = pl.LazyFrame({"token_id": [5, 7, 9], "token": ["erot", "=", " the"]}, schema={"token_id": pl.Int32, "token": pl.Utf8})
    return make_tokens(rows), vocab


def test_token_shift_exact():
    tokens, vocab = _store()
    df = token_shift(tokens=tokens, vocab=vocab, boundary=10, window=2, min_count=1)
    r = {x["token"]: x for x in df.iter_rows(named=True)}
    # start window = steps 0, 1 (9 tokens each); end window = steps 8, 9 (9 tokens each)
    assert r["erot"]["entropy_change"] == pytest.approx(-2.5)
    assert r["="]["count_start"] == 2 and r["="]["count_end"] == 10
    assert r["="]["freq_change"] == pytest.approx(10 / 18 - 2 / 18)
    assert r[" the"]["freq_start"] == pytest.approx(14 / 18)
    top = top_token_shifts(df, n=1)
    assert top.filter(pl.col("ranking") == "entropy_drop")["token"].to_list() == ["erot"]
    assert top.filter(pl.col("ranking") == "freq_rise")["token"].to_list() == ["="]
    with pytest.raises(UnknownNameError):
        top_token_shifts(df, rankings=["entropy_dorp"])
