#!/usr/bin/env python3
"""PyTorch baseline for `digits bench`: the same workloads, timed the same way.

`digits bench` runs this as a worker (--worker) when `python3 -c 'import torch'` works,
passing the images it trains on as raw bytes, and asks it for one timed run at a time, so
that its own runs alternate with these. Run by hand:

    python3 bench/pytorch_baseline.py --images FILE --labels FILE [--count 60000] [--json]
        FILE: N*784 uint8 pixels / N uint8 labels (digits bench writes them)
    python3 bench/pytorch_baseline.py --images FILE --labels FILE --worker
        what digits bench runs: one timed run per workload name read from stdin
    python3 bench/pytorch_baseline.py --tutorial-script DATA_ROOT [--epochs 1]
        the tutorial as written (torchvision MNIST, DataLoader, ToTensor, a test pass after each
        epoch) on the IDX files in DATA_ROOT/MNIST/raw, for the end-to-end comparison with
        `digits train`

Workloads (each after a warm-up, the median of --repeat runs; with --worker, one run per request):
- tutorial epoch: MLP 784-128-400-10, ReLU, Adam lr 0.01, batch 32, data preloaded as one
  tensor, with 1 thread and with PyTorch's default thread count;
- cnn training: digits' `cnn` model (two 3x3 conv + batch norm + pool blocks, fc 128), batch 64;
- batch inference of the MLP and of the `cnn`, batch 1000; one image through the MLP.
"""

import argparse
import json
import statistics
import sys
import time

import torch
from torch import nn


class Net(nn.Module):
    """The tutorial's network."""

    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.hidden1 = nn.Linear(28 * 28, 128)
        self.hidden2 = nn.Linear(128, 400)
        self.output = nn.Linear(400, 10)

    def forward(self, x):
        x = self.flatten(x)
        x = torch.relu(self.hidden1(x))
        x = torch.relu(self.hidden2(x))
        return self.output(x)


class Cnn(nn.Module):
    """digits' `cnn` model."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.output = nn.Linear(128, 10)
        self.dropout = nn.Dropout(0.25)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = nn.functional.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
        x = torch.relu(self.fc1(self.dropout(x.flatten(1))))
        return self.output(self.dropout(x))


def seconds(work):
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def median_seconds(work, repeat):
    return statistics.median(seconds(work) for _ in range(repeat))


def train_images(model, optimizer, x, y, count, batch_size):
    """Trains on `count` images, cycling through x."""
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    done = 0
    while done < count:
        for start in range(0, len(x), batch_size):
            if done >= count:
                return
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            loss = loss_fn(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += len(xb)


class Workloads:
    """Each workload as one timed run, its models kept from run to run (as a training run
    keeps its model) and warmed up by an untimed run the first time it is asked for."""

    def __init__(self, args):
        pixels = torch.frombuffer(bytearray(open(args.images, "rb").read()), dtype=torch.uint8)
        labels = torch.frombuffer(bytearray(open(args.labels, "rb").read()), dtype=torch.uint8)
        self.x = (pixels.float() / 255.0).reshape(-1, 1, 28, 28)
        self.y = labels.long()
        self.count = args.count
        self.default_threads = torch.get_num_threads()
        torch.manual_seed(0)
        self.kept = {}
        self.warm = set()

    def kept_object(self, name, make):
        """A model or optimizer made once and kept, so that each run continues its training."""
        if name not in self.kept:
            self.kept[name] = make()
        return self.kept[name]

    def tutorial(self, threads):
        """A tutorial epoch's seconds (scaled to 60,000 images) with `threads` threads."""
        torch.set_num_threads(threads)
        model = self.kept_object(f"tutorial {threads}", Net)
        optimizer = self.kept_object(f"tutorial {threads} adam", lambda: torch.optim.Adam(model.parameters(), lr=0.01))
        return seconds(lambda: train_images(model, optimizer, self.x, self.y, self.count, 32)) * 60000 / self.count

    def cnn_train(self):
        """Images per second training the `cnn` on at most 4,096 images."""
        model = self.kept_object("cnn", Cnn)
        optimizer = self.kept_object("cnn adamw", lambda: torch.optim.AdamW(model.parameters(), lr=0.003))
        count = min(self.count, 4096)
        return count / seconds(lambda: train_images(model, optimizer, self.x, self.y, count, 64))

    def inference(self, name, make, repeat):
        """Images per second through a model in eval mode, batch 1000."""
        model = self.kept_object(name, make).eval()
        batch = self.x[:1000]
        with torch.no_grad():
            return len(batch) / median_seconds(lambda: model(batch), repeat)

    def one_image_ms(self):
        model = self.kept_object("mlp", Net).eval()
        one = self.x[:1]
        with torch.no_grad():
            return 1000 * median_seconds(lambda: model(one), 200)

    def run(self, workload):
        """One timed run of `workload` (a key of `WORKLOADS`), after a warm-up the first time."""
        if workload not in WORKLOADS:
            raise ValueError(f"unknown workload {workload!r}; known: {', '.join(WORKLOADS)}")
        torch.set_num_threads(self.default_threads)
        if workload not in self.warm:
            WORKLOADS[workload](self)
            self.warm.add(workload)
        return WORKLOADS[workload](self)


