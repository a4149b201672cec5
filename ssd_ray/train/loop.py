"""The SSD training loop that runs on every Ray Train worker: one explicit loop, no hooks.

batch (uint8 images + padded boxes) -> normalise on device -> match priors -> SSD -> MultiBoxLoss ->
backward (DDP all-reduce) -> clip -> step. Every `checkpoint_every` iterations and at the end all
ranks call `ray.train.report` (a barrier); rank 0 attaches the checkpoint. Logs and MLflow: rank 0.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from .. import checkpoint as ckpt_io
from ..boxes import match_batch
from ..config import config_from_dict
from ..loss import MultiBoxLoss
from ..model import build_ssd, normalize
from ..priors import priors_from_config
from .ema import WeightEMA
from .optim import build_optimizer, build_scheduler

log = logging.getLogger("ssd_ray.train")


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps with a NaN/inf loss or gradient: the run cannot recover by skipping."""


@dataclass
class Counters:
    """Run totals that travel in checkpoints."""

    skipped_steps: int = 0  # non-finite loss/gradient: step skipped
    skipped_images: int = 0  # unreadable images replaced in the data stream
    images_seen: int = 0
    best_map: float = -1.0
    best_iteration: int = 0
    history: list = field(default_factory=list)  # (iteration, metric dict) of each evaluation

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _rank_zero() -> bool:
    import ray.train

    return ray.train.get_context().get_world_rank() == 0


def _autocast(device: torch.device, amp: str):
    if device.type != "cuda" or amp == "none":
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _format_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


