"""The scale-out path: graphengine's digits MLP, exported to PyTorch, trained with
DistributedDataParallel, and its trained parameters brought back into graphengine.

    python examples/ddp_digits.py                     # 2 CPU processes (gloo)
    python examples/ddp_digits.py --world-size 4 --epochs 10

The same worker runs under torchrun, on GPUs (NCCL) and on several machines:

    torchrun --nproc-per-node=4 examples/ddp_digits.py --save trained.npz
    torchrun --nnodes=2 --nproc-per-node=8 --rdzv-backend=c10d \\
             --rdzv-endpoint=HOST:29400 examples/ddp_digits.py

The network, the split, the optimizer and the order of the minibatches are those of
``graphengine train`` (``ge.train.train_digits``): each global minibatch of 32 rows
is cut into one shard per process, each process's loss is weighted by its share of
the rows, and DDP averages the gradients, so every step is the step graphengine takes
on the whole minibatch and the held-out accuracy is the same. ``--save`` keeps the
trained parameters (``np.load``; set each ``g[name].value`` of ``build()``'s graph).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
from pathlib import Path

import numpy as np

import graphengine as ge


def split(seed: int = 0, test_fraction: float = 0.2):
    """The digits and train_digits' seeded split: (X, y, train rows, held-out rows)."""
    X, y = ge.datasets.digits()
    order = np.random.default_rng(seed).permutation(len(X))
    cut = len(X) - round(test_fraction * len(X))
    return X, y, order[:cut], order[cut:]


def build(hidden: int = 128, seed: int = 0) -> ge.ComputationalGraph:
    """train_digits' graph: a 64-hidden-10 sigmoid MLP with softmax cross-entropy."""
    g = ge.ComputationalGraph()
    logits = ge.nn.mlp(g, g.input("x"), [64, hidden, 10], seed=seed)
    g.softmax_cross_entropy(logits, g.input("y"), name="loss")
    return g


def accuracy(g: ge.ComputationalGraph, X, y) -> float:
    """Held-out accuracy of a graph built by ``build``, in graphengine."""
    return ge.train.evaluate(g, X, y)[1]


def worker(rank: int, world_size: int, options: dict, out: str | None) -> list:
    """One DDP process: train the exported MLP on its shard of every minibatch.
    Rank 0 returns the held-out accuracy after each epoch and saves the trained
    parameters (and that history) to the .npz file ``out``."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    cuda = torch.cuda.is_available() and options.get("cuda", True)
    local = int(os.environ.get("LOCAL_RANK", rank))
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world_size)
    try:
        X, y, train, test = split(options["seed"])
        g = build(options["hidden"], options["seed"])
        model = ge.export.to_torch(g).to(device)
        ddp = DistributedDataParallel(model, device_ids=[local] if cuda else None)
        opt = torch.optim.SGD(ddp.parameters(), lr=options["lr"], momentum=options["momentum"])
        Xt = torch.tensor(X[train], device=device)
        yt = torch.tensor(y[train], device=device)
        rng = np.random.default_rng(options["seed"])      # fit's shuffling, in every process
        n, batch = len(train), options["batch_size"]
        history = []
        for _ in range(options["epochs"]):
            order = rng.permutation(n)
            for lo in range(0, n, batch):
                rows = order[lo:lo + batch]
                shard = torch.from_numpy(np.array_split(rows, world_size)[rank]).to(device)
                # weight by the shard's share: DDP's mean over processes is then the
                # mean over the whole minibatch, as in graphengine
                loss = ddp(x=Xt[shard], y=yt[shard]) * (len(shard) * world_size / len(rows))
                opt.zero_grad()
                loss.backward()
                opt.step()
            if rank == 0:         # held-out accuracy, in graphengine with these parameters
                for p in g.parameters():
                    p.value = model.get_parameter(p.name).detach().cpu().numpy()
                history.append(accuracy(g, X[test], y[test]))
        if rank == 0 and out is not None:
            state = {k: v.detach().cpu().numpy() for k, v in model.named_parameters()}
            np.savez(out, history=np.array(history), **state)
        dist.barrier()        # leave together: gloo aborts a process whose peer is gone
    finally:
        dist.destroy_process_group()
    return history


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_ddp(world_size: int = 2, *, epochs: int = 30, lr: float = 0.1, batch_size: int = 32,
              hidden: int = 128, seed: int = 0, momentum: float = 0.9, cuda: bool = False):
    """Train with DDP over ``world_size`` local processes (torch.multiprocessing);
    return ``(g, history)``: graphengine's graph holding the trained parameters, and
    the held-out accuracy after each epoch."""
    import torch.multiprocessing as mp

    options = dict(epochs=epochs, lr=lr, batch_size=batch_size, hidden=hidden, seed=seed,
                   momentum=momentum, cuda=cuda)
    os.environ["MASTER_ADDR"] = "127.0.0.1"              # processes on this machine only
    os.environ["MASTER_PORT"] = str(_free_port())
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "trained.npz")
        mp.spawn(worker, args=(world_size, options, out), nprocs=world_size, join=True)
        with np.load(out, allow_pickle=False) as saved:
            history = saved["history"].tolist()
            g = build(hidden, seed)
            for p in g.parameters():
                p.value = saved[p.name]
    return g, history


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", metavar="FILE.npz",
                        help="under torchrun: where rank 0 saves the trained parameters")
    args = parser.parse_args(argv)
    options = dict(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                   hidden=args.hidden, seed=args.seed, momentum=0.9)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:     # launched by torchrun
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        history = worker(rank, world_size, options, args.save)
        if rank == 0:
            print(f"DDP over {world_size} processes: held-out accuracy {history[-1]:.4f}"
                  + (f"; parameters saved to {args.save}" if args.save else ""))
        return 0
    g, history = train_ddp(args.world_size, **options)
    X, y, _, test = split(args.seed)
    print(f"DDP over {args.world_size} processes: held-out accuracy {history[-1]:.4f} "
          f"(in graphengine, with the trained parameters: {accuracy(g, X[test], y[test]):.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
