"""The SSD training loop that runs on every Ray Train worker (in local mode, `ray.num_workers: 0`, in
the driver itself): one explicit loop, no hooks.

Read top to bottom: `setup_worker` builds the model, optimiser, schedule and the training step and
restores the latest checkpoint; `train_loop_per_worker` runs the loop; every `checkpoint_every`
iterations and at the end all ranks call `report_checkpoint` (`ray.train.report` is a barrier; rank 0
attaches the checkpoint), and every `eval_every` iterations `evaluate` scores the weights being
evaluated (the EMA when there is one). The step itself is `ssd_ray.train.step.TrainStep`, shared with
the benchmarks. Logs and MLflow: rank 0.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import checkpoint as ckpt_io
from ..config import Config, config_from_dict
from ..loss import MultiBoxLoss
from ..model import build_ssd
from ..priors import priors_from_config
from . import local_checkpoints
from .ema import WeightEMA
from .optim import build_optimizer, build_scheduler
from .step import StepSettings, TrainStep
from .stream import check_stream_start

log = logging.getLogger("ssd_ray.train")


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps with a NaN/inf loss or gradient: the run cannot recover by skipping."""


@dataclass
class Counters:
    """Run totals that travel in checkpoints."""

    skipped_steps: int = 0  # non-finite loss/gradient: step skipped
    skipped_images: int = 0  # unreadable images replaced in the data stream (all ranks)
    extra_dropped: int = 0  # boxes that data.augment.extra pushed out of the image (all ranks)
    images_seen: int = 0
    preemptions: int = 0  # preemption notices answered with a just-in-time checkpoint
    # One [restored iteration, world size, stream start iteration] per worker-group start: the
    # run's own record of its restarts and resizes.
    attempts: list = field(default_factory=list)
    best_map: float = -1.0
    best_iteration: int = 0
    history: list = field(default_factory=list)  # (iteration, metric dict) of each evaluation

    def to_dict(self) -> dict:
        return dict(self.__dict__)


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
        self.restart_clock()

    def restart_clock(self):
        """Start timing afresh, keeping the losses (the first step's compile is not throughput)."""
        self.data_wait = 0.0
        self.images = 0
        self.t0 = time.perf_counter()

    def add(self, loss_l, loss_c, images: int, data_wait: float, finite: bool):
        if finite:
            self.sums += torch.stack([loss_l + loss_c, loss_l, loss_c]).detach().float()
            self.steps += 1
        self.images += images
        self.data_wait += data_wait

    def read(self, world: int = 1) -> dict:
        """Means since the last reset; with `world > 1` a collective (all ranks call it) that averages
        the losses over the ranks: each rank's share is normalised by the global positives, so their
        mean is the global batch's loss."""
        elapsed = max(1e-9, time.perf_counter() - self.t0)
        sums = self.sums
        if world > 1:
            import torch.distributed as dist

            sums = sums.clone()
            dist.all_reduce(sums)
            sums /= world
        loss, loss_l, loss_c = (sums / max(1, self.steps)).tolist()
        return {"loss": loss, "loss_l": loss_l, "loss_c": loss_c, "images_per_s": self.images / elapsed,
                "data_wait_fraction": self.data_wait / elapsed}


@dataclass
class Worker:
    """One rank's training state, built by `setup_worker`; the loop and its helpers read and advance it."""

    cfg: Config
    loop_config: dict  # what the driver sent: config (dict), class_names, val_dataset, mlflow, init_from,
    #                    best_model_file
    rank: int
    world: int
    device: torch.device
    model: torch.nn.Module  # the bare SSD: checkpointed, and what the EMA averages
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    ema: WeightEMA | None
    step: TrainStep
    priors: torch.Tensor  # [P,4] cxcywh on the device
    tracker: Any  # rank 0's MLflow RunLogger, or None
    iteration: int = 0
    counters: Counters = field(default_factory=Counters)
    final_eval: dict = field(default_factory=dict)
    restored_iteration: int = 0  # where this attempt started (the checkpoint Ray restored, or 0)
    skipped_here: torch.Tensor | None = None  # [unreadable images, extra-dropped boxes] on this rank since the last sync
    answered_preemptions: set = field(default_factory=set)  # nodes whose notice got its checkpoint

    def sync_counters(self) -> None:
        """Fold every rank's unreadable-image count into `counters` (a collective with several ranks)."""
        if self.skipped_here is None:
            return
        total = self.skipped_here.clone()
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(total)
        skipped, dropped = total.tolist()
        self.counters.skipped_images += int(skipped)
        self.counters.extra_dropped += int(dropped)
        self.skipped_here.zero_()

    @property
    def eval_model(self) -> torch.nn.Module:
        """What is evaluated, kept as best and exported: the weight average when there is one."""
        return self.ema.module if self.ema else self.model

    @property
    def local_batch(self) -> int:
        return self.cfg.train.batch_size // self.world


