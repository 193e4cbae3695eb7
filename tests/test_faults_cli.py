"""Fault isolation through real entry points and the real CLI (subprocesses).

Each faulty plugin is a fake installed distribution on PYTHONPATH beside a fake good one; the good
one keeps listing and loading, `gradkit --help` and `gradkit plugins` keep working, and the faulty
one shows a status and a one-line reason.  Only fake plugins are asserted on: these tests hold with
no first-party plugin installed.
"""

import pytest

GOOD = """
from gradkit_core import hookimpl
PLUGIN_API_VERSION = 1

@hookimpl
def gradkit_register_metrics(register):
    register("fake-good-metric", "collections:Counter", summary="a working third plugin",
             paper={"title": "Counting", "arxiv": "0000.00001", "year": 2000})
"""

FAULTS = {
    "import-error": (
        """
import gradkit_core
raise ImportError("cannot import name 'nothing' from 'somewhere'")
""",
        "failed",
        "import failed",
    ),
    "bad-signature": (
        """
from gradkit_core import hookimpl
PLUGIN_API_VERSION = 1

@hookimpl
def gradkit_register_metrics(reg, extra):
    reg("never", "a:b")
""",
        "failed",
        "invalid hook implementation",
    ),
    "raises-in-hook": (
        """
from gradkit_core import hookimpl
PLUGIN_API_VERSION = 1

@hookimpl
def gradkit_register_metrics(register):
    register("partial-metric", "a:b")
    raise RuntimeError("database not found")
""",
        "failed",
        "database not found",
    ),
    "incompatible": (
        """
from gradkit_core import hookimpl
PLUGIN_API_VERSION = 99

@hookimpl
def gradkit_register_metrics(register):
    register("future-metric", "a:b")
""",
        "incompatible",
        "upgrade gradkit-core",
    ),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_faulty_plugin_is_isolated(cli, fake_dist, fault):
    source, status, reason = FAULTS[fault]
    fake_dist("gradkit-fake-good", "fake_good", GOOD, "fakegood")
    fake_dist("gradkit-faulty", "faulty_plugin", source, "faulty")

    assert "usage: gradkit" in cli.run("--help").stdout
    plugins = {p["name"]: p for p in cli.json("plugins")}
    assert plugins["faulty"]["status"] == status
    assert reason in plugins["faulty"]["error"]
    assert "\n" not in plugins["faulty"]["error"], "the reason is one line"
    assert plugins["fakegood"]["status"] == "ok"

    names = {(c["kind"], c["name"]) for c in cli.json("list")}
    assert ("metrics", "fake-good-metric") in names
    assert not any(n in ("partial-metric", "future-metric", "never") for _, n in names)
    table = cli.run("plugins").stdout
    assert "faulty" in table and status in table
    out = cli.run("info", "fake-good-metric", "--kind", "metrics", "--doc").stdout
    assert "0000.00001" in out and "collections:Counter" in out
    doctor = cli.run("doctor", check=False)
    assert doctor.returncode == 1 and "faulty" in doctor.stdout

    strict = cli.run("list", env={"GRADKIT_STRICT": "1"}, check=False)
    assert strict.returncode == 2 and "faulty" in strict.stderr and "GRADKIT_STRICT" in strict.stderr


def test_name_clash_between_two_plugins(cli, fake_dist):
    clash = """
from gradkit_core import hookimpl
PLUGIN_API_VERSION = 1

@hookimpl
def gradkit_register_metrics(register):
    register("shared-name", "collections:{}")
"""
    fake_dist("gradkit-clash-a", "clash_a", clash.format("Counter"), "clasha")
    fake_dist("gradkit-clash-b", "clash_b", clash.format("OrderedDict"), "clashb")
    plugins = {p["name"]: p for p in cli.json("plugins")}
    assert plugins["clasha"]["status"] == plugins["clashb"]["status"] == "conflict"
    assert "clashb" in plugins["clasha"]["error"]
    res = cli.run("info", "shared-name", check=False)
    assert res.returncode == 2 and "clasha/shared-name" in res.stderr and "clashb/shared-name" in res.stderr
    assert "collections:OrderedDict" in cli.run("info", "clashb/shared-name").stdout


def test_unknown_name_error_from_cli(cli, fake_dist):
    fake_dist("gradkit-fake-good", "fake_good", GOOD, "fakegood")
    res = cli.run("info", "fake-good-metrc", check=False)
    assert res.returncode == 2 and "fake-good-metric" in res.stderr and res.stderr.count("\n") == 1
