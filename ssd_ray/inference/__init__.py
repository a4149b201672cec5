"""Batch prediction over any number of images: one process, or streamed through Ray Data.

    listing = list_images("photos/", recursive=True)                # sources.py
    sink = make_sink("jsonl", "preds/")                              # sinks.py
    summary = predict_images("model.pt", listing, sink, num_workers=4, device="cuda")   # run.py

`run.predict_images` either runs `ssd_ray.predict.Predictor` in this process, or streams the images
through Ray Data: read + decode + resize in CPU tasks (`read.py`), the model on an actor pool
(`ssd_ray.evaluate.distributed.detect_stage`, the actor path distributed evaluation uses), drawing
in CPU tasks (`draw.py`), and results written on the driver as they arrive (`sinks.py`) with
progress, rate and ETA (`progress.py`). Unreadable images go to a skipped-files report, already
written images are skipped on a re-run (resume). Nothing here is imported by `ssd_ray.train`.

Submodules are imported where used: the read tasks import `read.py` without torch.
"""