def _restore(state: dict, model, optimizer, scheduler, scaler, ema: WeightEMA | None) -> tuple[int, Counters]:
    """Load a training checkpoint's state into the parts; returns (iteration, counters)."""
    model.load_state_dict(state["model"])
    # The kernel choice belongs to this machine (fused on CUDA), not to the one that saved the state.
    kernels = [{k: g.get(k) for k in ("fused", "foreach")} for g in optimizer.param_groups]
    optimizer.load_state_dict(state["optimizer"])
    for group, kernel in zip(optimizer.param_groups, kernels):
        group.update(kernel)
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    if ema is not None:
        if state.get("ema"):
            ema.load_state_dict(state["ema"])
        else:  # EMA switched on at resume: the average starts from the restored weights
            ema.module.load_state_dict(state["model"])
    torch.set_rng_state(state["rng"]["torch"])
    return int(state["iteration"]), Counters(**state["counters"])


def _state_to_restore(loop_config: dict, device: torch.device) -> dict | None:
    """The training state this attempt continues from: the checkpoint Ray Train restores, unless the
    loop persisted a newer one itself (local mode, `local_checkpoints.py`) -- the same choice as
    `stream.registered_iteration`, which starts the data stream. None: a fresh start."""
    import ray.train

    state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = ckpt_io.load(d, map_location=device)
    run_dir = loop_config.get("run_dir")
    local_it = local_checkpoints.local_checkpoint_iteration(run_dir) if run_dir else None
    if local_it is not None and (state is None or int(state["iteration"]) < local_it):
        state = ckpt_io.load(local_checkpoints.checkpoint_dir(run_dir, local_it), map_location=device)
    return state


def setup_worker(loop_config: dict) -> Worker:
    """Model, optimiser, schedule, EMA and step on this rank's device; the latest checkpoint restored."""
    import ray.train
    import ray.train.torch

    cfg = config_from_dict(loop_config["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(cfg.ray.torch_threads or max(1, int(cfg.ray.cpus_per_worker)))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels once
    t = cfg.train
    torch.manual_seed(t.seed)
    model = build_ssd(cfg.model, cfg.priors)
    if loop_config.get("init_from"):
        fresh = ckpt_io.load_weights_for_finetune(model, loop_config["init_from"])
        if rank == 0:
            log.info("initialised from %s; re-initialised: %s", loop_config["init_from"], fresh or "none")
    model.to(device)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, t)
    scheduler = build_scheduler(optimizer, t)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and t.amp == "fp16" else None
    ema = WeightEMA(model, t.ema_decay) if t.ema_decay > 0 else None
    tracker = None
    if rank == 0 and loop_config.get("mlflow"):
        from .tracking import RunLogger

        tracker = RunLogger(loop_config["mlflow"]["uri"], loop_config["mlflow"]["run_id"])
    iteration, counters = 0, Counters()
    state = _state_to_restore(loop_config, device)
    if state is not None:
        iteration, counters = _restore(state, model, optimizer, scheduler, scaler, ema)
        if rank == 0:
            log.info("resumed at iteration %d (lr %.3g)", iteration, optimizer.param_groups[0]["lr"])
    priors = priors_from_config(cfg.model, cfg.priors).to(device)
    net = ray.train.torch.prepare_model(model, move_to_device=False)  # DDP when world > 1
    step = TrainStep(model, priors, optimizer, StepSettings.from_config(cfg, device),
                     criterion=MultiBoxLoss(cfg.loss.neg_pos), net=net, scaler=scaler, ema=ema, world_size=world)
    return Worker(cfg, loop_config, rank, world, device, model, optimizer, scheduler, scaler, ema, step, priors,
                  tracker, iteration, counters, restored_iteration=iteration,
                  skipped_here=torch.zeros(2, dtype=torch.int64, device=device))


def report_checkpoint(w: Worker, metrics: dict) -> None:
    """All ranks call this (a barrier); rank 0 attaches the full training state as a checkpoint (in
    local mode it writes the checkpoint to the run folder itself)."""
    import ray.train

    w.sync_counters()
    metrics = {"iteration": w.iteration, **metrics}
    if w.rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    if not all(torch.isfinite(p).all() for p in w.model.parameters()):
        raise NonFiniteLossError(f"weights became NaN/inf at iteration {w.iteration}; not checkpointing them")
    state = {
        "iteration": w.iteration, "model": w.model.state_dict(), "optimizer": w.optimizer.state_dict(),
        "scheduler": w.scheduler.state_dict(), "scaler": w.scaler.state_dict() if w.scaler else None,
        "ema": w.ema.state_dict() if w.ema else None,
        "rng": {"torch": torch.get_rng_state()}, "counters": w.counters.to_dict(),
        "config": w.loop_config["config"], "class_names": w.loop_config["class_names"],
        "normalization": ckpt_io.normalization_spec(w.cfg.model.normalization),
        "mlflow_run_id": (w.loop_config.get("mlflow") or {}).get("run_id"),
    }
    if w.loop_config.get("local"):  # local mode: Ray keeps no checkpoint, the loop writes it to the run folder
        from .stream import ray_registered_iteration

        run_dir = w.loop_config["run_dir"]
        local_checkpoints.persist(run_dir, state, w.iteration, keep_also=ray_registered_iteration(run_dir))
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as d:
        ckpt_io.save(state, os.path.join(d, ckpt_io.CHECKPOINT_FILE))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                         checkpoint_dir_name=local_checkpoints.checkpoint_dir_name(w.iteration))


