"""The ``dios`` command line.

``dios acquire``
    One exposure end to end (simulators unless configured): pick a view and its
    technique from the catalog, set the generator, prepare, wait for all ready, expose,
    read the frame, run the pipeline, write a DICOM DX For Presentation file and a PNG
    preview into the data directory, print a summary with per-stage timings.
``dios process RAW --profile chest``
    Run the image pipeline on a raw frame (``.npy`` or DICOM) and write DICOM + PNG.
``dios serve``
    Start the bus, the services and the HTTP and MessagePack-RPC listeners.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dios.codes import STORAGE_ERROR, DiosError
from dios.config import ConfigError, load_config

if TYPE_CHECKING:
    pass

DEFAULT_VIEW = "View_DX_T_A_CH_PA_00"  # chest PA


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be an integer >= 1")
    return int(text)


class ProgressPrinter:
    """Prints progress lines with the elapsed time, on stderr."""

    def __init__(self, quiet: bool = False) -> None:
        self.t0 = time.perf_counter()
        self.quiet = quiet

    def __call__(self, step: str, detail: str = "") -> None:
        if not self.quiet:
            dt = time.perf_counter() - self.t0
            print(f"[{dt:7.2f} s] {step:<12} {detail}", file=sys.stderr, flush=True)


DEMO_PATIENT = {
    "accession_number": "", "patient_id": "DEMO0001", "patient_name": "Demo^Patient",
    "patient_size": "Medium", "patient_age": "045Y", "patient_dob": "1980-01-01T00:00:00Z",
    "patient_sex": "O", "patient_type": "Human", "modality": "DX", "study_type": "Normal",
}


def cmd_acquire(args: argparse.Namespace) -> int:
    """Register a demo study in the embedded store, expose its view, store the image."""
    from dios.acquisition.calibration import calibrate_if_needed
    from dios.acquisition.sink import summary
    from dios.engine import build_engine
    from dios.messages import EventKind
    from dios.serve import build_services

    say = ProgressPrinter(args.quiet)
    cfg = load_config(args.config, data_dir=Path(args.data_dir) if args.data_dir else None)
    if args.clock_scale is not None:
        cfg.devices.clock_scale = args.clock_scale
    if args.panel:
        cfg.devices.panel = args.panel
    cfg.ensure_dirs()
    say("engine", f"devices: generator={cfg.devices.generator} detector={cfg.devices.detector} "
                  f"panel={cfg.devices.panel}; store {cfg.database_url}")
    engine = build_engine(cfg)
    with engine:
        # no start-up recovery here: a server may be running on the same data directory
        services = build_services(cfg, engine, recover=False)
        try:
            view = services.catalog.view_processing(args.view)
            calibrate_if_needed(engine, args.cal_frames, say=say, client="dios-cli")
            engine.set_scene(phantom=view.get("img_proc_id") or "default")
            patient = dict(DEMO_PATIENT, patient_size=args.size,
                           accession_number=f"DEMO{int(time.time())}")
            study = services.study.register({**patient, "views": [
                {"view_id": args.view, "procedure_id": ""}]}, source="dios-cli")
            sop = study["series"][0]["images"][0]["sop_instance_id"]
            say("study", f"{study['study_id']}: {args.view} ({view.get('body_part', '')} "
                         f"{view.get('view_position', '')}), profile {view.get('img_proc_id')}")
            sub = engine.hub.subscribe("DIOS/TASK/Exposure", kinds=[EventKind.PROGRESS],
                                       handler=lambda ev: say(ev.name, f"{ev.value} %"))
            try:
                override: dict[str, Any] = {}
                if args.kv:
                    override["kv"] = args.kv
                if args.mas:
                    override.update(mas=args.mas, mode=1)
                image = services.task.expose(sop, client="dios-cli", override=override or None)
            finally:
                sub.close(drain=2.0)  # print the last progress lines before the summary
            outcome = services.task.last_outcome
            dicom_path = services.task.image_path(sop)
        finally:
            services.task.close()
    assert outcome is not None
    info = summary(outcome)
    info["dicom"] = str(dicom_path)
    info["study"] = {"study_id": study["study_id"], "sop_instance_uid": sop,
                     "expose_status": image.get("expose_status"),
                     "storage_status": image.get("storage_status")}
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    _print_summary(info)
    return 0


def _print_summary(info: dict[str, Any]) -> None:
    d, t = info["delivered"], info["technique"]
    print("\nExposure summary")
    print(f"  technique set : {t['kv']:g} kV  {t['ma']:g} mA  {t['ms']:g} ms  {t['mas']:g} mAs  "
          f"focus {'large' if t['focus'] else 'small'}")
    print(f"  delivered     : {d['kv']:.1f} kV  {d['ma']:.1f} mA  {d['ms']:.1f} ms  "
          f"{d['mas']:.2f} mAs  DAP {d['dap_dgycm2']:.3f} dGy*cm2  heat {d['heat_hu']:.0f} HU")
    f = info["frame"]
    print(f"  frame         : {f['shape'][0]} x {f['shape'][1]} ({f['mode']})")
    col = info["collimation"] or {}
    print(f"  collimation   : {col.get('kind')} (confidence {col.get('confidence', 0):.2f})")
    w = info["window"]
    di = info["di"]
    print(f"  window        : WC {w['center']:.0f}  WW {w['width']:.0f}")
    print(f"  exposure index: EI {info['ei']:.0f}" + (f"  DI {di:+.2f}" if di is not None else ""))
    st = info["study"]
    print(f"  study         : {st['study_id']} image {st['sop_instance_uid']} "
          f"({st['expose_status']}, {st['storage_status']})")
    print(f"  DICOM         : {info['dicom']}")
    print(f"  preview       : {info['preview']}")
    print("  timings (ms)  :")
    for k, v in info["timings_ms"].items():
        print(f"    {k:<24} {v:9.2f}")


def cmd_process(args: argparse.Namespace) -> int:
    from dios.acquisition.offline import process_file

    say = ProgressPrinter(False)
    result = process_file(Path(args.input), profile=args.profile, out_dir=Path(args.out),
                          calibration=Path(args.calibration) if args.calibration else None,
                          counts_per_ugy=args.counts_per_ugy, progress=say,
                          pixel_pitch_mm=args.pixel_pitch)
    for key, value in result.items():
        print(f"{key}: {value}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from dios.serve import main as serve_main

    return serve_main(["--config", args.config] if args.config else [])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dios", description="DIOS digital radiography engine")
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("acquire", help="one exposure end to end (simulators by default)")
    a.add_argument("--config", help="TOML configuration file")
    a.add_argument("--data-dir", help="data directory (default ./dios-data)")
    a.add_argument("--view", default=DEFAULT_VIEW, help=f"catalog view id (default {DEFAULT_VIEW})")
    a.add_argument("--size", default="Medium", choices=["Large", "Medium", "Small", "Paediatric"])
    a.add_argument("--panel", help="detector mode, e.g. CSI_4343, CSI_3543, FLUORO_1024")
    a.add_argument("--kv", type=positive_float, help="override the view's kV")
    a.add_argument("--mas", type=positive_float, help="override the view's mAs (mAs mode)")
    a.add_argument("--clock-scale", type=positive_float,
                   help="simulated time speed-up (default 1 = real time)")
    a.add_argument("--cal-frames", type=positive_int, default=8, help="frames per calibration step")
    a.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    a.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    a.set_defaults(func=cmd_acquire)

    pr = sub.add_parser("process", help="run the image pipeline on a raw frame")
    pr.add_argument("input", help="raw frame: .npy (2-D uint16) or a DICOM file")
    pr.add_argument("--profile", default="default", help="processing profile (chest, skull, ...)")
    pr.add_argument("--out", default=".", help="output directory")
    pr.add_argument("--calibration", help="calibration maps (.npz) to correct the raw frame")
    pr.add_argument("--counts-per-ugy", type=positive_float, default=100.0,
                    help="detector calibration factor for the exposure index")
    pr.add_argument("--pixel-pitch", type=positive_float,
                    help="detector pixel pitch in mm (default: from the input DICOM, else 0.15)")
    pr.set_defaults(func=cmd_process)

    s = sub.add_parser("serve", help="start the services and RPC listeners")
    s.add_argument("--config", help="TOML configuration file")
    s.set_defaults(func=cmd_serve)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"dios: configuration error: {exc}", file=sys.stderr)
        return 2
    except DiosError as exc:
        print(f"dios: {exc.code.hex} {exc.description()}\n  solution: {exc.solution()}",
              file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"dios: {STORAGE_ERROR.hex} {STORAGE_ERROR.description}: {exc}\n"
              f"  solution: {STORAGE_ERROR.solution}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dios: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
