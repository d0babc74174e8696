"""Batched inference of every fold model over a range of a packed file, and `lens predict`.

Images are read in blocks (about ``BLOCK_BYTES`` of pixels), the next block on a reader
thread while the models work on this one, so memory does not grow with the file. Every
model sees every batch in eval mode under ``torch.inference_mode``, channels_last, with
bf16 autocast on CUDA.

Batches lie on a fixed grid of the file: batch j holds images j*B .. (j+1)*B - 1 (B the
batch size). A range that starts or stops inside a batch still runs that whole batch and
keeps its own rows, so every image goes through the models in exactly the same batch
tensor whatever the range: a sharded prediction merged is bitwise the unsharded one.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lens import __version__
from lens.data.h5file import PackedInfo
from lens.errors import LensError
from lens.predict.models import Ensemble
from lens.predict.output import Block
from lens.predict.settings import DEFAULT_BATCH, Progress, check_batch_size

BLOCK_BYTES = 64 << 20  # pixels (as float32) read per block


def resolve_device(name: str) -> torch.device:
    if name not in ("auto", "cpu", "cuda"):
        raise LensError(f"--device {name}: expected auto, cpu or cuda")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise LensError("--device cuda: no CUDA GPU is visible")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def precision(device: torch.device) -> str:
    return "bf16" if device.type == "cuda" else "fp32"


def grid_blocks(start: int, stop: int, n: int, batch: int, per_block: int
                ) -> list[tuple[int, int]]:
    """Blocks of whole grid batches covering start..stop-1: (read_lo, read_hi) pairs, each
    a run of at most ``per_block`` batches, beginning and ending on batch boundaries (or n)."""
    if stop <= start:
        return []
    lo, hi = (start // batch) * batch, min(n, -(-stop // batch) * batch)
    step = batch * per_block
    return [(s, min(s + step, hi)) for s in range(lo, hi, step)]


@dataclass(frozen=True)
class _Read:
    lo: int  # first row read (a batch boundary)
    images: np.ndarray  # (m, C, H, W) float32
    keep: slice  # the rows of images inside start..stop
    index: np.ndarray
    source: list[str]
    split: np.ndarray
    label: np.ndarray


def _reader(path: Path, start: int, stop: int
            ) -> tuple[Callable[[tuple[int, int]], _Read], Callable[[], None]]:
    """A function reading one block (on the reader thread: h5py handles stay on it)."""
    import h5py

    f = h5py.File(path, "r")

    def read(block: tuple[int, int]) -> _Read:
        lo, hi = block
        a, b = max(start, lo), min(stop, hi)
        return _Read(lo=lo, images=f["images"][lo:hi].astype(np.float32, copy=False),
                     keep=slice(a - lo, b - lo), index=np.arange(a, b, dtype=np.int64),
                     source=[s.decode() if isinstance(s, bytes) else str(s)
                             for s in f["source"][a:b]],
                     split=f["split"][a:b].astype(np.int8),
                     label=f["labels"][a:b].astype(np.int64))

    return read, f.close


def _forward(models: list[torch.nn.Module], x: torch.Tensor, batch: int,
             device: torch.device) -> torch.Tensor:
    """(F, m, K) softmax probabilities of every model for images x (m, C, H, W)."""
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    outs = []
    for model in models:
        probs: list[torch.Tensor] = []
        for a in range(0, x.shape[0], batch):
            with autocast:
                logits = model(x[a:a + batch])
            probs.append(logits.float().softmax(dim=1))
        outs.append(torch.cat(probs))
    return torch.stack(outs)


def infer(ensemble: Ensemble, info: PackedInfo, start: int, stop: int, *,
          batch_size: int = DEFAULT_BATCH, device: torch.device | None = None,
          progress: Progress | None = None) -> Iterator[Block]:
    """Blocks of predictions for rows start..stop-1 of the packed file, in order."""
    check_batch_size(batch_size)
    device = device or torch.device("cpu")
    models = [m.to(device, memory_format=torch.channels_last).eval() for m in ensemble.models]
    image_bytes = 4 * info.channels * info.height * info.width
    per_block = max(1, BLOCK_BYTES // (batch_size * image_bytes))
    blocks = grid_blocks(start, stop, info.n, batch_size, per_block)
    read, close = _reader(info.path, start, stop)
    done, total = 0, stop - start
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lens-predict-read") as pool:
        try:
            pending = pool.submit(read, blocks[0]) if blocks else None
            for j in range(len(blocks)):
                assert pending is not None
                got = pending.result()
                pending = pool.submit(read, blocks[j + 1]) if j + 1 < len(blocks) else None
                x = torch.from_numpy(got.images)
                if device.type == "cuda":
                    x = x.pin_memory().to(device, non_blocking=True)
                x = x.contiguous(memory_format=torch.channels_last)
                with torch.inference_mode():
                    probs = _forward(models, x, batch_size, device).cpu().numpy()
                fold_prob = np.ascontiguousarray(probs[:, got.keep])
                # the mean in float64: the same value for an image whatever its neighbours
                prob = fold_prob.astype(np.float64).mean(axis=0).astype(np.float32)
                yield Block(index=got.index, source=got.source, split=got.split,
                            label=got.label, prob=prob, fold_prob=fold_prob)
                done += len(got.index)
                if progress is not None:
                    progress("predict", done, total)
        finally:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(Exception):
                    pending.result()
            pool.submit(close).result()


def base_attrs(ensemble: Ensemble, data: str | Path, info: PackedInfo, batch_size: int,
               device: torch.device) -> dict[str, Any]:
    """The attributes of a prediction file; the same for every shard of one command."""
    from lens.predict.data import is_training_file

    return {
        "format": "lens-predictions-1",
        "class_names": json.dumps(list(ensemble.class_names)),
        "folds": json.dumps(ensemble.folds),
        "stage": ensemble.stage,
        "run": str(ensemble.run),
        "data": str(data),
        "data_n": info.n,
        "data_created": info.created,
        # metrics then use the test split only: the models saw the train split
        "data_is_training_file": int(is_training_file(info, ensemble.trained)),
        "batch_size": batch_size,
        "precision": precision(device),
        "lens_version": __version__,
    }


@dataclass(frozen=True)
class Summary:
    """What one `lens predict` did."""

    n: int
    stage: str
    folds: list[int]
    missing: list[int]
    device: str
    seconds: float  # inference and writing (models loaded, data packed before)
    written: list[Path]
    metrics: dict[str, Any] | None = None
    top: list[dict[str, Any]] | None = None

    @property
    def images_per_s(self) -> float:
        return self.n / max(self.seconds, 1e-9)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def predict(run: str | Path, data: str | Path, out: str | Path, *, stage: str | None = None,
            batch_size: int = DEFAULT_BATCH, device: str = "auto", n_boot: int = 1000,
            top: int = 0, montage: str | Path | None = None, montage_class: str | None = None,
            force: bool = False, progress: Progress | None = None) -> Summary:
    """`lens predict RUN DATA --out PRED`: PRED.h5 and PRED.csv, and when the images are
    labeled PRED.metrics.json and PRED.roc.png; the top-K list and montage when asked."""
    from lens.predict.data import open_data
    from lens.predict.finish import finish, prepare_outputs
    from lens.predict.models import load_ensemble
    from lens.predict.montage import ranked_classes
    from lens.predict.output import Outputs, writing

    check_batch_size(batch_size)
    outs = Outputs.of(out)
    prepare_outputs(outs, force)
    dev = resolve_device(device)
    ensemble = load_ensemble(run, stage)
    ranked_classes(list(ensemble.class_names), montage_class)  # a bad --class fails first
    with open_data(data, ensemble.trained, outs.stem.parent, progress) as info:
        attrs = {**base_attrs(ensemble, data, info, batch_size, dev), "start": 0, "stop": info.n}
        started = time.perf_counter()
        with writing(outs.h5, outs.csv, info.n, attrs) as write:
            for block in infer(ensemble, info, 0, info.n, batch_size=batch_size, device=dev,
                               progress=progress):
                write(block)
        seconds = time.perf_counter() - started
        result = finish(outs, info.path, n_boot=n_boot, top=top, montage=montage,
                        montage_class=montage_class)
    return Summary(n=info.n, stage=ensemble.stage, folds=ensemble.folds,
                   missing=ensemble.missing, device=device_name(dev), seconds=seconds,
                   written=[outs.h5, outs.csv, *result.written], metrics=result.metrics,
                   top=result.top)
