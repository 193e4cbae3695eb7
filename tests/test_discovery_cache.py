"""The discovery cache: a second cold start reads it; any change to what discovery would find invalidates it."""

import json
import shutil
import textwrap
import time

PLUGIN = """
from gradkit_core import hookimpl
PLUGIN_API_VERSION = 1

@hookimpl
def gradkit_register_metrics(register):
{body}
"""

PROBE = """
import json, sys, gradkit_core as gk
reg = gk.registry()
names = sorted(s.name for s in gk.list(kind="metrics") if s.plugin.startswith("cached"))
print(json.dumps({"source": reg.source, "names": names, "pluggy": "pluggy" in sys.modules,
                  "defaults": {s.name: repr(dict(s.defaults)) for s in gk.list(kind="metrics") if s.plugin == "cached"}}))
"""


def plugin(*regs):
    return PLUGIN.format(body="\n".join(f"    register({r})" for r in regs) or "    pass")


def probe(cli):
    out = cli.python(PROBE)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def touch_later(path, text):
    time.sleep(0.01)  # a different mtime even on coarse clocks
    path.write_text(text)


def test_second_start_reads_the_cache_without_pluggy(cli, fake_dist):
    fake_dist("gradkit-cached", "cached_mod",
              plugin('"c-one", "collections:Counter", defaults={"betas": (0.9, 0.99), "w": [1, {"a": None}]}'),
              "cached")
    first = probe(cli)
    second = probe(cli)
    assert first["source"] == "scan" and second["source"] == "cache"
    assert first["names"] == second["names"] == ["c-one"]
    assert second["pluggy"] is False, "a cache hit imports no plugin module and not pluggy"
    assert first["defaults"] == second["defaults"] == {"c-one": "{'betas': (0.9, 0.99), 'w': [1, {'a': None}]}"}, \
        "defaults survive the cache exactly (tuples stay tuples)"


def test_editing_a_plugin_module_invalidates_the_cache(cli, fake_dist, fake_site):
    fake_dist("gradkit-cached", "cached_mod", plugin('"c-one", "collections:Counter"'), "cached")
    probe(cli)
    assert probe(cli)["source"] == "cache"
    touch_later(fake_site / "cached_mod.py", plugin('"c-one", "collections:Counter"', '"c-two", "collections:Counter"'))
    after = probe(cli)
    assert after["source"] == "scan" and after["names"] == ["c-one", "c-two"]


def test_installing_and_removing_a_distribution_invalidates_the_cache(cli, fake_dist, fake_site):
    fake_dist("gradkit-cached", "cached_mod", plugin('"c-one", "collections:Counter"'), "cached")
    probe(cli)
    fake_dist("gradkit-cached2", "cached2_mod", plugin('"c-new", "collections:Counter"'), "cached2")
    assert probe(cli)["names"] == ["c-new", "c-one"]
    shutil.rmtree(fake_site / "gradkit_cached2-0.1.0.dist-info")
    after = probe(cli)
    assert after["source"] == "scan" and after["names"] == ["c-one"]


def test_a_failed_plugin_is_never_cached(cli, fake_dist):
    fake_dist("gradkit-cached", "cached_mod", plugin('"c-one", "collections:Counter"'), "cached")
    fake_dist("gradkit-needs", "needs_mod", "import not_installed_yet_xyz\n", "needs")
    assert probe(cli)["source"] == "scan"
    assert probe(cli)["source"] == "scan", "a failure may be cured outside the fingerprint (a dependency installed)"


def test_no_cache_switch_and_a_damaged_cache_file(cli, fake_dist):
    fake_dist("gradkit-cached", "cached_mod", plugin('"c-one", "collections:Counter"'), "cached")
    probe(cli)
    out = cli.python(PROBE, env={"GRADKIT_NO_CACHE": "1"})
    assert json.loads(out.stdout)["source"] == "scan"
    cache_dir = cli.pythonpath.parent / "gradkit-cache"
    for f in cache_dir.glob("discovery-*"):
        f.write_text("{not json")
    assert probe(cli)["source"] == "scan" and probe(cli)["source"] == "cache"
