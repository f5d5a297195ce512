"""`domainvlm ask`: one question about one image (a file, or a raw wafer map from an npz by index)."""

from __future__ import annotations

from ._args import nonneg_float, nonneg_int, positive_int

NAME = "ask"
HELP = "ask a question about an image: domainvlm ask --image map.png \"What defect is this?\""


def add_arguments(p):
    p.add_argument("question")
    p.add_argument("--image", required=True, help="image file, DICOM, wafer npz (with --index, or file.npz#N), or "
                                                  "a wafer-map file: SEMI G85 / E142, STDF, KLARF (FILE#K = wafer K)")
    p.add_argument("--index", type=nonneg_int, help="map index when --image is an npz of wafer maps or a "
                                                    "multi-wafer map file")
    p.add_argument("--model", help="model folder (default: the bundled wafer expert)")
    p.add_argument("--max-new-tokens", type=positive_int, default=256)
    p.add_argument("--temperature", type=nonneg_float, default=0.0)
    p.add_argument("--device")
    p.add_argument("--threads", type=positive_int)


def run(args):
    from ..data.images import load_image
    from ..data.record import IMAGE_TOKEN
    from ..inference.engine import Engine, Sampling

    ref = args.image if args.index is None else f"{args.image}#{args.index}"
    image = load_image(ref)
    eng = Engine(args.model, device=args.device, threads=args.threads)
    msgs = [{"role": "user", "content": f"{IMAGE_TOKEN}\n{args.question}"}]
    ans = eng.generate([(msgs, [image])], Sampling(max_new_tokens=args.max_new_tokens,
                                                   temperature=args.temperature))[0]
    print(ans)
    return 0
