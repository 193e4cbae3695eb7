"""Benchmark: latency of every CAM in the plugin next to captum's LayerGradCam.

One process, interleaved rounds, one CPU thread; each method's median CPU time (``time.process_time``) is
reported as a ratio to captum's ``LayerGradCam`` (+ ``LayerAttribution.interpolate``
to the input size, which is what a user of captum needs for the same map).  Two
settings: one image at a time (the paper's per-image latency) and a batch of 16.
Models: the reproduction's CNN on 64x64 inputs (64 channels at the target layer)
and, outside ``quick``, a wider one (256 channels), where the cost of the
gradient-free methods (one forward per channel) grows while CF-CAM's does not.
Weights are random (latency does not depend on training), seeded.  Also checks
that gradkit's Grad-CAM equals captum's map.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, Optional

import torch

import gradkit_core as gk
from gradkit_core.results import Result
from gradkit_core.results import progress as progress_bar

from .cams import normalize_maps
from .data import CamCNN

METHODS = [
    ("grad-cam", "grad-cam", {}),
    ("grad-cam++", "grad-cam++", {}),
    ("smooth-grad-cam++", "smooth-grad-cam++", {"n_samples": 10}),
    ("score-cam", "score-cam", {}),
    ("ablation-cam", "ablation-cam", {}),
    ("cf-cam", "cf-cam", {"filter": "gaussian"}),
    ("cf-cam/bilateral", "cf-cam", {"filter": "bilateral"}),
]


def _captum_fn(model, layer) -> Optional[Callable]:
    try:
        from captum.attr import LayerAttribution, LayerGradCam
    except Exception:  # noqa: BLE001 - optional peer
        return None
    lgc = LayerGradCam(model, layer)

    def fn(x, t):
        a = lgc.attribute(x, target=t, relu_attributions=True)
        return normalize_maps(LayerAttribution.interpolate(a, tuple(x.shape[-2:]), "bilinear")[:, 0].detach(),
                              x.shape[-2:])

    return fn


def _time(fn, x, t) -> float:
    """CPU time of one call (one thread: equals wall time on an idle machine, and is not inflated by other
    processes on a shared one)."""
    t0 = time.process_time()
    fn(x, t)
    return time.process_time() - t0


def run(*, quick: bool = False, out: Optional[str] = None, seed: int = 0, progress: bool = True) -> Result:
    res = Result("cfcam", title="CAM latency vs captum LayerGradCam (ratio = method time / captum time)")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rounds = 3 if quick else 7
    settings = [("cnn-64ch", (8, 16, 32, 64))] + ([] if quick else [("cnn-256ch", (8, 16, 64, 256))])
    try:
        for model_name, widths in settings:
            torch.manual_seed(seed)
            model = CamCNN(num_classes=2, widths=widths, pools=3).eval()
            layer = model.cam_layer()
            g = torch.Generator().manual_seed(seed)
            xs = {"batch1": torch.rand(1, 1, 64, 64, generator=g), "batch16": torch.rand(16, 1, 64, 64, generator=g)}
            ref = _captum_fn(model, layer)
            fns: Dict[str, Callable] = {}
            cams = {}
            for label, name, kw in METHODS:
                cams[label] = gk.create(name, model, target_layer=layer, kind="explainers", **kw)
                fns[label] = (lambda c: (lambda x, t: c(x, targets=t)))(cams[label])
            if ref is not None:
                fns["captum LayerGradCam"] = ref
                x = xs["batch16"]
                t = torch.zeros(len(x), dtype=torch.long)
                diff = float((cams["grad-cam"](x, targets=t) - ref(x, t)).abs().max())
                res.add_claim(f"[{model_name}] gradkit grad-cam equals captum LayerGradCam (max |diff| < 1e-5)",
                              diff < 1e-5, f"max |diff| = {diff:.2e}")
            else:
                res.add_note("captum is not installed: absolute times only (pip install captum)")
            for setting, x in xs.items():
                if model_name == "cnn-256ch" and setting == "batch16":
                    continue
                t = torch.zeros(len(x), dtype=torch.long)
                for fn in fns.values():  # warm-up
                    fn(x, t)
                times: Dict[str, list] = {k: [] for k in fns}
                for _ in progress_bar(range(rounds), desc=f"{model_name} {setting}", enabled=progress):
                    for k, fn in fns.items():
                        times[k].append(_time(fn, x, t))
                med = {k: statistics.median(v) for k, v in times.items()}
                base = med.get("captum LayerGradCam")
                for k, v in med.items():
                    row = dict(model=model_name, setting=setting, method=k, ms_per_image=1000 * v / len(x))
                    if base is not None:
                        row["ratio_vs_captum"] = v / base
                    row["vs_score_cam_speed"] = med["score-cam"] / v
                    res.add_row(**row)
                sp = med["score-cam"] / med["cf-cam"]
                res.add_claim(f"[{model_name}, {setting}] CF-CAM is at least 4x faster than Score-CAM", sp >= 4,
                              f"{sp:.1f}x")
    finally:
        torch.set_num_threads(threads)
    res.add_note("ratio_vs_captum: median CPU time (time.process_time) / captum LayerGradCam's median CPU time in the "
                 "same rounds (1 CPU thread); "
                 "captum timed with interpolate + max-normalisation so that it returns the same (B, H, W) maps")
    return res  # the CLI prints it and writes JSON/PNG into --out