def evaluate(w: Worker, final: bool) -> dict:
    """Every rank predicts its share of the val set, rank 0 scores it all, keeps the best model and
    logs; returns the metrics to report (empty on other ranks and without a val set)."""
    from .validation import run_validation

    val_ds = w.loop_config.get("val_dataset")
    if val_ds is None:
        return {}
    t0 = time.perf_counter()
    result, val_loss = run_validation(w.eval_model, w.priors, val_ds, w.cfg, w.device,
                                      w.step.criterion, w.rank, w.world)
    if w.rank != 0:
        return {}
    c = w.counters
    metrics = {"val_mAP": result.mAP_area, "val_mAP_07": result.mAP_07, "val_loss": val_loss}
    if result.coco:
        metrics["val_AP"] = result.coco.get("AP")
    metrics = {k: v for k, v in metrics.items() if v is not None}
    c.history.append((w.iteration, dict(metrics)))
    headline = result.headline  # the evaluation protocol's main number (VOC area mAP@0.5 by default)
    if headline is not None and headline > c.best_map:
        c.best_map, c.best_iteration = headline, w.iteration
        if w.loop_config.get("best_model_file"):  # the run folder; the driver logs it once, as an MLflow model
            ckpt_io.save(ckpt_io.model_state(w.eval_model, w.loop_config["config"], w.loop_config["class_names"]),
                         w.loop_config["best_model_file"])
    log.info("eval @ %d: mAP@0.5 %.4f (VOC07 %.4f) val_loss %.4f best %.4f @ %d (%.1fs)", w.iteration,
             result.mAP_area or 0.0, result.mAP_07 or 0.0, val_loss, c.best_map, c.best_iteration,
             time.perf_counter() - t0)
    if w.tracker:
        per_class = {f"val_AP/{name}": v for name, v in result.ap_area.items() if v is not None}
        w.tracker.metrics({**metrics, **per_class}, step=w.iteration)
    if final:
        w.final_eval.update(result.to_json())
        if w.tracker:  # the per-class table, PR curves and metrics JSON of the final weights
            with tempfile.TemporaryDirectory() as d:
                result.write(d)
                w.tracker.artifacts(d, "eval")
    return metrics


def log_progress(w: Worker, meter: Meter, grad_norm: torch.Tensor, run_t0: float, run_start_iter: int) -> None:
    """One line (and MLflow metrics) per `log_every` iterations from rank 0: loss (averaged over the
    ranks), lr, img/s, ETA. All ranks call it (the averages are collectives)."""
    t = w.cfg.train
    m = meter.read(w.world)
    w.sync_counters()
    if w.rank != 0:
        return
    lr = w.optimizer.param_groups[0]["lr"]
    eta = (time.perf_counter() - run_t0) / max(1, w.iteration - run_start_iter) * (t.max_iter - w.iteration)
    log.info("iter %d/%d  loss %.4f (loc %.4f conf %.4f)  lr %.3g  %.1f img/s  data %.0f%%  eta %s",
             w.iteration, t.max_iter, m["loss"], m["loss_l"], m["loss_c"], lr, m["images_per_s"],
             100 * m["data_wait_fraction"], _format_eta(eta))
    if w.tracker:
        w.tracker.metrics({**m, "lr": lr, "skipped_steps": w.counters.skipped_steps,
                           "skipped_images": w.counters.skipped_images, "extra_dropped": w.counters.extra_dropped,
                           "preemptions": w.counters.preemptions,
                           "grad_norm": float(grad_norm)}, step=w.iteration)


