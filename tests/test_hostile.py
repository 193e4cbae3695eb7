"""Faulty and hostile plugins through real entry points and the real CLI (subprocesses, fake plugins only)."""

import json
import os

import pytest

METRIC = """
from gradkit_core import hookimpl
PLUGIN_API_VERSION = 1

@hookimpl
def gradkit_register_metrics(register):
    register({name!r}, {target!r}, summary={summary!r})
"""


def metric(name, target="collections:Counter", summary="s"):
    return METRIC.format(name=name, target=target, summary=summary)


def test_two_distributions_with_one_entry_point_name_are_both_visible(cli, fake_dist):
    # a third-party distribution claims the entry-point name of another plugin
    fake_dist("gradkit-real", "real_mod", metric("shared-metric", "collections:Counter"), "same")
    fake_dist("evil-dist", "evil_mod", metric("shared-metric", "collections:OrderedDict"), "same")
    plugins = {p["name"]: p for p in cli.json("plugins")}
    assert {"same@gradkit-real", "same@evil-dist"} <= set(plugins), plugins.keys()
    for p in ("same@gradkit-real", "same@evil-dist"):
        assert plugins[p]["status"] == "conflict"
        assert "entry-point name 'same'" in plugins[p]["error"]
    assert plugins["same@gradkit-real"]["distribution"] == "gradkit-real"
    assert plugins["same@evil-dist"]["distribution"] == "evil-dist"
    # nothing is replaced: asking for the name is an error listing both, each reachable by plugin/name
    res = cli.run("info", "shared-metric", check=False)
    assert res.returncode == 2
    assert "same@gradkit-real/shared-metric" in res.stderr and "same@evil-dist/shared-metric" in res.stderr
    assert "collections:Counter" in cli.run("info", "same@gradkit-real/shared-metric").stdout
    assert "collections:OrderedDict" in cli.run("info", "same@evil-dist/shared-metric").stdout
    table = cli.run("plugins").stdout
    assert "gradkit-real" in table and "evil-dist" in table, "the table shows each plugin's distribution"
    strict = cli.run("list", env={"GRADKIT_STRICT": "1"}, check=False)
    assert strict.returncode == 2 and "same@evil-dist" in strict.stderr


def test_name_clash_is_an_error_in_strict_mode(cli, fake_dist):
    fake_dist("gradkit-a", "a_mod", metric("clash"), "pa")
    fake_dist("gradkit-b", "b_mod", metric("clash"), "pb")
    assert cli.run("list").returncode == 0
    strict = cli.run("list", env={"GRADKIT_STRICT": "1"}, check=False)
    assert strict.returncode == 2 and "conflict" in strict.stderr and "clash" in strict.stderr


def test_strict_failure_then_a_second_discovery_is_consistent(cli, fake_dist):
    fake_dist("gradkit-ok", "ok_mod", metric("only-once"), "okp")
    fake_dist("gradkit-bad", "bad_mod", "raise ImportError('nope')", "badp")
    code = """
import os, gradkit_core as gk
from gradkit_core.errors import PluginLoadError
reg = gk.registry()
os.environ["GRADKIT_STRICT"] = "1"
try:
    gk.list()
    raise SystemExit("strict discovery should have failed")
except PluginLoadError:
    pass
os.environ["GRADKIT_STRICT"] = "0"
specs = [s for s in gk.list() if s.name == "only-once"]
assert len(specs) == 1, specs
assert gk.info("only-once").plugin == "okp"
print("OK")
"""
    out = cli.python(code)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr


def test_a_plugin_that_prints_does_not_break_json(cli, fake_dist):
    fake_dist("gradkit-chatty", "chatty", 'print("hello from import")\n' + metric("chatty-metric")
              + '\nprint("and again")\n', "chatty")
    for verb in ("list", "plugins"):
        res = cli.run(verb, "--json", env={"GRADKIT_NO_CACHE": "1"})  # a scan: the plugin module is imported
        data = json.loads(res.stdout)  # stdout is pure JSON
        assert data
        assert "hello from import" in res.stderr and "and again" in res.stderr
    rec = {p["name"]: p for p in cli.json("plugins")}["chatty"]
    assert rec["status"] == "ok" and any("prints to stdout" in w for w in rec["warnings"])


def test_doctor_reports_heavy_silent_and_unversioned_plugins(cli, fake_dist):
    fake_dist("gradkit-heavy", "heavy_mod", "import numpy\n" + metric("heavy-metric"), "heavy")
    fake_dist("gradkit-empty", "empty_mod", "PLUGIN_API_VERSION = 1\n", "empty")
    fake_dist("gradkit-nover", "nover_mod", metric("nover-metric").replace("PLUGIN_API_VERSION = 1", ""), "nover")
    doc = cli.run("doctor", check=False)
    assert doc.returncode == 1
    lines = doc.stdout.splitlines()

    def said(plugin, text):
        return any(plugin in ln and text in ln for ln in lines)

    assert said("heavy", "imports numpy"), doc.stdout
    assert said("empty", "registers no component"), doc.stdout
    assert said("nover", "no PLUGIN_API_VERSION"), doc.stdout
    # the components of those plugins still work
    names = {c["name"] for c in cli.json("list")}
    assert {"heavy-metric", "nover-metric"} <= names


