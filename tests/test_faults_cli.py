"""Fault isolation through real entry points and the real CLI (subprocesses).

Each faulty plugin is a fake installed distribution on PYTHONPATH; the installed
first-party plugins keep listing and creating, `gradkit --help` and `gradkit
plugins` keep working, and the faulty one shows a status and a one-line reason.
"""

import pytest

GOOD = """
from gradkit_core import hookimpl
PLUGIN_API_VERSION = 1

@hookimpl
def gradkit_register_metrics(register):
    register("fake-good-metric", "collections:Counter", summary="a working third plugin")
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
    assert plugins["lion"]["status"] == "ok", "first-party plugins keep working"

    names = {(c["kind"], c["name"]) for c in cli.json("list")}
    assert ("metrics", "fake-good-metric") in names and ("optimizers", "lion") in names
    assert not any(n in ("partial-metric", "future-metric", "never") for _, n in names)
    table = cli.run("plugins").stdout
    assert "faulty" in table and status in table
    # creating from the other plugins still works (imports torch in that subprocess only)
    out = cli.run("info", "lion", "--kind", "optimizers").stdout
    assert "2302.06675" in out
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
    assert plugins["lion"]["status"] == "ok"


def test_unknown_name_error_from_cli(cli):
    res = cli.run("info", "lino", check=False)
    assert res.returncode == 2 and "lion" in res.stderr
