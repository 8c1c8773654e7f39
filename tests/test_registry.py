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


def test_lazy_entry_is_listed_without_import_and_resolved_on_get():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from entropy_lens.registry import Registry\n"
        "reg = Registry('codec')\n"
        "reg.register_lazy('json', 'json:dumps')\n"
        "reg.register('plain')(len)\n"
        "sys.modules.pop('json', None)\n"
        "assert reg.names() == ['json', 'plain'] and 'json' in reg and len(reg) == 2\n"
        "assert 'json' not in sys.modules, 'listing imported the target'\n"
        "import json\n"
        "assert reg.get('json') is json.dumps and reg.get('json') is json.dumps\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_lazy_entry_suggestions_duplicates_and_bad_targets():
    reg = Registry("sampler")
    reg.register_lazy("vllm", "entropy_lens.nowhere:Sampler")
    reg.register("hf")(len)
    with pytest.raises(UnknownNameError) as e:
        reg.get("vlm")
    assert str(e.value) == "unknown sampler 'vlm'; did you mean 'vllm'? (known: hf, vllm)"
    with pytest.raises(ValueError, match="already registered"):
        reg.register_lazy("hf", "json:dumps")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("vllm")(len)
    with pytest.raises(ValueError, match="'module:attr'"):
        reg.register_lazy("x", "json.dumps")
    with pytest.raises(ImportError, match=r"sampler 'vllm' is registered as 'entropy_lens.nowhere:Sampler', "
                                          r"which cannot be loaded"):
        reg.get("vllm")
    reg.register_lazy("typo", "json:dumpz")
    with pytest.raises(ImportError, match="'json:dumpz', which cannot be loaded.*dumpz"):
        reg.get("typo")
    reg.register_lazy("nested", "json:JSONDecoder.decode")
    import json

    assert reg.get("nested") is json.JSONDecoder.decode
