"""Registry semantics with in-memory entry points (no plugin installed, nothing autoloaded)."""

import sys
import types

import pytest

import gradkit_core as gk
from gradkit_core import hookimpl
from gradkit_core.registry import PLUGIN_API_VERSION, Registry


class FakeEP:
    def __init__(self, name, module=None, error=None, value=None):
        self.name = name
        self.value = value or f"fake_{name}"
        self._module = module
        self._error = error
        self.dist = None

    def load(self):
        if self._error is not None:
            raise self._error
        return self._module


def plugin_module(name, api=PLUGIN_API_VERSION, **hooks):
    mod = types.ModuleType(f"fake_{name}")
    if api is not None:
        mod.PLUGIN_API_VERSION = api
    for hook_name, fn in hooks.items():
        setattr(mod, hook_name, hookimpl(fn))
    return mod


def optimizers(*entries):
    def gradkit_register_optimizers(register):
        for name, target, kw in entries:
            register(name, target, **kw)

    return gradkit_register_optimizers


def good(name="good", opt="sgd-like", target="collections:OrderedDict", **kw):
    return FakeEP(name, plugin_module(name, gradkit_register_optimizers=optimizers((opt, target, kw))))


def test_register_list_info_get_create_and_defaults():
    reg = Registry([good(defaults={"a": 1}, summary="s", paper={"title": "T", "arxiv": "1", "year": 2020})])
    specs = reg.list()
    assert [(s.kind, s.name, s.plugin) for s in specs] == [("optimizers", "sgd-like", "good")]
    spec = reg.resolve("sgd-like")
    assert spec.summary == "s" and spec.paper.arxiv == "1" and spec.paper.year == 2020
    import collections

    assert reg.get("sgd-like") is collections.OrderedDict
    obj = reg.create("sgd-like", b=2)
    assert obj == {"a": 1, "b": 2}
    assert reg.create("sgd-like", a=5) == {"a": 5}, "kwargs override defaults"
    assert reg.plugins()[0].status == "ok" and reg.plugins()[0].components == ("optimizers:sgd-like",)


def test_targets_are_not_imported_until_asked():
    modname = "gradkit_test_lazy_target_module"
    sys.modules.pop(modname, None)
    reg = Registry([good(target=f"{modname}:Thing")])
    assert reg.list()[0].target == f"{modname}:Thing"
    assert modname not in sys.modules
    with pytest.raises(ImportError, match=modname):
        reg.get("sgd-like")


def test_wildcards_kind_filter_and_natural_sort():
    mod = plugin_module(
        "p",
        gradkit_register_optimizers=optimizers(
            ("opt-10", "a:b", {}), ("opt-2", "a:b", {}), ("other", "a:b", {})
        ),
        gradkit_register_metrics=lambda register: register("acc", "a:b"),
    )
    reg = Registry([FakeEP("p", mod)])
    assert [s.name for s in reg.list(pattern="opt-*")] == ["opt-2", "opt-10"]
    assert [s.name for s in reg.list(kind="metrics")] == ["acc"]
    assert [s.name for s in reg.list(pattern=["acc", "oth*"])] == ["other", "acc"]
    with pytest.raises(gk.UnknownKindError, match="metric"):
        reg.list(kind="metric")


def test_import_failure_is_isolated():
    reg = Registry([good(), FakeEP("broken", error=ImportError("no module named 'torchh'"))])
    recs = {p.name: p for p in reg.plugins()}
    assert recs["broken"].status == "failed" and "torchh" in recs["broken"].error
    assert recs["good"].status == "ok"
    assert reg.create("sgd-like") == {}


def test_bad_hookimpl_signature_is_isolated():
    def gradkit_register_optimizers(registrar):  # wrong argument name
        registrar("x", "a:b")

    reg = Registry([good(), FakeEP("badsig", plugin_module("badsig", gradkit_register_optimizers=gradkit_register_optimizers))])
    recs = {p.name: p for p in reg.plugins()}
    assert recs["badsig"].status == "failed"
    assert "registrar" in recs["badsig"].error
    assert [s.name for s in reg.list()] == ["sgd-like"]


