"""Import trained SSD weights from ssd.pytorch or torchvision as an ssd-ray model file.

    python -m pipelines.convert --from ssd.pytorch --weights ssd300_mAP_77.43_v2.pth \\
        --config configs/voc300.yaml --out weights/ssd300_voc_ref.pt
    python -m pipelines.convert --from torchvision --weights ssd300_vgg16_coco-b556d3b4.pth \\
        --config configs/coco300.yaml --out weights/ssd300_coco_tv.pt

The model file carries the source's input normalisation and post-processing, and loads wherever an
ssd-ray model file does (`pipelines.evaluate`, `pipelines.predict`, `pipelines.export`,
`pipelines.train --init-from`). A file that does not fit the source layout or the config exits with
status 2 and a message naming the missing/unexpected keys or the shape that disagrees; an existing
--out is never overwritten. See ssd_ray/convert.py for the key mapping.
"""

from __future__ import annotations

import argparse

from ssd_ray.cli import add_config_args, exits_on_user_error, load_config_or_exit, setup_logging


def parse_args(argv=None) -> argparse.Namespace:
    from ssd_ray.convert import SOURCES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="source", required=True, choices=SOURCES, help="where the weights come from")
    p.add_argument("--weights", required=True, help="the source's state dict file (.pth)")
    add_config_args(p)
    p.add_argument("--out", required=True, help="ssd-ray model file to write (must not exist)")
    return p.parse_args(argv)


@exits_on_user_error
def main(argv=None) -> None:
    args = parse_args(argv)
    setup_logging()
    cfg = load_config_or_exit(args.config, args.overrides)

    from ssd_ray.convert import convert_file

    state = convert_file(args.source, args.weights, cfg, args.out)
    c = state["config"]
    print(f"wrote {args.out}: {args.source} SSD{c['model']['min_dim']}, {len(state['class_names'])} classes, "
          f"normalization {state['normalization']['name']}, post-processing preset {c['postprocess']['preset']}")


if __name__ == "__main__":
    main()
