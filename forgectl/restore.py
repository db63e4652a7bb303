"""``forgectl restore IMG --out DIR``: undo a brightness/contrast disturbance into files; and
the ``--restore auto|on|off`` pre-stage of ``localize``, ``explain`` and ``benchmark``
(:class:`RestoreStage`, :class:`RestoringBackend`, docs/RESTORE.md).

:func:`write_restoration` writes the restored pixels as a lossless PNG and a JSON record, and
never touches the input file. The restorers: :class:`forgectl.backends.restorer.Restorer`
(learned) and :func:`forgectl.analysis.restoration.classical_restore` (the blind baseline).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from forgectl.analysis.restoration import classical_restore
from forgectl.backends.base import Backend, Result
from forgectl.errors import InputError
from forgectl.intake import ForensicImage

if TYPE_CHECKING:
    from forgectl.backends.restorer import Restorer

RESTORE_SCHEMA = "forgectl.restore/1"


RESTORE_SUFFIXES = (".restored.png", ".restore.json")


def write_restoration(
    image_path: str | Path,
    out_dir: str | Path,
    restorer: Restorer | None = None,
    *,
    out_stem: str | Path | None = None,
    max_pixels: int | None = None,
) -> dict[str, Any]:
    """``forgectl restore IMG --out DIR``: ``<stem>.restored.png`` + ``<stem>.restore.json``.

    Args:
        image_path: the input (read only; never written). out_dir: created if missing.
        restorer: the learned module; None runs the classical baseline.
        out_stem: output path without suffix (default ``out_dir / <input stem>``; a batch
            passes :func:`forgectl.pipeline.plan_outputs` stems so equal names do not collide).
        max_pixels: refuse larger images (:func:`forgectl.intake.load_image`).

    Returns:
        The JSON record (also written).

    Raises:
        InputError: unreadable input, or an output path that would overwrite the input.
    """
    from forgectl.intake import load_image
    from forgectl.outputs import png_bytes, write_bytes, write_json

    src = Path(image_path)
    image = load_image(src, max_pixels)
    stem = Path(out_stem) if out_stem is not None else Path(out_dir) / src.stem
    png_path, json_path = (stem.with_name(stem.name + s) for s in RESTORE_SUFFIXES)
    for p in (png_path, json_path):
        if p.exists() and p.resolve() == src.resolve():
            raise InputError(f"refusing to overwrite the input {src}")
    if restorer is None:
        restored, facts = classical_restore(image.rgb)
    else:
        restored, facts = restorer.restore(image.rgb)
    write_bytes(png_path, png_bytes(np.ascontiguousarray(restored), compress_level=1))
    record = {
        "schema": RESTORE_SCHEMA,
        "input": {
            "path": str(src),
            "sha256": image.sha256,
            "width": image.width,
            "height": image.height,
            "format": image.format,
        },
        "output": str(png_path),
        "restoration": facts,
    }
    write_json(json_path, record)
    return record


# --------------------------------------------------------------------------- the --restore stage
#
# ``localize``, ``explain`` and ``benchmark --restore auto|on|off`` (docs/RESTORE.md): the
# learned restoration module decides from the pixels whether a global brightness / contrast
# disturbance is present; when it is, a method that reads pixels runs on the restored pixels,
# while a method whose evidence is the file's JPEG data runs on the file as it is.

#: ``--restore`` values: decide from the pixels, force an attempt, or never touch the pixels.
RESTORE_MODES = ("auto", "on", "off")
#: The default of ``localize``, ``explain`` and ``benchmark`` (docs/RESTORE.md says why).
DEFAULT_RESTORE_MODE = "off"

#: What a method receives when the stage restores (``method_input`` in the record).
RESTORED, ORIGINAL, OWN = "restored", "original", "own"
#: Per-method policy (docs/RESTORE.md); a method not listed gets ``restored``, or ``original``
#: when it needs a JPEG file. Restored pixels never carry the file's JPEG data: they are not
#: what the encoder quantized, so DCT evidence read from them would be made up.
METHOD_POLICY: dict[str, tuple[str, str]] = {
    "dq": (ORIGINAL, "dq reads the file's quantized DCT coefficients, which restoring pixels "
           "cannot give back"),
    "ghost": (ORIGINAL, "ghost measures how the pixels sit on the file's JPEG quantization "
              "lattice; restored pixels are rescaled off it and filled ones never were on it"),
    "grid": (ORIGINAL, "grid reads the 8x8 block artifacts of the stored pixels; restoring "
             "rescales them and filled regions have none"),
    "reconwave": (OWN, "reconwave runs the same restoration module itself before localizing "
                  "(its facts.restoration)"),
}
_DEFAULT_REASONS = {
    RESTORED: "{name} reads pixels: it runs on the restored pixels, as an image without JPEG "
              "data (a JPEG stream of the method, if any, is off)",
    ORIGINAL: "{name} needs the file's JPEG data, which restored pixels do not have",
}


def method_policy(spec: Any) -> tuple[str, str]:
    """``(restored | original | own, why)`` for a method's :class:`MethodSpec`."""
    if spec.name in METHOD_POLICY:
        return METHOD_POLICY[spec.name]
    kind = ORIGINAL if spec.needs_jpeg else RESTORED
    return kind, _DEFAULT_REASONS[kind].format(name=spec.name)


