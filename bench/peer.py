#!/usr/bin/env python3
"""PyTorch peer of bench/run.ts: the same layer stack, weights and inputs, timed in the same run.

bench/run.ts starts this script once and talks to it over stdin/stdout, one JSON object per line:

  {"cmd": "setup", "threads": 2, "arch": [...], "weights": {"conv1.weight": "/tmp/.../conv1.weight.npy", ...},
   "tensors": {"x32": "/tmp/.../x32.npy", ...}, "layer": "relu5"}
      builds the model (nn.Sequential with convscope's layer names, eval mode) and a copy of it with Captum-style
      deconvnet hooks; loads the weights and the inputs.      -> {"ok": true, "torch": ..., "blas": ..., ...}
  {"cmd": "run", "work": "forward", "input": "x32", "out": "/tmp/.../peer_logits.npy"?}
  {"cmd": "run", "work": "project", "input": "x9", "mask": "m9", "out": ...?}
  {"cmd": "run", "work": "project_max", "input": "x1", "feature": 17, "out": ...?}
      runs the work once; replies {"ms": wall time of the work}; with "out", saves the result (.npy) after timing.
  {"cmd": "quit"}

Every reply is one line of JSON on stdout; anything else goes to stderr.
"""
import copy
import json
import sys
import time
from collections import OrderedDict

import numpy as np
import torch
from torch import nn


def pair(v):
    return tuple(v) if isinstance(v, list) else (v, v)


def make_layer(spec):
    t = spec["type"]
    if t == "conv2d":
        return nn.Conv2d(spec["in_channels"], spec["out_channels"], pair(spec["kernel"]), pair(spec["stride"]),
                         pair(spec["padding"]), bias=spec["bias"])
    if t == "relu":
        return nn.ReLU(inplace=False)
    if t == "maxpool2d":
        return nn.MaxPool2d(pair(spec["kernel"]), pair(spec["stride"]), pair(spec["padding"]), ceil_mode=spec["ceil_mode"])
    if t == "lrn":
        return nn.LocalResponseNorm(spec["size"], alpha=spec["alpha"], beta=spec["beta"], k=spec["k"])
    if t == "flatten":
        return nn.Flatten(1)
    if t == "linear":
        return nn.Linear(spec["in_features"], spec["out_features"], bias=spec["bias"])
    if t == "dropout":
        return nn.Dropout(spec["p"])
    raise ValueError(f"peer.py does not build layer type {t!r} ({spec['name']})")


def build(arch, state):
    model = nn.Sequential(OrderedDict((spec["name"], make_layer(spec)) for spec in arch))
    model.load_state_dict(state, strict=True)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def blas_library():
    """The BLAS shared library this process loaded (Debian's python3-torch calls libblas.so.3 for Linear layers)."""
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "blas" in line.split()[-1].rsplit("/", 1)[-1]}
        return ", ".join(sorted(libs)) or "none loaded"
    except OSError:
        return "unknown"


def deconv_hook(module, grad_input, grad_output):
    # Captum's Deconvolution: on the way down, a ReLU passes relu(grad_output), whatever its forward input was.
    return (torch.relu(grad_output[0]),)


class Peer:
    def __init__(self):
        self.tensors = {}
        self.model = None
        self.trunk = None

    def setup(self, msg):
        torch.set_num_threads(int(msg["threads"]))
        self.model = self.trunk = None
        self.tensors = {}
        state = {k: torch.from_numpy(np.load(p)) for k, p in msg["weights"].items()}
        self.model = build(msg["arch"], state)
        # A copy whose parameters take gradients, for the train step.
        self.trainable = build(msg["arch"], state)
        for p in self.trainable.parameters():
            p.requires_grad_(True)
        # The deconvnet copy: same weights, a full backward hook on every ReLU (what Captum registers), cut after
        # the projected layer so that its forward is the forward to that layer.
        deconv = build(msg["arch"], state)
        for m in deconv.modules():
            if isinstance(m, nn.ReLU):
                m.register_full_backward_hook(deconv_hook)
        cut = [spec["name"] for spec in msg["arch"]].index(msg["layer"]) + 1
        self.trunk = deconv[:cut]
        for name, p in msg["tensors"].items():
            self.tensors[name] = torch.from_numpy(np.load(p))
        # Leaf copies of the inputs that autograd differentiates with respect to.
        self.leaves = {k: v.detach().clone().requires_grad_(True) for k, v in self.tensors.items() if k.startswith("x")}
        return {
            "ok": True,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "mkldnn": torch.backends.mkldnn.is_available(),
            "blas": blas_library(),
        }

    def forward(self, msg):
        x = self.tensors[msg["input"]]
        with torch.no_grad():
            return self.model(x)

    def project(self, msg):
        # Forward to the layer, seed = one-hot mask times the activation, autograd down to the pixels through the
        # hooked ReLUs, LRN (true gradient), max pools (to their argmax) and convs.
        x = self.leaves[msg["input"]]
        a = self.trunk(x)
        seed = self.tensors[msg["mask"]] * a.detach()
        (g,) = torch.autograd.grad(a, x, grad_outputs=seed)
        return g

    def project_max(self, msg):
        # The same, with the unit found here: the largest activation of one feature map of image 0.
        x = self.leaves[msg["input"]]
        a = self.trunk(x)
        fmap = a.detach()[0, int(msg["feature"])].reshape(-1)
        i = int(torch.argmax(fmap))
        seed = torch.zeros_like(a)
        seed[0, int(msg["feature"])].view(-1)[i] = fmap[i]
        (g,) = torch.autograd.grad(a, x, grad_outputs=seed)
        self.last_unit = i
        return g

    def train_step(self, msg):
        # Eval mode (dropout off) like convscope's step without masks: forward, mean cross-entropy, every gradient.
        # With "float64" (untimed checks only), the same step in double precision: the reference for gradients.
        x = self.tensors[msg["input"]]
        labels = self.tensors[msg["labels"]].long()
        model = self.trainable
        if msg.get("float64"):
            model = copy.deepcopy(self.trainable).double()
            x = x.double()
        model.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), labels)
        loss.backward()
        self.last_loss = float(loss)
        return dict(model.named_parameters())["conv1.weight"].grad

    def run(self, msg):
        work = getattr(self, msg["work"])
        t0 = time.perf_counter()
        out = work(msg)
        ms = (time.perf_counter() - t0) * 1000
        reply = {"ms": ms}
        if msg.get("out"):
            np.save(msg["out"], out.detach().numpy().astype(np.float32))
        if msg["work"] == "project_max":
            reply["unit"] = self.last_unit
        if msg["work"] == "train_step":
            reply["loss"] = self.last_loss
        return reply


def serve(peer):
    """The line protocol bench/peer.ts speaks: one JSON request per line on stdin, one JSON reply per line."""
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        msg = {}
        try:
            msg = json.loads(line)
            cmd = msg["cmd"]
            if cmd == "quit":
                reply = {"ok": True}
            elif cmd == "setup":
                reply = peer.setup(msg)
            elif cmd == "run":
                reply = peer.run(msg)
            else:
                reply = {"error": f"unknown command {cmd!r}"}
        except Exception as e:  # report to the caller instead of dying silently
            reply = {"error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        if msg.get("cmd") == "quit":
            break


def main():
    serve(Peer())


if __name__ == "__main__":
    main()
