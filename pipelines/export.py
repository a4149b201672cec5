"""Export a trained model to ONNX: `python -m pipelines.export --checkpoint CKPT --out model.onnx [--opset 18]
[--with-postprocess]`.

Writes `model.onnx` (input `images` float32 [B,3,S,S] already resized and normalised; outputs `loc`
[B,P,4] and `conf` [B,P,C] logits; dynamic batch), `model.priors.npy` and `model.meta.json` beside
it; decoding and NMS are then `ssd_ray.postprocess.detect` (see `ssd_ray/export.py`).
With --with-postprocess the graph decodes and runs NMS itself (onnxruntime alone gives detections):
outputs `boxes` [B,K,4] in pixels of the S x S input, `scores` [B,K], `labels` [B,K] and
`num_detections` [B]; the README shows the numpy pre-processing and the mapping back to the image.
"""

from __future__ import annotations

import argparse
import logging

from ssd_ray.cli import exits_on_user_error, setup_logging


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="model file (outputs/model.pt) or training checkpoint")
    p.add_argument("--out", required=True, help="ONNX file to write, e.g. model.onnx")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    p.add_argument("--with-postprocess", action="store_true",
                   help="include decoding and NMS: outputs boxes (pixels of the SxS input), scores, labels, num_detections")
    return p.parse_args(argv)


@exits_on_user_error
def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logging()
    for noisy in ("onnxscript", "onnx_ir"):  # the exporter's graph passes log every step at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from ssd_ray.export import export_onnx

    for kind, path in export_onnx(args.checkpoint, args.out, args.opset, with_postprocess=args.with_postprocess).items():
        print(f"{kind}: {path}")


if __name__ == "__main__":
    main()
