#!/usr/bin/env python3
"""Pack the two wafer npz files small enough to carry to the GPU machine (the device tool's 64 MiB limit).

  python3 scripts/pack-data.py pack ../shared/data .carry/full     # here: writes mixedwm38.xz, wm811k.xz
  python3 scripts/pack-data.py unpack .carry/full /tmp/data        # on the device: DATA=/tmp/data layout
  python3 scripts/pack-data.py pack ../shared/data .carry/smoke 4096   # the first 4,096 maps of each split
      only (~3 MB: the GPU smoke with EVAL_LIMIT=4096 reads no others), room for other wheels in one carry

The npz deflate is ~16 MB for both; an lzma (preset 9 | extreme) of the same arrays is ~11 MB. Only plain
arrays are stored (allow_pickle stays off on load)."""
import io, lzma, sys
from pathlib import Path
import numpy as np

SETS = {"mixedwm38": "mixedwm38/mixedwm38_trainval.npz", "wm811k": "wm811k/wm811k_trainval.npz"}


def first_per_split(a: dict, n: int) -> dict:
    """The first n rows of each split, in file order (what limit_maps / --limit read)."""
    rows = np.concatenate([np.flatnonzero(a["split"] == s)[:n] for s in np.unique(a["split"])])
    rows.sort()
    if "maps_flat" not in a:  # MixedWM38: row arrays, label_names kept
        return {k: (v if k == "label_names" else v[rows]) for k, v in a.items()}
    off, shapes = a["offsets"], a["shapes"][rows]  # WM-811K: flat maps re-cut
    flat = np.concatenate([a["maps_flat"][off[i]:off[i + 1]] for i in rows])
    sizes = shapes[:, 0].astype(np.int64) * shapes[:, 1]
    return {"maps_flat": flat, "shapes": shapes, "offsets": np.concatenate([[0], np.cumsum(sizes)]),
            "failure_type": a["failure_type"][rows], "split": a["split"][rows]}


def pack(src: Path, dst: Path, first: int = 0) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name, rel in SETS.items():
        with np.load(src / rel, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if first:
            arrays = first_per_split(arrays, first)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        data = lzma.compress(buf.getvalue(), preset=9 | lzma.PRESET_EXTREME)
        (dst / f"{name}.xz").write_bytes(data)
        print(f"{name}: {len(data) / 1e6:.1f} MB")


def unpack(src: Path, dst: Path) -> None:
    for name, rel in SETS.items():
        out = dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(lzma.decompress((src / f"{name}.xz").read_bytes()))
        print(f"{out}: {out.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5) or sys.argv[1] not in ("pack", "unpack"):
        raise SystemExit(__doc__)
    if sys.argv[1] == "pack":
        pack(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) == 5 else 0)
    else:
        unpack(Path(sys.argv[2]), Path(sys.argv[3]))