def test_unknown_hook_is_isolated():
    mod = plugin_module("typo", gradkit_register_optimisers=lambda register: None)
    reg = Registry([good(), FakeEP("typo", mod)])
    rec = {p.name: p for p in reg.plugins()}["typo"]
    assert rec.status == "failed" and "gradkit_register_optimisers" in rec.error


def test_raising_register_hook_contributes_nothing():
    def gradkit_register_optimizers(register):
        register("half-done", "a:b")
        raise RuntimeError("boom")

    reg = Registry([good(), FakeEP("raiser", plugin_module("raiser", gradkit_register_optimizers=gradkit_register_optimizers))])
    rec = {p.name: p for p in reg.plugins()}["raiser"]
    assert rec.status == "failed" and "boom" in rec.error
    assert [s.name for s in reg.list()] == ["sgd-like"], "a failing plugin's partial registrations are dropped"


@pytest.mark.parametrize("api,hint", [(PLUGIN_API_VERSION + 1, "upgrade gradkit-core"), (0, "upgrade the plugin")])
def test_incompatible_api_version(api, hint):
    mod = plugin_module("old", api=api, gradkit_register_optimizers=optimizers(("x", "a:b", {})))
    reg = Registry([good(), FakeEP("old", mod)])
    rec = {p.name: p for p in reg.plugins()}["old"]
    assert rec.status == "incompatible" and hint in rec.error
    assert [s.name for s in reg.list()] == ["sgd-like"]


def test_name_clash_is_ambiguous_and_plugin_prefix_picks():
    reg = Registry([good("alpha", target="collections:OrderedDict"), good("beta", target="collections:Counter")])
    with pytest.raises(gk.AmbiguousNameError) as err:
        reg.resolve("sgd-like")
    assert set(err.value.candidates) == {"alpha/sgd-like", "beta/sgd-like"}
    assert "alpha/sgd-like" in str(err.value)
    import collections

    assert reg.get("beta/sgd-like") is collections.Counter
    assert reg.get("alpha/sgd-like") is collections.OrderedDict
    recs = {p.name: p for p in reg.plugins()}
    assert recs["alpha"].status == recs["beta"].status == "conflict"
    assert "beta" in recs["alpha"].error


def test_duplicate_name_inside_one_plugin_fails_that_plugin():
    mod = plugin_module("dup", gradkit_register_optimizers=optimizers(("x", "a:b", {}), ("x", "a:c", {})))
    reg = Registry([good(), FakeEP("dup", mod)])
    rec = {p.name: p for p in reg.plugins()}["dup"]
    assert rec.status == "failed" and "twice" in rec.error


@pytest.mark.parametrize(
    "name,target,meta,match",
    [
        ("Bad Name", "a:b", {}, "name"),
        ("-leading-dash", "a:b", {}, "name"),
        ("ok", "no-colon", {}, "module:attribute"),
        ("ok", 42, {}, "callable"),
        ("ok", "a:b", {"sumary": "typo"}, "unknown metadata"),
        ("ok", "a:b", {"paper": {"title": "t", "doi": "x"}}, "unknown keys"),
        ("ok", "a:b", {"defaults": [1, 2]}, "mapping"),
    ],
)
def test_malformed_registration_fails_plugin_with_reason(name, target, meta, match):
    mod = plugin_module("mal", gradkit_register_optimizers=optimizers((name, target, meta)))
    reg = Registry([good(), FakeEP("mal", mod)])
    rec = {p.name: p for p in reg.plugins()}["mal"]
    assert rec.status == "failed"
    assert match in rec.error