def check_restore_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`RESTORE_MODES`.

    Raises:
        UsageError: anything else.
    """
    from forgectl.errors import UsageError

    if mode not in RESTORE_MODES:
        raise UsageError(f"--restore must be one of {', '.join(RESTORE_MODES)}, got {mode!r}")
    return mode


def restored_image(image: ForensicImage, rgb: np.ndarray) -> ForensicImage:
    """``image`` with restored pixels of the same grid and no JPEG data (format ``RAW``, an
    image from an array): methods see a lossless image, never the file's DCT data paired with
    pixels the encoder did not produce. No JPEG history is read from them either (marked as
    checked): a lattice that survived a restoration would be a coincidence of the gain."""
    if rgb.shape != image.rgb.shape:
        raise ValueError(f"restored pixels {rgb.shape} differ from the input {image.rgb.shape}")
    return dataclasses.replace(image, rgb=np.ascontiguousarray(rgb), jpeg=None, format="RAW",
                               pixel_history=None, pixel_history_checked=True,
                               jpeg_grid_view=None)


class RestoreStage:
    """The decision and the restoration, shared by every method of a run.

    Args:
        mode: ``auto`` (restore when the restoration module is confident and the pixel checks
            agree), ``on`` (also try the classifier's likeliest disturbance when it says
            ``none`` or is unsure; the pixel checks may still veto) or ``off``.
        weights: restoration weights (default: the shipped ``reconwave-restore-tiny-ft``).
        min_confidence: the classifier confidence ``auto`` needs (as ``forgectl restore``).
        runtime: where the module's networks run: ``auto`` (their ONNX twins when shipped
            beside the weights, no torch; else PyTorch), ``onnx`` or ``torch``.

    Raises:
        UsageError: an unknown mode or runtime. WeightsError: the weights file is missing
            (mode not off).
    """

    def __init__(self, mode: str = "auto", weights: str | Path | None = None,
                 min_confidence: float = 0.5, runtime: str = "auto") -> None:
        from forgectl.backends.restorer import (
            DEFAULT_RESTORE_WEIGHTS,
            resolve_runtime,
            weights_digest,
        )
        from forgectl.errors import WeightsError
        from forgectl.weights import weights_dir

        self.mode = check_restore_mode(mode)
        self.weights = Path(weights) if weights else weights_dir() / DEFAULT_RESTORE_WEIGHTS
        self.min_confidence = float(min_confidence)
        # Resolved here, in the parent process, so every worker runs the same engine.
        self.runtime = resolve_runtime(runtime, self.weights)
        self.weights_sha256: str | None = None
        if self.mode != "off":
            try:  # on onnx the torch-free install has the twins and the card, no .safetensors
                self.weights_sha256 = weights_digest(self.weights, self.runtime)
            except WeightsError as exc:
                raise WeightsError(f"{exc} (--restore off runs without them)") from None
        self._restorer: Restorer | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Sent to worker processes before any image: the network loads there, lazily.
        return {**self.__dict__, "_restorer": None}

    def settings(self) -> dict[str, Any] | None:
        """What ``--resume`` must match (None when off: such records have no restoration)."""
        if self.mode == "off":
            return None
        return {"mode": self.mode, "weights_sha256": self.weights_sha256,
                "min_confidence": self.min_confidence, "runtime": self.runtime}

    def restorer(self) -> Restorer:
        if self._restorer is None:
            from forgectl.backends.restorer import Restorer

            self._restorer = Restorer(self.weights, min_confidence=self.min_confidence,
                                      runtime=self.runtime)
        return self._restorer

    def decide(self, rgb: np.ndarray) -> dict[str, Any]:
        """The restoration module's decision facts for (H, W, 3) uint8 pixels (no restoring)."""
        return self.restorer().decide(rgb, force=self.mode == "on")

    def restore(self, rgb: np.ndarray, decision: dict[str, Any]) -> np.ndarray:
        """Pixels restored as ``decision`` says (same grid; a copy when it did not fire)."""
        return self.restorer().apply(rgb, decision)

    def wrap(self, backend: Backend) -> Backend:
        """``backend`` behind this stage; ``backend`` itself when the mode is off, so an off
        run is the same code as a run without the stage."""
        if self.mode == "off":
            return backend
        return RestoringBackend(backend, self)


def decision_block(stage: RestoreStage, decision: dict[str, Any] | None) -> dict[str, Any]:
    """The image-level part of a ``restoration`` block: what was decided (docs/RESTORE.md)."""
    fired = bool(decision and decision.get("restored"))
    kind = decision.get("type", "none") if fired and decision else "none"
    parameter = None
    if fired and decision:
        parameter = ({"alpha": decision.get("alpha")} if kind == "brightness"
                     else {"beta": decision.get("beta")})
    return {
        "mode": stage.mode,
        "fired": fired,
        "kind": kind,
        "parameter": parameter,
        "clipped_fraction": decision.get("clipped_fraction") if fired and decision else None,
        "decision": decision,
    }


