import pytest

from entropy_lens.errors import UnknownNameError, UserError
from entropy_lens.registry import Registry


def test_did_you_mean():
    reg = Registry("shaper")
    reg.register("ppl")(len)
    reg.register("position")(len)
    assert reg.get("ppl") is len
    with pytest.raises(UnknownNameError) as e:
        reg.get("ppll")
    assert isinstance(e.value, UserError)
    assert str(e.value) == "unknown shaper 'ppll'; did you mean 'ppl'? (known: position, ppl)"
    with pytest.raises(ValueError, match="already registered"):
        reg.register("ppl")(len)
