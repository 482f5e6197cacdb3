"""A small synthetic results file with every analysis the gallery draws, several seeds at
one eps, for the plot and report tests (numbers shaped like the real ones, made here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from landscape.store import provenance
from landscape.store import write_group as store_write

EPS = {"e0": 0.0, "e01": 0.1, "e02": 0.2}


def _attrs(eps: float | None, name: str, **config) -> dict:
    cfg = dict(config, **({} if eps is None else {"eps": eps}), run=name)
    return provenance(
        command=f"landscape test --run {name} --checkpoint /a/long/path/to/runs/{name}/final.pt",
        config=cfg,
        checkpoint=f"/a/long/path/to/runs/{name}/final.pt",
        checkpoint_sha256="9f2c" * 16,
        device="cpu",
    )


def _runs() -> list[tuple[str, float, int]]:
    """(run name, eps, seed): eps 0.1 has three seeds, the others one."""
    return [("e0", 0.0, 0), ("e01-s0", 0.1, 0), ("e01-s1", 0.1, 1), ("e01-s2", 0.1, 2)] + [
        ("e02", 0.2, 0)
    ]


def build(path: Path, analyses: tuple[str, ...] = ()) -> Path:
    """Write the groups (of `analyses` only, when given) into `path`."""

    def write_group(path, name, arrays, attrs):
        if not analyses or name.split("/")[1] in analyses:
            store_write(path, name, arrays, attrs)

    rng = np.random.default_rng(0)
    for name, eps, seed in _runs():
        scale = 1 + 10 * eps + 0.3 * seed
        index = np.arange(1, 11)
        lam = scale * 50 / index
        write_group(
            path,
            f"/hessian/{name}",
            {"index": index, "eigenvalues": lam * 3, "eigenvalues_normalized": lam},
            _attrs(eps, name),
        )
        alpha = np.array([0, 0.02, 0.05, 0.1, 0.2, 0.4])
        err = np.clip(0.05 + eps + alpha * (1 + 4 * eps) * (1 + 0.1 * seed), 0, 1)
        cos = {
            "top": 1 - alpha * (1 + 5 * eps),
            "random": 1 - 0.05 * alpha,
        }
        arrays = {"alpha": alpha}
        for kind, c in cos.items():
            arrays.update(
                {
                    f"cosine_{kind}_mean": c + 0.01 * seed,
                    f"cosine_{kind}_std": np.full_like(alpha, 0.01),
                    f"robust_error_{kind}_plus": err if kind == "top" else err * 0.5,
                    f"robust_error_{kind}_minus": err * 0.9 if kind == "top" else err * 0.5,
                    f"zero_perturbations_{kind}": np.zeros_like(alpha, dtype=np.int64),
                }
            )
        write_group(path, f"/cosine/{name}", arrays, _attrs(eps, name, split="train"))
        t = np.linspace(0, 1, 11)
        barrier = (0.05 + eps) * np.sin(np.pi * t) + 0.02 * seed
        write_group(
            path,
            f"/connect/{name}",
            {
                "t": t,
                "train_loss": 0.1 + barrier,
                "test_error": 0.05 + barrier / 3,
                "line_train_loss": 0.1 + 4 * barrier,
                "line_test_error": 0.05 + barrier,
                "adv_train_loss": 0.3 + 2 * barrier,
                "adv_test_error": 0.2 + barrier,
                "line_adv_train_loss": 0.3 + 6 * barrier,
                "line_adv_test_error": 0.2 + 2 * barrier,
            },
            _attrs(eps, name, order=3),
        )
        steps = np.arange(400)
        write_group(
            path,
            f"/trace/{name}",
            {
                "step": steps,
                "epoch": steps / 100,
                "loss": np.exp(-steps / 150) * (1 + eps) + 0.05 * rng.random(400),
                "grad_norm": (1 + 5 * eps) * (0.2 + np.exp(-steps / 50)) + 0.1 * rng.random(400),
                "robust_error": np.clip(0.9 * np.exp(-steps / 200) + eps, 0, 1),
                "distance_from_init": np.sqrt(steps) * (1 + eps),
            },
            _attrs(eps, name),
        )
    for name, eps in EPS.items():
        x = np.linspace(-1, 1, 9)
        X, Y = np.meshgrid(x, x, indexing="ij")
        bowl = (1 + 8 * eps) * (X**2 + 0.5 * Y**2)
        write_group(
            path,
            f"/surface/{name}",
            {
                "x": x,
                "y": x,
                "loss": 0.1 + bowl,
                "error": np.clip(bowl / 10, 0, 1),
                "adv_loss": 0.3 + 2 * bowl,
                "adv_error": np.clip(bowl / 5, 0, 1),
            },
            _attrs(eps, name, dirs="random"),
        )
        write_group(
            path,
            f"/surface/{name}-line",
            {
                "x": x,
                "loss": 0.1 + (1 + 8 * eps) * x**2,
                "error": np.clip(x**2, 0, 1),
                "adv_loss": 0.3 + 2 * (1 + 8 * eps) * x**2,
                "adv_error": np.clip(2 * x**2, 0, 1),
            },
            _attrs(eps, f"{name}-line", dirs="random"),
        )
        radius = np.logspace(-3, 0, 6)
        write_group(
            path,
            f"/smoothness/{name}",
            {
                "radius": radius,
                "lipschitz_clean_mean": 10 / (1 + radius),
                "lipschitz_clean_std": np.full(6, 0.5),
                "lipschitz_linf_mean": (10 + 100 * eps) / (1 + radius),
                "lipschitz_linf_std": np.full(6, 0.5),
            },
            _attrs(eps, name, dirs="random"),
        )
    for key, values in (("width", [1, 2, 4, 8]), ("lr", [1e-3, 1e-2, 1e-1])):
        arrays: dict = {"x": np.array(values, dtype=float)}
        series = ["constant", "warmup"]
        for i, s in enumerate(series):
            mean = 0.3 - 0.02 * np.arange(len(values)) + 0.05 * i
            arrays[f"{s}_robust_error_mean"] = mean
            arrays[f"{s}_robust_error_std"] = np.full(len(values), 0.01)
            arrays[f"{s}_clean_error_mean"] = mean / 3
            arrays[f"{s}_clean_error_std"] = np.full(len(values), 0.005)
        attrs = _attrs(None, key)
        attrs.update(x_key=key, series=json.dumps(series))
        if key == "lr":
            attrs["reference"] = json.dumps("constant")
        write_group(path, f"/sweep/{key}", arrays, attrs)
    write_group(
        path,
        "/table/methods",
        {
            "index": np.arange(3),
            "row": np.array(["AT", "AT+EnSGD", "periodic"]),
            "clean_error": np.array([0.031, 0.029, 0.04]),
            "robust_error": np.array([0.21, 0.2, 0.25]),
            "clean_error_std": np.array([0.002, 0.003, 0.001]),
            "robust_error_std": np.array([0.004, 0.01, 0.02]),
        },
        _attrs(0.1, "methods"),
    )
    for name in ("AT", "AWP"):
        epoch = np.arange(1, 9)
        robust = 0.8 * np.exp(-epoch / 3) + 0.2 + (0.02 if name == "AWP" else 0)
        arrays = {
            "epoch": epoch,
            "wall_time": epoch * 3.0,
            "clean_error": robust / 4,
            "robust_error": robust,
            "clean_loss": robust,
            "robust_loss": 2 * robust,
            "train_clean_error": robust / 5,
            "train_robust_error": robust - 0.1,
            "train_clean_loss": robust / 2,
            "train_robust_loss": 1.5 * robust,
        }
        attrs = _attrs(0.1, name)
        attrs["label"] = name
        write_group(path, f"/evalcurve/{name}", arrays, attrs)
    d = np.linspace(0, 10, 51)
    write_group(
        path,
        "/schedule/warmup",
        {
            "epoch": d,
            "linear": np.minimum(d / 5, 1) * 0.3,
            "cosine": 0.15 * (1 - np.cos(np.pi * np.minimum(d / 5, 1))),
        },
        _attrs(None, "warmup"),
    )
    return path