WORKLOADS = {
    "tutorial_epoch_s": lambda w: w.tutorial(w.default_threads),
    "tutorial_epoch_s_1_thread": lambda w: w.tutorial(1),
    "cnn_train_images_per_s": Workloads.cnn_train,
    "mlp_inference_images_per_s": lambda w: w.inference("mlp", Net, 5),
    "cnn_inference_images_per_s": lambda w: w.inference("cnn", Cnn, 1),
    "one_image_ms": Workloads.one_image_ms,
}


def preloaded(args):
    """Every workload, the median of --repeat runs."""
    workloads = Workloads(args)
    figures = {"torch_version": torch.__version__, "default_threads": workloads.default_threads}
    for workload in WORKLOADS:
        figures[workload] = statistics.median(workloads.run(workload) for _ in range(args.repeat))
    return figures


def worker(args):
    """Serves `digits bench`, which alternates its own runs with these so that both see the
    machine at the same moments: prints a line of JSON with the versions, then for each
    workload name read from stdin, one line `{"workload": name, "value": figure}`."""
    workloads = Workloads(args)
    print(json.dumps({"torch_version": torch.__version__, "default_threads": workloads.default_threads}), flush=True)
    for line in sys.stdin:
        workload = line.strip()
        print(json.dumps({"workload": workload, "value": workloads.run(workload)}), flush=True)


def tutorial_script(args):
    """The tutorial's own loop: torchvision datasets, DataLoader, ToTensor, train() and
    test() every epoch. Times each epoch's training and the whole run."""
    from torch.utils.data import DataLoader
    from torchvision import datasets
    from torchvision.transforms import ToTensor

    started_run = time.perf_counter()
    training_data = datasets.MNIST(root=args.tutorial_script, train=True, download=False, transform=ToTensor())
    test_data = datasets.MNIST(root=args.tutorial_script, train=False, download=False, transform=ToTensor())
    train_dataloader = DataLoader(training_data, batch_size=32)
    test_dataloader = DataLoader(test_data, batch_size=32)
    model = Net()
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    times = []
    for _ in range(args.epochs):
        started = time.perf_counter()
        model.train()
        for batch, (X, y) in enumerate(train_dataloader):
            loss = loss_fn(model(X), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if batch % 100 == 0:
                print(f"loss: {loss.item():>7f}", file=sys.stderr)
        times.append(time.perf_counter() - started)
        model.eval()
        correct, test_loss = 0, 0.0
        with torch.no_grad():
            for X, y in test_dataloader:
                pred = model(X)
                test_loss += loss_fn(pred, y).item()
                correct += (pred.argmax(1) == y).type(torch.float).sum().item()
        print(f"Accuracy: {100 * correct / len(test_data):>0.1f}%, Avg loss: {test_loss / len(test_dataloader):>8f}", file=sys.stderr)
    return {
        "torch_version": torch.__version__,
        "tutorial_script_epoch_s": statistics.median(times),
        "tutorial_script_total_s": time.perf_counter() - started_run,
        "epochs": args.epochs,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images")
    parser.add_argument("--labels")
    parser.add_argument("--count", type=int, default=60000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tutorial-script", metavar="DATA_ROOT")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", action="store_true")
    args = parser.parse_args()
    if args.worker and args.images and args.labels:
        worker(args)
        return
    if args.tutorial_script:
        figures = tutorial_script(args)
    elif args.images and args.labels:
        figures = preloaded(args)
    else:
        parser.error("give --images and --labels, or --tutorial-script DATA_ROOT")
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