def test_strict_mode_turns_failures_into_errors(monkeypatch):
    monkeypatch.setenv("GRADKIT_STRICT", "1")
    with pytest.raises(gk.PluginLoadError, match="broken"):
        Registry([good(), FakeEP("broken", error=SyntaxError("bad"))]).list()
    monkeypatch.setenv("GRADKIT_STRICT", "0")
    assert len(Registry([good(), FakeEP("broken", error=SyntaxError("bad"))]).list()) == 1


def test_unknown_name_lists_close_matches(monkeypatch, tmp_path):
    monkeypatch.setenv("GRADKIT_CATALOG", str(tmp_path / "none.toml"))
    reg = Registry([good(opt="lion")])
    with pytest.raises(gk.UnknownNameError, match="close matches: lion"):
        reg.resolve("lino")


def test_unknown_name_points_to_catalogued_plugin(monkeypatch, tmp_path):
    cat = tmp_path / "registry.toml"
    cat.write_text(
        '[plugins.frugal]\ndirectory = "plugins/frugal"\ndistribution = "gradkit-frugal"\n'
        'components = { optimizers = ["frugal"] }\n'
    )
    monkeypatch.setenv("GRADKIT_CATALOG", str(cat))
    from gradkit_core import catalog

    catalog._load.cache_clear()
    reg = Registry([good()])
    with pytest.raises(gk.UnknownNameError, match="gradkit install frugal"):
        reg.create("frugal")
    catalog._load.cache_clear()


def test_method_wins_over_experiment_of_same_name_but_kinds_clash_otherwise():
    mod = plugin_module(
        "m",
        gradkit_register_optimizers=lambda register: register("meth", "collections:OrderedDict"),
        gradkit_register_reproductions=lambda register: register("meth", "collections:Counter"),
        gradkit_register_metrics=lambda register: register("both", "a:b"),
        gradkit_register_solvers=lambda register: register("both", "a:c"),
    )
    reg = Registry([FakeEP("m", mod)])
    import collections

    assert reg.get("meth") is collections.OrderedDict
    assert reg.get("meth", kind="reproductions") is collections.Counter
    with pytest.raises(gk.AmbiguousNameError, match="kind"):
        reg.resolve("both")


def test_user_register_function_and_decorator(monkeypatch):
    reg = Registry([good()])
    monkeypatch.setattr(gk, "_registry", reg)

    @gk.register("my-opt", kind="optimizers", summary="mine", defaults={"k": 3})
    def my_opt(**kw):
        return kw

    assert gk.create("my-opt", j=1) == {"k": 3, "j": 1}
    assert gk.info("my-opt").plugin == "user"
    gk.register("my-opt", lambda **kw: "replaced", kind="optimizers")
    assert gk.create("my-opt") == "replaced", "re-registering from the same script replaces"
    gk.register("sgd-like", dict, kind="optimizers")
    with pytest.raises(gk.AmbiguousNameError):
        gk.get("sgd-like")
    assert gk.get("user/sgd-like") is dict
    with pytest.raises(gk.RegistrationError, match="kind"):
        reg.register_user("z", dict, kind=None)
    with pytest.raises(gk.UnknownKindError):
        gk.register("z", dict, kind="optimiser")


def test_kinds_cover_the_design_table():
    expected = {"explainers", "optimizers", "transforms", "text_optimizers", "unlearners", "agents", "simulators", "envs", "samplers", "estimators",
                "architectures", "trainers", "rewards", "solvers", "benchmarks", "reproductions", "metrics"}
    assert set(gk.kinds()) == expected
    from gradkit_core import hookspecs

    for kind, hook in hookspecs.KIND_HOOKS.items():
        fn = getattr(hookspecs, hook)
        assert fn.__doc__ and "Contract" in fn.__doc__, f"{hook} must document its kind's contract"


def test_specs_are_frozen():
    reg = Registry([good()])
    spec = reg.list()[0]
    with pytest.raises(Exception):
        spec.name = "other"
    with pytest.raises(TypeError):
        spec.defaults["x"] = 1


# ---------------------------------------------------------------------- create() and errors that name things
class TakesLr:
    def __init__(self, params, lr=0.1, momentum=0.0):
        self.params, self.lr, self.momentum = params, lr, momentum


