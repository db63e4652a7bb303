"""``--method auto``: run the fitted members, fuse their maps, give one image verdict.

Members run through the registry exactly as on their own (same weights, options, runtime), so
their evidence in ``explain`` is what ``--method NAME`` would show. A member that fails or
cannot read the input counts as blind (its features are those of "not applicable"), which the
fusion saw when fitting (DCT members on PNG files), so the verdict degrades rather than breaks.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from forgectl import registry
from forgectl.backends.base import RUNTIMES, Backend, MethodSpec, Result
from forgectl.backends.options import Option
from forgectl.errors import UsageError, WeightsError
from forgectl.fusion.collect import run_member
from forgectl.fusion.features import (
    MemberOutput,
    context_side,
    image_features,
    member_columns,
    pixel_columns,
)
from forgectl.fusion.model import FusionModel
from forgectl.intake import ForensicImage
from forgectl.weights import read_card, sha256_file, weights_dir

#: Local luma standard deviation (grey levels) above which a region counts as fully textured
#: for the reliability map (below it, noise- and JPEG-based members see little).
TEXTURE_FULL = 6.0
#: Rows converted to float at a time for the reliability map's luma.
LUMA_BAND = 256
#: A member whose evidence raised the image score by at least this is named in the reading.
DRIVER_EFFECT = 0.05


def member_weights_file(fusion: Path, member: str, sha256: str | None) -> Path | None:
    """The weights a learned member runs with inside the fusion at ``fusion``: None for the
    method's own shipped file, or the fusion's copy ``<fusion stem>.<member>.safetensors``.

    The fusion's numbers were fitted on one file of each learned member (``sha256``, from its
    card). When the method's own file has been retrained since (``-m omni`` got better
    weights) while the fusion was not refitted (a refit on them did not beat it), the fusion
    keeps the file it was fitted on beside it, with its card and ONNX twin. Files are matched
    by the sha256 their cards record.

    Raises:
        WeightsError: neither file has that sha256 (a member changed without a refit).
    """
    if not sha256:
        return None

    def recorded(weights: Path) -> str | None:
        # The card's digest, not the file's: a wheel ships the cards and ONNX twins only, and
        # loading checks each file against its card (or SHA256SUMS for a twin).
        return ((read_card(weights) or {}).get("weights") or {}).get("sha256")

    own = weights_dir() / registry.get_spec(member).weights
    if recorded(own) == sha256:
        return None
    kept = fusion.with_name(f"{fusion.stem}.{member}.safetensors")
    if recorded(kept) == sha256:
        return kept
    raise WeightsError(f"{fusion.name} was fitted on {member} weights {sha256[:12]}, which "
                       f"are neither {own.name} nor {kept.name}: refit it (forgectl train "
                       "--method auto)")


class AutoBackend(Backend):
    """A learned fusion of several methods (docs/methods/auto.md)."""

    spec = MethodSpec(
        name="auto",
        summary="Fusion of the best methods: one image verdict, a fused map, a "
                "reliability map",
        kind="fusion",
        uses_jpeg=True,
        weights="auto-tiny.safetensors",
        paper="forgectl's own: a per-pixel logistic map and a boosted-tree verdict over the "
              "members' maps and scores, fitted on synthetic forgeries, thresholds chosen on "
              "half of a real dev set (docs/methods/auto.md)",
    )
    OPTIONS: ClassVar[tuple[Option, ...]] = (
        Option("members", "", "comma-separated members to run (default: every fitted member); "
               "the others count as blind"),
    )

    #: Members resolve the runtime themselves (``auto``: each learned one on its ONNX twin).
    runtimes: ClassVar[tuple[str, ...]] = RUNTIMES

    def __init__(self, weights: str | Path | None = None, threshold: float | None = None,
                 runtime: str = "auto", **options: Any) -> None:
        super().__init__(weights=None, threshold=threshold, runtime=runtime, **options)
        self.weights_path = Path(weights) if weights else weights_dir() / self.spec.weights
        self._model: FusionModel | None = None
        self._backends: dict[str, Backend] = {}
        self._sha: str | None = None
        self.last_outputs: list[MemberOutput] = []

    @property
    def weights_id(self) -> str | None:
        return self.weights_path.name

    @property
    def runtime_label(self) -> str | None:
        """The learned members' runtimes (``onnx``, ``torch`` or both, ``+``-joined)."""
        labels = {self.member(m).runtime_label for m in self.active_members()} - {None}
        return "+".join(sorted(str(x) for x in labels)) or None

    @property
    def weights_sha256(self) -> str | None:
        if self._sha is None:
            self._sha = sha256_file(self.weights_path)
        return self._sha

    def model(self) -> FusionModel:
        """The fusion (loaded once; digest-checked; ``-p members`` checked against it)."""
        if self._model is None:
            model = FusionModel.load(self.weights_path)
            unknown = [m for m in self._chosen() if m not in model.members]
            if unknown:
                raise UsageError(f"auto: {', '.join(unknown)} not among the fitted members "
                                 f"({', '.join(model.members)})")
            self._model = model
        return self._model

    def _chosen(self) -> list[str]:
        return [m.strip() for m in self.options["members"].split(",") if m.strip()]

    def active_members(self) -> list[str]:
        """The members that run (``-p members``, else every fitted one), in fitted order."""
        model = self.model()
        chosen = set(self._chosen()) or set(model.members)
        return [m for m in model.members if m in chosen]

    def member(self, name: str) -> Backend:
        if name not in self._backends:
            kind = registry.get_spec(name).kind
            runtime = self.runtime if kind == "learned" else "auto"
            kept = member_weights_file(self.weights_path, name,
                                       self.model().member_sha256.get(name))
            if runtime == "int8" and (kept is not None
                                      or "int8" not in registry.get_class(name).runtimes):
                runtime = "onnx"  # members without an int8 twin run their float one
            extra: dict[str, Any] = {}
            if kept is not None and runtime != "torch":  # the kept file's ONNX twin, if any
                twin = kept.with_suffix(".onnx")
                runtime, kept = ("onnx", twin) if twin.is_file() else ("torch", kept)
            if kept is not None:
                extra["weights"] = kept
            self._backends[name] = registry.load(name, runtime=runtime, **extra)
        return self._backends[name]

    def analyze(self, image: ForensicImage) -> Result:
        model = self.model()
        active = set(self.active_members())
        shape = (image.height, image.width)
        # Memory: a member's full Result is kept only for explain (its other maps are 108-204
        # MB at 12 MP), and a linear map takes each member's share as soon as it has run, so
        # its heatmap goes too (seven maps are 1.3 GB at 48 MP).
        logit_sum = (np.zeros(shape[0] * shape[1], np.float32)
                     if model.is_linear and not self.keep_parts else None)
        outputs = []
        summing_s = 0.0  # the map's share of each member: fusion time, not the member's
        for index, name in enumerate(model.members):
            if name in active:
                output = run_member(name, self.member(name), image)
                if not self.keep_parts:
                    output.result = None
            else:
                output = MemberOutput.blind(name, shape, note="not selected")
            if logit_sum is not None:
                start = time.perf_counter()
                if output.applicable:  # a blind member's columns are zeros: nothing to add
                    model.add_member_logit(index, member_columns(output, shape), logit_sum)
                output.drop_map()
                summing_s += time.perf_counter() - start
            outputs.append(output)
        self.last_outputs = outputs
        return self.fuse(model, image, outputs, logit_sum, summing_s)

    def fuse(self, model: FusionModel, image: ForensicImage, outputs: list[MemberOutput],
             logit_sum: np.ndarray | None = None, summed_s: float = 0.0) -> Result:
        """The fused Result from the members' outputs (in ``model.members`` order); with
        ``logit_sum``, every member's share of a linear map is already in it (their maps may
        be dropped), which took ``summed_s`` seconds."""
        start = time.perf_counter() - summed_s
        shape = (image.height, image.width)
        verdict = model.verdict(image_features(outputs))
        effects = verdict_effects(model, outputs, verdict)
        if logit_sum is None:
            probability = model.pixel_probability_columns(
                pixel_columns(outputs), shape[0] * shape[1], verdict)
        else:
            probability = model.probability_from_logit_sum(logit_sum, verdict)
        heatmap = model.to_map(probability.reshape(shape))
        score = model.to_score(verdict)
        reliability = reliability_map(image, outputs, model.contributions)
        fuse_s = time.perf_counter() - start
        facts = {
            "verdict": round(score, 6),
            "members": [
                {"method": o.name, "applicable": o.applicable, "score": round(o.score, 6),
                 "seconds": round(o.seconds, 4),
                 "contribution": round(float(model.contributions.get(o.name, 0.0)), 4),
                 "verdict_effect": round(effects.get(o.name, 0.0), 4),
                 **({"note": o.note} if o.note else {})}
                for o in outputs
            ],
            "fusion_seconds": round(fuse_s, 4),
            "reliability_mean": round(float(reliability.mean()), 4),
        }
        blind = [o.name for o in outputs if not o.applicable]
        note = f"blind members: {', '.join(blind)}" if blind else ""
        return Result(heatmap=heatmap, mask=heatmap >= self.threshold, score=score,
                      note=note, maps={"reliability": reliability}, facts=facts)

    def parts(self) -> list[tuple[str, Backend, MemberOutput]]:
        """The members of the last analysis with their outputs, when it ran with
        ``keep_parts`` (``explain`` shows them as evidence without running them twice)."""
        return [(o.name, self.member(o.name), o) for o in self.last_outputs
                if o.result is not None]

    def reading(self, result: Result) -> str:
        f = result.facts
        on = [m["method"] for m in f.get("members", []) if m["applicable"]]
        verdict = "manipulated" if result.score >= 0.5 else "no manipulation found"
        drivers = sorted((m for m in f.get("members", [])
                          if m.get("verdict_effect", 0.0) >= DRIVER_EFFECT),
                         key=lambda m: -m["verdict_effect"])
        driven = ("; raised most by " + ", ".join(
            f"{m['method']} (+{m['verdict_effect']:.2f})" for m in drivers[:3])
            if drivers else "")
        return (f"{verdict}: score {result.score:.2f} (0.5 = decision threshold) from "
                f"{len(on)} members "
                f"({', '.join(on)}){driven}; {100 * result.tampered_fraction:.1f}% of pixels "
                f"flagged; mean reliability {f.get('reliability_mean', 0):.2f}")