@pytest.mark.parametrize("value,on", [("1", True), ("yes", True), ("0", False), ("no", False), ("", False)])
def test_doctor_reads_the_strict_switch_like_the_registry(cli, value, on):
    out = cli.run("doctor", env={"GRADKIT_STRICT": value}, check=False).stdout
    assert f"strict mode   {'on' if on else 'off'}" in out


def test_catalog_only_from_the_package_or_the_environment_variable(cli, fake_site, tmp_path):
    # a registry.toml dropped into site-packages (next to where a wheel puts gradkit_core) is never read
    (fake_site / "registry.toml").write_text(
        '[plugins.trojan]\ndirectory = "x"\ndistribution = "trojan"\ncomponents = { metrics = ["t"] }\n')
    out = cli.run("list", "--available", "--json").stdout
    assert "trojan" not in out
    env_cat = tmp_path / "mine.toml"
    env_cat.write_text('[plugins.mine]\ndirectory = "x"\ndistribution = "gradkit-mine"\n'
                       'components = { metrics = ["mine-metric"] }\n')
    rows = json.loads(cli.run("list", "--available", "--json", env={"GRADKIT_CATALOG": str(env_cat)}).stdout)
    assert [r["name"] for r in rows if not r["installed"]] == ["mine-metric"]
    missing = cli.run("list", "--available", env={"GRADKIT_CATALOG": str(tmp_path / "nope.toml")}, check=False)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and missing.stderr.count("\n") == 1
    assert "nope.toml" in missing.stderr and "Traceback" not in missing.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[plugins.x\n")
    res = cli.run("list", "--available", env={"GRADKIT_CATALOG": str(bad)}, check=False)
    assert res.returncode == 2 and "not valid TOML" in res.stderr and "Traceback" not in res.stderr


# ---------------------------------------------------------------------- errors a user can act on
def test_version_flag(cli):
    from gradkit_core import __version__

    assert cli.run("--version").stdout.strip() == f"gradkit-core {__version__}"


def test_component_whose_target_fails_to_import_is_one_line(cli, fake_dist):
    fake_dist("gradkit-broken-target", "bt_mod", """
from gradkit_core import hookimpl
PLUGIN_API_VERSION = 1

@hookimpl
def gradkit_register_reproductions(register):
    register("bt", "no_such_module_xyz.sub:run")
""", "bt")
    res = cli.run("reproduce", "bt", "--out", str(cli.pythonpath / "out"), check=False)
    assert res.returncode == 1
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert "no_such_module_xyz" in res.stderr and "Traceback" not in res.stderr


SLOW_REPRO = """
from gradkit_core import hookimpl
PLUGIN_API_VERSION = 1

@hookimpl
def gradkit_register_reproductions(register):
    register("marker-run", "marker_impl:run")
"""

MARKER_IMPL = """
import os
from gradkit_core.results import Result

def run(*, quick=False, seed=0, out=None):
    open(os.environ["MARKER"], "w").write("ran")
    r = Result("marker-run")
    r.add_row(x=1)
    return r
"""


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; the file case below still runs")
def test_unwritable_out_is_refused_before_running(cli, fake_dist, tmp_path):  # pragma: no cover - non-root only
    fake_dist("gradkit-marker", "marker_mod", SLOW_REPRO, "marker")
    (cli.pythonpath / "marker_impl.py").write_text(MARKER_IMPL)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    marker = tmp_path / "ran"
    res = cli.run("reproduce", "marker-run", "--out", str(ro / "x"), env={"MARKER": str(marker)}, check=False)
    assert res.returncode == 1 and "not writable" in res.stderr and not marker.exists()


def test_out_that_is_a_file_is_refused_before_running_and_results_are_saved_once(cli, fake_dist, tmp_path):
    fake_dist("gradkit-marker", "marker_mod", SLOW_REPRO, "marker")
    (cli.pythonpath / "marker_impl.py").write_text(MARKER_IMPL)
    marker = tmp_path / "ran"
    a_file = tmp_path / "file"
    a_file.write_text("")
    res = cli.run("reproduce", "marker-run", "--out", str(a_file), env={"MARKER": str(marker)}, check=False)
    assert res.returncode == 2 and "not a directory" in res.stderr and res.stderr.count("\n") == 1
    assert not marker.exists(), "nothing ran"
    out = tmp_path / "new" / "dir"
    cli.run("reproduce", "marker-run", "--out", str(out), "--seed", "4", env={"MARKER": str(marker)})
    data = json.loads((out / "marker-run.json").read_text())
    meta = data["meta"]
    assert meta["seed"] == 4 and meta["component"] == "marker/marker-run" and "gradkit-core" in meta["versions"]
    assert "reproduce marker-run" in meta["command"] and meta["seconds"] >= 0