class Meter:
    """Accumulates losses on the device (no per-step host sync) and times data waits."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self):
        self.sums = torch.zeros(3, device=self.device)  # loss, loss_l, loss_c
        self.steps = 0
        self.data_wait = 0.0
        self.images = 0
        self.t0 = time.perf_counter()

    def add(self, loss_l, loss_c, images: int, data_wait: float, finite: bool):
        if finite:
            self.sums += torch.stack([loss_l + loss_c, loss_l, loss_c]).detach().float()
            self.steps += 1
        self.images += images
        self.data_wait += data_wait

    def read(self) -> dict:
        elapsed = max(1e-9, time.perf_counter() - self.t0)
        loss, loss_l, loss_c = (self.sums / max(1, self.steps)).tolist()
        return {"loss": loss, "loss_l": loss_l, "loss_c": loss_c, "images_per_s": self.images / elapsed,
                "data_wait_fraction": self.data_wait / elapsed}


def _restore(state: dict, model, optimizer, scheduler, scaler, ema: WeightEMA | None) -> tuple[int, Counters]:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    if ema is not None:
        if state.get("ema"):
            ema.load_state_dict(state["ema"])
        else:  # EMA switched on at resume: the average starts from the restored weights
            ema.module.load_state_dict(state["model"])
    torch.set_rng_state(state["rng"]["torch"])
    counters = Counters(**state["counters"])
    return int(state["iteration"]), counters


def _all_finite(model) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters())


def train_loop_per_worker(loop_config: dict) -> dict:
    """Ray Train entry point. `loop_config`: config (dict), class_names, mlflow (uri, run_id), init_from."""
    import ray.train
    import ray.train.torch

    from ..data.pipeline import SSDCollate
    from .validation import run_validation

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = config_from_dict(loop_config["config"])
    class_names = loop_config["class_names"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(cfg.ray.torch_threads or max(1, int(cfg.ray.cpus_per_worker)))
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels once
    channels_last = cfg.train.channels_last
    t = cfg.train

    torch.manual_seed(t.seed)
    model = build_ssd(cfg.model, cfg.priors)
    if loop_config.get("init_from"):
        fresh = ckpt_io.load_weights_for_finetune(model, loop_config["init_from"])
        if rank == 0:
            log.info("initialised from %s; re-initialised: %s", loop_config["init_from"], fresh or "none")
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, t)
    scheduler = build_scheduler(optimizer, t)
    scaler = torch.amp.GradScaler("cuda") if on_cuda and t.amp == "fp16" else None
    ema = WeightEMA(model, t.ema_decay) if t.ema_decay > 0 else None
    eval_model = ema.module if ema else model  # what is evaluated, kept as best and exported

    iteration, counters = 0, Counters()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            iteration, counters = _restore(ckpt_io.load(d, map_location=device), model, optimizer, scheduler,
                                           scaler, ema)
        if rank == 0:
            log.info("resumed at iteration %d (lr %.3g)", iteration, optimizer.param_groups[0]["lr"])
    ddp_model = ray.train.torch.prepare_model(model, move_to_device=False)

    tracker = None
    if rank == 0 and loop_config.get("mlflow"):
        from .tracking import RunLogger

        tracker = RunLogger(loop_config["mlflow"]["uri"], loop_config["mlflow"]["run_id"])

    priors = priors_from_config(cfg.model, cfg.priors).to(device)
    criterion = MultiBoxLoss(cfg.loss.neg_pos)
    params = [p for p in model.parameters() if p.requires_grad]
    local_batch = t.batch_size // world
    val_ds = loop_config.get("val_dataset")  # DetectionDataset, split over the ranks at evaluation

    def report(metrics: dict):
        """All ranks call this (a barrier); rank 0 attaches the checkpoint."""
        metrics = {"iteration": iteration, **metrics}
        if rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        if not _all_finite(model):
            raise NonFiniteLossError(f"weights became NaN/inf at iteration {iteration}; not checkpointing them")
        state = {
            "iteration": iteration, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
            "ema": ema.state_dict() if ema else None,
            "rng": {"torch": torch.get_rng_state()}, "counters": counters.to_dict(),
            "config": loop_config["config"], "class_names": class_names,
            "normalization": ckpt_io.normalization_spec(),
            "mlflow_run_id": (loop_config.get("mlflow") or {}).get("run_id"),
        }
        with tempfile.TemporaryDirectory() as d:
            ckpt_io.save(state, os.path.join(d, ckpt_io.CHECKPOINT_FILE))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                             checkpoint_dir_name=f"checkpoint_{iteration:08d}")

    final_eval: dict = {}

    def evaluate(final: bool) -> dict:
        """Every rank predicts its share of the val set, rank 0 scores it all; returns the metrics to
        report (empty on other ranks)."""
        if val_ds is None:
            return {}
        t0 = time.perf_counter()
        result, val_loss = run_validation(eval_model, priors, val_ds, cfg, device, criterion, rank, world)
        if rank != 0:
            return {}
        metrics = {"val_mAP": result.mAP_area, "val_mAP_07": result.mAP_07, "val_loss": val_loss}
        if result.coco:
            metrics["val_AP"] = result.coco.get("AP")
        per_class = {f"val_AP/{c}": v for c, v in result.ap_area.items() if v is not None}
        counters.history.append((iteration, {k: v for k, v in metrics.items() if v is not None}))
        if result.mAP_area is not None and result.mAP_area > counters.best_map:
            counters.best_map, counters.best_iteration = result.mAP_area, iteration
            if tracker:
                with tempfile.TemporaryDirectory() as d:
                    path = os.path.join(d, "model.pt")
                    ckpt_io.save(ckpt_io.model_state(eval_model, loop_config["config"], class_names), path)
                    tracker.artifact(path, "best")
        log.info("eval @ %d: mAP@0.5 %.4f (VOC07 %.4f) val_loss %.4f best %.4f @ %d (%.1fs)", iteration,
                 result.mAP_area or 0.0, result.mAP_07 or 0.0, val_loss, counters.best_map,
                 counters.best_iteration, time.perf_counter() - t0)
        if tracker:
            tracker.metrics({**metrics, **per_class}, step=iteration)
        if final:
            final_eval.update(result.to_json())
            if tracker:  # the per-class table, PR curves and metrics JSON of the final weights
                with tempfile.TemporaryDirectory() as d:
                    result.write(d)
                    tracker.artifacts(d, "eval")
        return {k: v for k, v in metrics.items() if v is not None}

    shard = ray.train.get_dataset_shard("train")
    batches = shard.iter_torch_batches(batch_size=local_batch, collate_fn=SSDCollate(), device=device,
                                       drop_last=True, prefetch_batches=2)
    meter = Meter(device)
    bad_in_a_row = 0
    run_t0, run_start_iter = time.perf_counter(), iteration
    if rank == 0:
        log.info("training %s: iterations %d -> %d, %d worker(s) x %d images, device %s",
                 cfg.name, iteration, t.max_iter, world, local_batch, device)
    wait_t0 = time.perf_counter()
    for batch in batches:
        if iteration >= t.max_iter:
            break
        data_wait = time.perf_counter() - wait_t0
        images = normalize(batch["image"], channels_last=channels_last)
        loc_t, conf_t = match_batch(batch["boxes"], batch["labels"], priors,
                                    cfg.loss.overlap_thresh, cfg.priors.variance)
        with _autocast(device, t.amp):
            loc, conf = ddp_model(images)
        loss_l, loss_c = criterion(loc, conf, loc_t, conf_t)
        loss = loss_l + loss_c
        if iteration + 1 in t.inject_nan_at:
            loss = loss * float("nan")

        optimizer.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(optimizer)
        # The all-reduced gradient norm is the same on every rank, so all ranks agree on a skip.
        grad_norm = torch.nn.utils.clip_grad_norm_(params, t.grad_clip or math.inf)
        finite = bool(torch.isfinite(grad_norm) & torch.isfinite(loss.detach()))  # one sync per step
        if finite:
            scaler.step(optimizer) if scaler else optimizer.step()
            if ema:
                ema.update(model)
            bad_in_a_row = 0
        else:
            counters.skipped_steps += 1
            bad_in_a_row += 1
            if rank == 0:
                log.warning("non-finite loss/gradient at iteration %d: step skipped (%d in a row)",
                            iteration + 1, bad_in_a_row)
            if bad_in_a_row >= t.max_bad_steps:
                raise NonFiniteLossError(
                    f"{bad_in_a_row} consecutive non-finite steps ending at iteration {iteration + 1}: "
                    f"lower train.lr, raise train.warmup_iters or set train.grad_clip")
        if scaler:
            scaler.update()
        scheduler.step()
        iteration += 1
        n_images = local_batch * world
        counters.images_seen += n_images
        counters.skipped_images += int(batch["skipped"].sum())
        meter.add(loss_l, loss_c, n_images, data_wait, finite)

        final = iteration >= t.max_iter
        if iteration % t.log_every == 0 or final:
            m = meter.read()
            lr = optimizer.param_groups[0]["lr"]
            done = iteration - run_start_iter
            eta = (time.perf_counter() - run_t0) / done * (t.max_iter - iteration)
            if rank == 0:
                log.info("iter %d/%d  loss %.4f (loc %.4f conf %.4f)  lr %.3g  %.1f img/s  data %.0f%%  eta %s",
                         iteration, t.max_iter, m["loss"], m["loss_l"], m["loss_c"], lr, m["images_per_s"],
                         100 * m["data_wait_fraction"], _format_eta(eta))
                if tracker:
                    tracker.metrics({**m, "lr": lr, "skipped_steps": counters.skipped_steps,
                                     "skipped_images": counters.skipped_images, "grad_norm": float(grad_norm)},
                                    step=iteration)
            meter.reset()
        do_eval = iteration % t.eval_every == 0 or final
        if do_eval or iteration % t.checkpoint_every == 0:
            metrics = evaluate(final) if do_eval else {}
            report(metrics)
            meter.reset()  # evaluation and checkpointing time is not training throughput
        wait_t0 = time.perf_counter()

    if iteration < t.max_iter:
        raise RuntimeError(f"the data stream ended at iteration {iteration} before max_iter {t.max_iter}")
    return {"iteration": iteration, "final_eval": final_eval, **counters.to_dict()}