def verdict_effects(model: FusionModel, outputs: list[MemberOutput],
                    verdict: float) -> dict[str, float]:
    """Per applicable member, how much the image score falls when that member alone is made
    blind (its features those of "not applicable"): what each member's evidence did to this
    verdict (negative: it spoke for "authentic"). One re-evaluation of the verdict per
    member; no member is re-run."""
    score = model.to_score(verdict)
    effects = {}
    for k, out in enumerate(outputs):
        if not out.applicable:
            continue
        blinded = list(outputs)
        blinded[k] = MemberOutput.blind(out.name, (1, 1))  # its features ignore the map
        effects[out.name] = score - model.to_score(model.verdict(image_features(blinded)))
    return effects


def reliability_map(image: ForensicImage, outputs: list[MemberOutput],
                    contributions: dict[str, float]) -> np.ndarray:
    """(H, W) float32 in [0, 1]: how much of the fusion's evidence can see each pixel.

    Every member reads texture (noise, JPEG coefficients, edges): in flat or clipped regions
    none of them sees a paste. So a pixel's reliability is the share of the members' fitted
    contribution coming from applicable members, times how textured and unclipped its
    neighbourhood is.
    """
    # A band of rows at a time: a float copy of the whole image is 144 MB at 12 MP.
    rgb = image.rgb
    weights = np.array([0.299, 0.587, 0.114], np.float32)
    luma = np.empty(rgb.shape[:2], np.float32)
    for top in range(0, rgb.shape[0], LUMA_BAND):
        luma[top:top + LUMA_BAND] = rgb[top:top + LUMA_BAND].astype(np.float32) @ weights
    side = context_side((image.height, image.width))
    mean = cv2.blur(luma, (side, side), borderType=cv2.BORDER_REFLECT)
    sq = cv2.blur(luma * luma, (side, side), borderType=cv2.BORDER_REFLECT)
    texture = np.clip(np.sqrt(np.maximum(sq - mean * mean, 0.0)) / TEXTURE_FULL, 0.0, 1.0)
    clipped = ((rgb.min(axis=2) <= 1) | (rgb.max(axis=2) >= 254)).astype(np.float32)
    clipped = cv2.blur(clipped, (side, side), borderType=cv2.BORDER_REFLECT)
    total = sum(max(0.0, contributions.get(o.name, 0.0)) for o in outputs) or 1.0
    seeing = sum(max(0.0, contributions.get(o.name, 0.0)) for o in outputs if o.applicable)
    return np.clip((seeing / total) * texture * (1.0 - clipped), 0.0, 1.0).astype(np.float32)