def test_defaults_fill_only_what_the_caller_did_not_give():
    reg = Registry([good(opt="toy-opt", target=f"{__name__}:TakesLr", defaults={"lr": 0.5, "momentum": 0.9})])
    o = reg.create("toy-opt", [1], 1e-3)  # lr given positionally: the registered default must not collide
    assert (o.lr, o.momentum) == (1e-3, 0.9)
    o = reg.create("toy-opt", [1], momentum=0.1)
    assert (o.lr, o.momentum) == (0.5, 0.1)
    o = reg.create("toy-opt", [1], 2e-3, 0.2)
    assert (o.lr, o.momentum) == (2e-3, 0.2)


def test_bad_keyword_names_the_component_and_what_it_accepts():
    reg = Registry([good(opt="toy-opt", target=f"{__name__}:TakesLr")])
    with pytest.raises(TypeError, match=r"optimizer 'toy-opt' .*TakesLr.*'betas'.*accepts: params, lr, momentum"):
        reg.create("toy-opt", [1], betas=(0.9, 0.99))
    with pytest.raises(TypeError, match="optimizer 'toy-opt'"):
        reg.create("toy-opt", [1], 0.1, 0.2, 0.3)  # too many positional arguments


def test_registered_default_the_target_does_not_accept_is_reported_as_a_plugin_bug():
    reg = Registry([good(opt="toy-opt", target=f"{__name__}:TakesLr", defaults={"nesterov": True})])
    with pytest.raises(TypeError, match="registers default.*'nesterov'.*bug in the plugin"):
        reg.create("toy-opt", [1])


def test_wrong_kind_lookup_says_where_the_name_exists():
    reg = Registry([good(opt="toy-opt")])
    with pytest.raises(gk.UnknownNameError, match=r"no installed explainer 'toy-opt': 'toy-opt' is an installed "
                                                  r"optimizer \(kind='optimizers'\)"):
        reg.resolve("toy-opt", kind="explainers")


@pytest.mark.parametrize("bad", [3, None, b"x*", ["ok", 3]])
def test_list_rejects_a_pattern_that_is_not_a_wildcard(bad):
    reg = Registry([good()])
    with pytest.raises(TypeError, match="pattern must be a shell wildcard"):
        reg.list(pattern=bad)
    with pytest.raises(TypeError, match="kind must be a string"):
        reg.list(kind=3)


def test_target_that_fails_to_import_is_a_component_import_error():
    reg = Registry([good(opt="ghost", target="no_such_module_abc:Thing")])
    with pytest.raises(gk.ComponentImportError, match="optimizer 'ghost' from plugin 'good': cannot import module"):
        reg.create("ghost")


def test_strict_failure_leaves_the_registry_empty_and_a_retry_does_not_duplicate():
    eps = [good(), FakeEP("broken", error=ImportError("nope"))]
    reg = Registry(eps, strict=True)
    with pytest.raises(gk.PluginLoadError):
        reg.list()
    reg._strict = False
    assert [(s.name, s.plugin) for s in reg.list()] == [("sgd-like", "good")]
    assert len(reg.plugins()) == 2


def test_same_entry_point_name_from_two_distributions_is_loaded_twice_and_flagged():
    a, b = good("twin", opt="twin-a"), good("twin", opt="twin-b")

    class Dist:
        def __init__(self, name):
            self.metadata = {"Name": name}

    a.dist, b.dist = Dist("gradkit-twin"), Dist("other-twin")
    reg = Registry([a, b])
    recs = {p.name: p for p in reg.plugins()}
    assert set(recs) == {"twin@gradkit-twin", "twin@other-twin"}
    assert all(r.status == "conflict" and "entry-point name 'twin'" in r.error for r in recs.values())
    assert reg.resolve("twin-a").plugin == "twin@gradkit-twin" and reg.resolve("twin-b").plugin == "twin@other-twin"