def stage_record(stage: RestoreStage, spec: Any, decision: dict[str, Any] | None,
                 saw_restored: bool) -> dict[str, Any]:
    """The ``restoration`` block of one method's record: the decision, the method's policy and
    whether it ran on restored pixels (docs/RESTORE.md)."""
    policy, why = method_policy(spec)
    block = decision_block(stage, decision)
    decided = block.pop("decision")
    block.update(method_input=policy, method_saw_restored=saw_restored, policy=why,
                 decision=decided)
    return block


def describe_decision(decision: dict[str, Any]) -> str:
    """``brightness alpha -0.50`` / ``contrast beta 2.00``."""
    if decision.get("type") == "brightness":
        return f"brightness alpha {decision['alpha']:+.2f}"
    return f"contrast beta {decision['beta']:.2f}"


def stage_note(decision: dict[str, Any], why: str, saw_restored: bool) -> str:
    """The sentence a fired decision adds to a method's note / facts."""
    what = describe_decision(decision)
    if saw_restored:
        return f"ran on restored pixels (a {what} disturbance was undone)"
    return f"a {what} disturbance was seen, but {why}: the method ran on the file as it is"


def run_with_stage(stage: RestoreStage, backend: Backend, image: ForensicImage,
                   decision: dict[str, Any] | None = None) -> tuple[Result, dict[str, Any]]:
    """Run ``backend`` behind the stage: ``(result on the input's grid, restoration block)``.

    ``decision``: one already made for this image (``explain`` decides once for all methods);
    None decides here. When the stage does not fire, or the method's policy is not
    ``restored``, the method runs on ``image`` itself and its result is returned untouched.
    """
    policy, why = method_policy(backend.spec)
    if policy == OWN:  # the method's own restoration decided: report that decision
        result = backend.localize(image)
        own = result.facts.get("restoration")
        own = own if isinstance(own, dict) else None
        return result, stage_record(stage, backend.spec, own, bool(own and own.get("restored")))
    if decision is None:
        decision = stage.decide(image.rgb)
    if not decision.get("restored") or policy != RESTORED:
        result = backend.localize(image)
        if decision.get("restored"):
            result.facts["restoration_stage"] = stage_note(decision, why, False)
        return result, stage_record(stage, backend.spec, decision, False)
    restored = restored_image(image, stage.restore(image.rgb, decision))
    result = backend.localize(restored)
    # Restoration is per pixel: the restored grid is the input's, so the maps already lie on
    # it; checked rather than assumed.
    if result.heatmap.shape != (image.height, image.width):
        raise RuntimeError(f"{backend.spec.name} returned a {result.heatmap.shape} heatmap for "
                           f"a {(image.height, image.width)} image")
    undone = stage_note(decision, why, True)
    result.note = f"{undone}; {result.note}" if result.note else undone
    result.facts["restoration_stage"] = undone
    return result, stage_record(stage, backend.spec, decision, True)


class RestoringBackend(Backend):
    """A method behind the :class:`RestoreStage`: the same spec, options, threshold and
    weights as the method (so records, ``--resume`` and reports name the method), with
    :meth:`localize` going through :func:`run_with_stage`.

    ``restore_stage_record`` holds the last image's ``restoration`` block, which
    :func:`forgectl.pipeline.build_record` and the benchmark runner copy into their records
    (they duck-type it: this module is beside theirs, not below).
    """

    def __init__(self, backend: Backend, stage: RestoreStage) -> None:  # no Backend.__init__:
        self.inner = backend  # options were resolved by the method itself
        self.restore_stage = stage
        self.restore_stage_record: dict[str, Any] | None = None

    def __getattr__(self, name: str) -> Any:
        # Anything else a method exposes (auto's parts(), a learned method's model()...).
        # Dunders and the unpickling window (no ``inner`` yet) must fail normally.
        inner = self.__dict__.get("inner")
        if inner is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(inner, name)

    @property  # type: ignore[override]
    def spec(self) -> Any:
        return self.inner.spec

    @property  # type: ignore[override]
    def threshold(self) -> float:
        return self.inner.threshold

    @property
    def runtime(self) -> str:
        return self.inner.runtime

    @property
    def runtime_label(self) -> str | None:
        return self.inner.runtime_label

    @property
    def options(self) -> dict[str, Any]:
        return self.inner.options

    @property  # type: ignore[override]
    def weights_path(self) -> Path | None:
        return self.inner.weights_path

    @property
    def weights_id(self) -> str | None:
        return self.inner.weights_id

    @property
    def weights_sha256(self) -> str | None:
        return self.inner.weights_sha256

    def restore_settings(self) -> dict[str, Any] | None:
        return self.restore_stage.settings()

    def localize(self, image: ForensicImage) -> Result:
        self.restore_stage_record = None
        result, record = run_with_stage(self.restore_stage, self.inner, image)
        self.restore_stage_record = record
        return result

    def analyze(self, image: ForensicImage) -> Result:
        return self.localize(image)

    def reading(self, result: Result) -> str:
        return self.inner.reading(result)

    def export_graph(self) -> Any:
        return self.inner.export_graph()