def answer_preemption(w: Worker) -> None:
    """Poll for a preemption notice (a barrier: all ranks, same iterations) and answer a new one with
    a just-in-time checkpoint at the current iteration, so the restart loses no iterations."""
    import ray.train

    info = ray.train.get_preemption_info()
    if info is None:
        return
    nodes = set(info.preempted_node_to_ranks) - w.answered_preemptions
    if not nodes:
        return
    w.answered_preemptions |= nodes
    w.counters.preemptions += 1
    if w.rank == 0:
        deadline = ("no deadline" if info.deadline_ms is None
                    else f"deadline in {max(0.0, info.deadline_ms / 1000.0 - time.time()):.0f} s")
        for node in sorted(nodes):
            log.info("preemption notice for node %s (%s): checkpoint at iteration %d", node, deadline, w.iteration)
        if w.tracker:
            w.tracker.metrics({"preemptions": w.counters.preemptions}, step=w.iteration)
    report_checkpoint(w, {"preemption": 1})


def train_loop_per_worker(loop_config: dict) -> dict:
    """Ray Train entry point. `loop_config`: config (dict), class_names, val_dataset, mlflow (uri, run_id),
    init_from, start_iter, best_model_file, run_dir, local (Ray Train's local mode: this is the driver)."""
    import ray.train

    from ..data.pipeline import SSDCollate

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    w = setup_worker(loop_config)
    t = w.cfg.train
    batches = ray.train.get_dataset_shard("train").iter_torch_batches(
        batch_size=w.local_batch, collate_fn=SSDCollate(), device=w.device, drop_last=True, prefetch_batches=2)
    meter, bad_in_a_row = Meter(w.device), 0
    run_t0, run_start_iter = time.perf_counter(), w.iteration
    train_s, train_images = 0.0, 0  # data waits + steps, first step and evaluation/checkpoints excluded
    if w.rank == 0:
        log.info("training %s: iterations %d -> %d, %d worker(s) x %d images, device %s%s", w.cfg.name,
                 w.iteration, t.max_iter, w.world, w.local_batch, w.device, ", compiled step" if t.compile else "")
    wait_t0 = time.perf_counter()
    for batch in batches:
        if w.iteration >= t.max_iter:
            break
        if w.iteration == w.restored_iteration:  # first batch of this attempt: stream and weights agree?
            stream_start = int(batch["start_iter"][0])
            check_stream_start(stream_start, w.restored_iteration, int(loop_config.get("start_iter", 0)),
                               t.batch_size)
            w.counters.attempts.append([w.restored_iteration, w.world, stream_start])
        data_wait = time.perf_counter() - wait_t0
        out = w.step(batch["image"], batch["boxes"], batch["labels"], inject_nan=w.iteration + 1 in t.inject_nan_at)
        if out.finite:
            bad_in_a_row = 0
        else:
            w.counters.skipped_steps += 1
            bad_in_a_row += 1
            if w.rank == 0:
                log.warning("non-finite loss/gradient at iteration %d: step skipped (%d in a row)",
                            w.iteration + 1, bad_in_a_row)
            if bad_in_a_row >= t.max_bad_steps:
                raise NonFiniteLossError(
                    f"{bad_in_a_row} consecutive non-finite steps ending at iteration {w.iteration + 1}: "
                    f"lower train.lr, raise train.warmup_iters or set train.grad_clip")
        if t.inject_step_delay_s:
            time.sleep(t.inject_step_delay_s)
        w.scheduler.step()
        w.iteration += 1
        w.counters.images_seen += t.batch_size
        # On the device: no host sync per step.
        w.skipped_here += torch.stack([batch["skipped"].sum(), batch["extra_dropped"].sum()])
        meter.add(out.loss_l, out.loss_c, t.batch_size, data_wait, out.finite)
        if w.step.calls > 1:
            train_s += time.perf_counter() - wait_t0
            train_images += t.batch_size
        if w.step.calls == 1:  # the first step allocates (and compiles): not training throughput
            if w.rank == 0 and t.compile:
                log.info("compiled the training step in %.1f s (first iteration, excluded from img/s)",
                         w.step.first_call_s)
            meter.restart_clock()
        final = w.iteration >= t.max_iter
        if w.iteration % t.log_every == 0 or final:
            log_progress(w, meter, out.grad_norm, run_t0, run_start_iter)
            meter.reset()
        do_eval = w.iteration % t.eval_every == 0 or final
        if do_eval or w.iteration % t.checkpoint_every == 0:
            report_checkpoint(w, evaluate(w, final) if do_eval else {})
            meter.reset()  # evaluation and checkpointing time is not training throughput
        elif w.iteration % w.cfg.ray.preemption_check_every == 0:
            answer_preemption(w)
        wait_t0 = time.perf_counter()

    if w.iteration < t.max_iter:
        raise RuntimeError(f"the data stream ended at iteration {w.iteration} before max_iter {t.max_iter}")
    return {"iteration": w.iteration, "final_eval": w.final_eval, "images_per_s": train_images / max(train_s, 1e-9),
            **w.counters.to_dict()}
