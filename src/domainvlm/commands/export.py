"""`domainvlm export`: merge a LoRA/QLoRA adapter into its base -> standalone Hugging Face model folder, with the
adapter folder's data files (taxonomy.json, calibration.json, a domain's input check) copied beside it."""

from __future__ import annotations

NAME = "export"
HELP = "merge a LoRA adapter into its local base and write a standalone model folder (safetensors)"


def add_arguments(p):
    p.add_argument("adapter", help="adapter folder (e.g. runs/x/model from a mode=lora run)")
    p.add_argument("--out", required=True, help="output folder for the merged model")
    p.add_argument("--base", help="base model folder (default: base_model_name_or_path in adapter_config.json)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="weights dtype written (default: the base's)")
    p.add_argument("--check", action="store_true",
                   help="verify that the merged model's greedy tokens match the unmerged adapter's on a probe")
    p.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--trust-remote-code", action="store_true")


def _check_out(args) -> None:
    """--out may not be (or hold) the adapter or the base: with --force the merged folder is swapped in over
    it, deleting the input (``--out .`` would replace the working folder)."""
    from pathlib import Path

    from ..errors import UserError
    from ..models.adapter import resolve_base

    out = Path(args.out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {args.out}: exists and is not a folder")
    adapter = Path(args.adapter).expanduser()
    if not adapter.is_dir():
        return  # export_merged names it
    for what, folder in (("adapter", adapter), ("base", resolve_base(adapter, args.base))):
        inside = folder.resolve()
        if out == inside or out in inside.parents:
            raise UserError(f"--out {args.out}: {'is' if out == inside else 'holds'} the {what} folder {folder}; "
                            "write the merged model elsewhere (replacing it would delete the input)")


def model_data_files() -> list[str]:
    """Files beside the weights that shape a model's answers: its taxonomy, its calibration and what a domain
    adds (``Domain.extra["model_files"]``, e.g. classify's input check)."""
    from .. import domains
    from ..inference.confidence import FILE as CALIBRATION
    from ..taxonomy import FILE_NAME as TAXONOMY

    extra = [f for d in domains.all_domains() for f in d.extra.get("model_files", ())]
    return list(dict.fromkeys([TAXONOMY, CALIBRATION, *extra]))


def copy_model_data(src, out) -> list[str]:
    """Copy :func:`model_data_files` present in ``src`` into ``out`` (each atomically): the merged folder then
    reads its answers in the same classes, with the same confidence and input check, as the adapter."""
    import shutil
    from pathlib import Path

    from ..io import atomic_path

    src, out = Path(src), Path(out)
    copied = []
    for name in model_data_files():
        if (src / name).is_file():
            with atomic_path(out / name, suffix=Path(name).suffix) as tmp:
                shutil.copyfile(src / name, tmp)
            copied.append(name)
    return copied


def run(args):
    import json

    from ..models.export import export_merged

    _check_out(args)
    res = export_merged(args.adapter, args.out, base=args.base, dtype=args.dtype, check=args.check,
                        force=args.force, trust_remote_code=args.trust_remote_code)
    res["copied"] = copy_model_data(args.adapter, res["out"])
    print(json.dumps(res))
    print(f"load it with: domainvlm ask --model {res['out']} ...  (or transformers from_pretrained; "
          f"4/8-bit: load_model(path, quantization='4bit'))")
    return 0
