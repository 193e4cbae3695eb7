"""One plugin, alone, in a fresh virtual environment, through the README's commands.

    python -m venv env
    env/bin/pip install -c tools/constraints.txt .        # the core, from the checkout (not editable)
    env/bin/gradkit install tract --from .                # tract + gradkit-support + their third-party deps

then `gradkit list`, `gradkit plugins` and the plugin's quick reproduction run there.  The core is a
wheel-style install, so this also checks that the catalog ships inside the package, and that a
registry.toml lying in site-packages is ignored.  About a minute and a half on 2 cores (torch comes
from the local wheel cache).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "tract"


def run(cmd, env, timeout=900):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-3000:]}"
    return proc


def test_one_plugin_installs_alone_and_reproduces(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADKIT_", "VIRTUAL_ENV", "PYTHONPATH"))}
    env.update(GRADKIT_CACHE_DIR=str(tmp_path / "cache"), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    venv = tmp_path / "env"
    run([sys.executable, "-m", "venv", venv], env)
    py, gradkit = venv / "bin" / "python", venv / "bin" / "gradkit"
    pip = [py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run(pip + ["-c", ROOT / "tools" / "constraints.txt", ROOT], env)

    # the core alone: the catalog works from the installed package, and a stray registry.toml is ignored
    site = Path(run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env).stdout.strip())
    (site / "registry.toml").write_text('[plugins.trojan]\ndirectory = "x"\ndistribution = "trojan"\n'
                                        'components = { metrics = ["trojan-metric"] }\n')
    avail = json.loads(run([gradkit, "list", "--available", "--json"], env).stdout)
    names = {r["name"] for r in avail}
    assert "trojan-metric" not in names and "tract" in names, "catalog comes from the installed gradkit_core"
    hint = subprocess.run([gradkit, "info", "tract"], capture_output=True, text=True, env=env)
    assert hint.returncode == 2 and "gradkit install tract" in hint.stderr
    nosrc = subprocess.run([gradkit, "install", PLUGIN, "--dry-run"], capture_output=True, text=True, env=env)
    assert nosrc.returncode == 2 and "--from" in nosrc.stderr, "a wheel-installed core has no implicit source"

    dry = run([gradkit, "install", PLUGIN, "--from", ROOT, "--dry-run"], env).stdout
    assert str(ROOT / "plugins" / "support") in dry and str(ROOT / "plugins" / PLUGIN) in dry
    run([gradkit, "install", PLUGIN, "--from", ROOT], env)

    dists = json.loads(run([py, "-m", "pip", "list", "--format", "json"], env).stdout)
    ours = sorted(d["name"] for d in dists if d["name"].lower().startswith("gradkit"))
    assert ours == ["gradkit-core", "gradkit-support", "gradkit-tract"], ours
    assert any(d["name"].lower() == "matplotlib" for d in dists), "reproductions plot: matplotlib comes along"

    listing = run([gradkit, "list"], env).stdout
    assert "tract" in listing and "small-cnn" in listing and "lion" not in listing
    plugins = {p["name"]: p for p in json.loads(run([gradkit, "plugins", "--json"], env).stdout)}
    assert set(plugins) == {"support", PLUGIN} and all(p["status"] == "ok" for p in plugins.values())
    out = tmp_path / "results"
    rep = run([gradkit, "reproduce", PLUGIN, "--quick", "--no-progress", "--out", out], env)
    assert "claims:" in rep.stdout
    assert (out / f"{PLUGIN}.json").is_file()
    assert (out / f"{PLUGIN}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
