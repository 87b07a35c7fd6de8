"""Ship a defended classifier: a TorchScript file that needs only torch, or a safetensors bundle.

TorchScript (``export``): one ``.pt`` file holding the classifier, the generator, the encoder (if
any) and the projection loop itself (the same :class:`~manifold_defense.projection.ProjectionLoop`
code the library runs, scripted). Load it anywhere with plain torch::

    import torch
    model = torch.jit.load("defended.pt")
    torch.manual_seed(0)                  # restarts come from torch's global RNG, as in the library
    logits = model(images)                # images: (N, C, H, W) in the domain's pixel range

Bundle (``save_bundle`` / ``load``): a directory of safetensors weights and JSON configs
(``manifest.json`` names the parts, the projection settings and the versions), loaded by
``manifold_defense.load(path)`` without unpickling anything; every weights file is checked against
the SHA-256 in its config.

    python -m manifold_defense.export --help
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from .models.checkpoint import CheckpointError, load_model, save_model
from .purify.defended import DefendedClassifier, PurifiedClassifier
from .domains.registry import Domain
from .projection.operators import Identity
from .projection.loop import ProjectionConfig, ProjectionLoop
from .utils.version import __version__

__all__ = ["export", "export_onnx", "save_bundle", "load", "AmortisedDefense", "ScriptableDefense", "BUNDLE_FORMAT"]

BUNDLE_FORMAT = "manifold-defense/bundle"


class ScriptableDefense(nn.Module):
    """C(G(z*(x))) in TorchScript-compatible form (what :func:`export` scripts).

    Restarts are drawn as the library draws them with no seed: ``torch.randn`` on the CPU from the
    global RNG, restart-major; so ``torch.manual_seed(s)`` before a call reproduces the library's
    predictions for the same seed.
    """

    def __init__(self, classifier: nn.Module, loop: ProjectionLoop, encoder: Optional[nn.Module],
                 config: ProjectionConfig, latent_dim: int, image_shape: Sequence[int]) -> None:
        super().__init__()
        self.classifier = classifier
        self.loop = loop
        self.encoder = encoder
        self.has_encoder = encoder is not None and config.use_encoder
        self.restarts = config.restarts
        self.latent_dim = latent_dim
        self.init_std = config.init_std if config.init_std is not None else 1.0 / math.sqrt(latent_dim)
        self.chunk = max(1, config.max_batch // config.restarts)
        self.low, self.high = float(config.pixel_range[0]), float(config.pixel_range[1])
        self.image_shape = [int(s) for s in image_shape]

    def check(self, x: torch.Tensor) -> None:
        # The exported artifact runs without this repository, so it carries its own TorchScript
        # version of manifold_defense.utils.validation.check_images (same rules, same order).
        if not x.is_floating_point():
            raise ValueError("images must be floating point in the pixel range (e.g. x.float() / 255)")
        if x.dim() != 4 or list(x.shape[1:]) != self.image_shape:
            raise ValueError("images must have shape (N, C, H, W) matching the generator's output " + str(self.image_shape))
        if not bool(torch.isfinite(x).all()):
            raise ValueError("images contain NaN or infinite values")
        if float(x.min()) < self.low - 1e-6 or float(x.max()) > self.high + 1e-6:
            raise ValueError("images have values outside the pixel range")

    @torch.jit.export
    def purify(self, x: torch.Tensor) -> torch.Tensor:
        """G(z*) for a batch of images."""
        self.check(x)
        n = x.shape[0]
        z0 = torch.randn([self.restarts, n, self.latent_dim]).transpose(0, 1)
        z0 = (z0 * self.init_std).to(device=x.device, dtype=x.dtype)
        encoder = self.encoder
        if self.has_encoder and encoder is not None:
            z_enc = encoder(x).detach()
            z0 = torch.cat([z_enc.unsqueeze(1).to(z0.dtype), z0[:, 1:]], dim=1)
        y = self.loop.operator(x).detach()
        parts: list[torch.Tensor] = []
        for start in range(0, n, self.chunk):
            x_hat, _, _, _, _ = self.loop(y[start:start + self.chunk], z0[start:start + self.chunk], False)
            parts.append(x_hat.detach())
        return torch.cat(parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.purify(x))


def _scriptable(module: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """Script a module, or trace it with ``example`` when its code does not script."""
    try:
        return torch.jit.script(module)
    except Exception:  # noqa: BLE001 - any scripting failure falls back to tracing
        return torch.jit.trace(module, example)


class _PurifiedForExport(nn.Module):
    """C(P(x)) with P run as deployed (no gradient tricks): what a generic purifier exports as."""

    def __init__(self, classifier: nn.Module, purifier: nn.Module) -> None:
        super().__init__()
        self.classifier, self.purifier = classifier, purifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.purifier(x))


def export(defended: PurifiedClassifier, path: str | Path, *, image_shape: tuple[int, ...] | None = None) -> Path:
    """Write ``defended`` as one TorchScript file that runs with only torch installed.

    A projection defense (:class:`DefendedClassifier`) is scripted with its whole optimisation loop;
    any other purifier is scripted, or traced at ``image_shape`` when its code does not script (a
    trace keeps a fixed loop and fresh random draws, e.g. a diffusion sampler's, but not
    data-dependent control flow: check the exported model's accuracy).

    Args:
        defended: the model to ship (copied; nothing of it is changed).
        path: the ``.pt`` file to write.
        image_shape: (C, H, W) of the inputs, needed to trace a purifier that is not a projection.

    Returns:
        The path written.

    Raises:
        TypeError: ``defended`` is not a :class:`PurifiedClassifier`.
        ValueError: a non-projection purifier without ``image_shape``.
        RuntimeError: a part neither scripts nor traces.
    """
    if not isinstance(defended, PurifiedClassifier):
        raise TypeError(f"export needs a PurifiedClassifier or DefendedClassifier, got {type(defended).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not isinstance(defended, DefendedClassifier):
        if image_shape is None:
            raise ValueError(f"export of a {type(defended.purifier).__name__} needs image_shape=(C, H, W) to trace it")
        generic = _PurifiedForExport(copy.deepcopy(defended.classifier), copy.deepcopy(defended.purifier)).eval().cpu()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation and tracer warnings: the trace is checked by its user
            _scriptable(generic, torch.zeros(2, *image_shape)).save(str(path))
        return path
    image = torch.zeros(1, *defended.image_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export,
        # which cannot express the data-dependent loop (early stopping, halving); TorchScript still runs it.
        classifier = _scriptable(copy.deepcopy(defended.classifier).eval().cpu(), image)
        generator = _scriptable(copy.deepcopy(defended.generator).eval().cpu(), torch.zeros(1, defended.latent_dim))
        encoder = None
        if defended.encoder is not None:
            encoder = _scriptable(copy.deepcopy(defended.encoder).eval().cpu(), image)
        operator = copy.deepcopy(defended.operator).cpu() if defended.operator is not None else Identity()
        loop = ProjectionLoop(generator, _scriptable(operator, image), defended.config)
        module = ScriptableDefense(classifier, loop, encoder, defended.config, defended.latent_dim, defended.image_shape)
        scripted = torch.jit.script(module.eval())
        scripted.save(str(path))
    return path


class AmortisedDefense(nn.Module):
    """C(G(E(x))): the projection replaced by the encoder's one-shot guess (no optimisation steps).

    Faster and weaker than the full defense (the shipped encoder alone reconstructs with per-pixel
    MSE 0.0136, the default projection 0.0089); a plain feed-forward graph, so it exports to ONNX.
    """

    def __init__(self, classifier: nn.Module, generator: nn.Module, encoder: nn.Module) -> None:
        super().__init__()
        self.classifier, self.generator, self.encoder = classifier, generator, encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.generator(self.encoder(x)))


def export_onnx(defended: DefendedClassifier, path: str | Path) -> Path:
    """Write the encoder-only amortised path C(G(E(x))) as ONNX (dynamic batch size), for onnxruntime.

    Raises:
        TypeError: not a :class:`DefendedClassifier`.
        ValueError: the model has no encoder.
    """
    if not isinstance(defended, DefendedClassifier):
        raise TypeError(f"export_onnx needs a DefendedClassifier, got {type(defended).__name__}")
    if defended.encoder is None:
        raise ValueError("export_onnx exports the encoder-only amortised path: the model has no encoder")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = AmortisedDefense(*(copy.deepcopy(m).eval().cpu() for m in (defended.classifier, defended.generator,
                                                                            defended.encoder)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, *defended.image_shape),), str(path), input_names=["images"],
                          output_names=["logits"], dynamic_axes={"images": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    return path


def save_bundle(defended: DefendedClassifier, path: str | Path, *, domain: Domain | None = None) -> Path:
    """Write a directory bundle: safetensors + JSON per part and a ``manifest.json``.

    ``domain`` (optional) is recorded in the manifest (image shape, pixel range, classes, budgets),
    so that whoever loads the bundle knows what it expects.

    Raises:
        TypeError: not a :class:`DefendedClassifier`.
        ValueError: a part is not a registered architecture, or a non-identity operator (not yet storable).
    """
    if not isinstance(defended, DefendedClassifier):
        raise TypeError(f"save_bundle needs a DefendedClassifier, got {type(defended).__name__}")
    if defended.operator is not None and not isinstance(defended.operator, Identity):
        raise ValueError("bundles store the identity operator only; export() ships any scriptable operator")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    parts = {"classifier": defended.classifier, "generator": defended.generator}
    if defended.encoder is not None:
        parts["encoder"] = defended.encoder
    for name, module in parts.items():
        save_model(module, path / name)
    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "format_version": 1,
        "parts": sorted(parts),
        "projection": defended.config.to_dict(),
        "gradient": defended.gradient,
        "latent_dim": defended.latent_dim,
        "versions": {"manifold_defense": _version(), "torch": torch.__version__},
    }
    if domain is not None:
        if tuple(domain.image_shape) != tuple(defended.image_shape):
            raise ValueError(f"the domain's images are {domain.image_shape} but the generator makes "
                             f"{tuple(defended.image_shape)}")
        manifest["domain"] = domain.to_dict()
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def _version() -> str:
    return __version__


def load(path: str | Path, *, map_location: str | torch.device = "cpu") -> DefendedClassifier:
    """Load a bundle written by :func:`save_bundle` (eval mode). Nothing is unpickled.

    Raises:
        CheckpointError: missing or invalid manifest, a missing, truncated or tampered part.
    """
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise CheckpointError(f"{path} is not a bundle: {manifest_path} not found")
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{manifest_path} is not valid JSON ({exc}); the bundle is corrupt") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise CheckpointError(f"{manifest_path} is not a {BUNDLE_FORMAT} manifest")
    parts = manifest.get("parts", [])
    if not {"classifier", "generator"} <= set(parts):
        raise CheckpointError(f"{manifest_path} must list a classifier and a generator, lists {parts}")
    try:
        config = ProjectionConfig.from_dict(manifest["projection"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{manifest_path}: bad projection settings ({exc})") from exc
    models = {name: load_model(path / name, map_location=map_location) for name in parts}
    return DefendedClassifier(
        models["classifier"], models["generator"], config, encoder=models.get("encoder"),
        latent_dim=manifest.get("latent_dim"), gradient=manifest.get("gradient", "detached"),
    ).eval()


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m manifold_defense.export``."""
    from .utils.cli import ToolParser, integer

    parser = ToolParser(
        prog="python -m manifold_defense.export",
        description="Export a domain's shipped defended classifier (or a bundle) as TorchScript and/or a bundle.",
    )
    parser.add_argument("--from-bundle", default=None, help="a bundle directory to export (default: the shipped weights)")
    parser.add_argument("--domain", default="fashion_mnist", help="the registered domain whose shipped weights to export")
    parser.add_argument("--torchscript", default=None, help="TorchScript file to write (default defended_DOMAIN.pt; '' to skip)")
    parser.add_argument("--bundle", default="", help="also write a bundle directory here")
    parser.add_argument("--onnx", default="", help="also write the encoder-only path C(G(E(x))) as ONNX here")
    parser.add_argument("--restarts", type=integer(1), default=None, help="override the projection's restarts")
    parser.add_argument("--steps", type=integer(0), default=None, help="override the projection's steps")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.from_bundle:
        defended = load(args.from_bundle)
    else:
        from .pretrained import defended_pretrained

        defended = defended_pretrained(args.domain)
    if args.torchscript is None:
        args.torchscript = f"defended_{args.domain}.pt"
    changes = {k: v for k, v in (("restarts", args.restarts), ("steps", args.steps)) if v is not None}
    if changes:
        defended.config = defended.config.replace(**changes)
    if args.torchscript:
        print(f"wrote {export(defended, args.torchscript)} (load with torch.jit.load; needs only torch)")
    if args.bundle:
        from .domains.registry import get_domain

        domain = None if args.from_bundle else get_domain(args.domain)
        print(f"wrote {save_bundle(defended, args.bundle, domain=domain)} (load with manifold_defense.load)")
    if args.onnx:
        print(f"wrote {export_onnx(defended, args.onnx)} (encoder-only C(G(E(x))); run with onnxruntime)")


if __name__ == "__main__":
    from .utils.cli import run

    run(main)
