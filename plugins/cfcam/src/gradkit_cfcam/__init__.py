"""gradkit plugin: CF-CAM (He, Pan, Yao, 2025) and the Grad-CAM family.  Registers components only; imports no torch."""

from gradkit_core import hookimpl

PLUGIN_API_VERSION = 1

PAPER = dict(title="CF-CAM: Cluster Filter Class Activation Mapping for Reliable Gradient-Based Interpretability",
             arxiv="2504.00060", year=2025)
GRADCAM = dict(title="Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization",
               arxiv="1610.02391", year=2017)
GRADCAMPP = dict(title="Grad-CAM++: Improved Visual Explanations for Deep Convolutional Networks",
                 arxiv="1710.11063", year=2018)
SMOOTH = dict(title="Smooth Grad-CAM++: An Enhanced Inference Level Visualization Technique for Deep "
                    "Convolutional Neural Network Models", arxiv="1908.01224", year=2019)
SCORE = dict(title="Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural Networks",
             arxiv="1910.01279", year=2020)
ABLATION = dict(title="Ablation-CAM: Visual Explanations for Deep Convolutional Network via Gradient-free "
                      "Localization", arxiv="", year=2020)


@hookimpl
def gradkit_register_explainers(register):
    register("cf-cam", "gradkit_cfcam.cams:CFCAM",
             summary="CF-CAM: norm split + DBSCAN channel clusters + per-cluster gradient filtering, softmax weights",
             paper=PAPER, tags=["cam", "saliency", "gradient"],
             defaults={"filter": "gaussian", "weight_norm": "softmax"})
    register("grad-cam", "gradkit_cfcam.cams:GradCAM",
             summary="Grad-CAM: channel weights = spatial mean of the class-logit gradient",
             paper=GRADCAM, tags=["cam", "saliency", "gradient", "baseline"])
    register("grad-cam++", "gradkit_cfcam.cams:GradCAMPlusPlus",
             summary="Grad-CAM++: higher-order (closed-form alpha) gradient weights",
             paper=GRADCAMPP, tags=["cam", "saliency", "gradient", "baseline"])
    register("smooth-grad-cam++", "gradkit_cfcam.cams:SmoothGradCAMPlusPlus",
             summary="Smooth Grad-CAM++: Grad-CAM++ with gradient moments averaged over noisy inputs",
             paper=SMOOTH, tags=["cam", "saliency", "gradient", "baseline"],
             defaults={"n_samples": 10, "sigma": 0.1})
    register("score-cam", "gradkit_cfcam.cams:ScoreCAM",
             summary="Score-CAM: gradient-free, weights = class probability of the input masked by each channel",
             paper=SCORE, tags=["cam", "saliency", "gradient-free", "baseline"])
    register("ablation-cam", "gradkit_cfcam.cams:AblationCAM",
             summary="Ablation-CAM: gradient-free, weights = relative logit drop when a channel is zeroed",
             paper=ABLATION, tags=["cam", "saliency", "gradient-free", "baseline"])


@hookimpl
def gradkit_register_metrics(register):
    m = "gradkit_cfcam.metrics"
    register("average-drop", f"{m}:average_drop", paper=PAPER, tags=["saliency", "faithfulness"],
             summary="Average Drop (%) of the class probability on the CAM-masked input; lower is better")
    register("average-increase", f"{m}:average_increase", paper=PAPER, tags=["saliency", "faithfulness"],
             summary="Average Increase (%): share of inputs whose class probability rises when CAM-masked; higher is better")
    register("deletion-auc", f"{m}:deletion_auc", paper=PAPER, tags=["saliency", "faithfulness"],
             summary="Deletion AUC of the class probability as top-CAM pixels are removed; lower is better")
    register("insertion-auc", f"{m}:insertion_auc", paper=PAPER, tags=["saliency", "faithfulness"],
             summary="Insertion AUC of the class probability as top-CAM pixels are revealed; higher is better")
    register("cam-robustness", f"{m}:cam_robustness", paper=PAPER, tags=["saliency", "robustness"],
             summary="SSIM (higher better) / MSE (lower better) of the CAM under noise injected into the raw gradient")
    register("cam-latency", f"{m}:cam_latency", paper=PAPER, tags=["saliency", "speed"],
             summary="Median seconds per input of an explainer; lower is better")
    register("energy-in-mask", f"{m}:energy_in_mask", paper=PAPER, tags=["saliency", "localisation"],
             summary="Share of CAM energy inside the ground-truth object mask; higher is better")
    register("pointing-game", f"{m}:pointing_game", paper=PAPER, tags=["saliency", "localisation"],
             summary="Share of CAM maxima inside the ground-truth object mask; higher is better")


@hookimpl
def gradkit_register_reproductions(register):
    register("cfcam", "gradkit_cfcam.reproduce:run", paper=PAPER,
             summary="CF-CAM vs Grad-CAM, Grad-CAM++, Smooth Grad-CAM++, Score-CAM, Ablation-CAM on generated "
                     "lesion images with masks and on digits: faithfulness, gradient-noise robustness, latency")


@hookimpl
def gradkit_register_benchmarks(register):
    register("cfcam", "gradkit_cfcam.bench:run", paper=PAPER,
             summary="Latency of every CAM in the plugin as a ratio to captum's LayerGradCam")
