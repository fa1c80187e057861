#!/usr/bin/env python3
"""PyTorch peer of bench/graph.ts: a torchvision model (seeded random weights, as bench/tooling/export_torchvision.py
builds it), timed in the same run as convscope on the ONNX files this peer exports from that very model.

Protocol (one JSON object per line, as bench/peer.ts speaks):
  {"cmd": "setup", "threads": 2, "model": "resnet18", "size": 224, "dir": "/tmp/...", "layer": "layer3",
   "batch": 32, "train_batch": 16}
      builds the model, writes DIR/model.onnx (eval export: BatchNorm folded, dynamic batch), DIR/model_bn.onnx
      (TrainingMode.PRESERVE: every BatchNormalization kept) and the inputs DIR/x.npy [batch], DIR/x1.npy [1],
      DIR/xt.npy [train_batch], DIR/labels.npy; replies the ONNX tensor that carries `layer`'s output.
  {"cmd": "run", "work": "forward" | "project" | "train_step" | "occlusion", ...}
      forward: eval logits of x.  project: Captum's Deconvolution rule (a backward hook on every nn.ReLU module,
      both calls of a reused one) from unit (feature, y, x) of `layer` on x1, seeded with its activation.
      train_step: train mode (BatchNorm on batch statistics), mean cross-entropy of xt, every gradient.
      occlusion: Captum's Occlusion loop on x1 (bench/peer_occlusion.py), baseline 0, batches of 32.
      Replies {"ms": ...}; with "out", saves the result after timing (train_step: the loss and conv1's gradient).
"""
import copy
import os
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tooling"))
from export_torchvision import build  # noqa: E402  the same seeded weights as the parity exports

from peer import blas_library, deconv_hook, serve  # noqa: E402
from peer_occlusion import captum_occlusion  # noqa: E402


def module_output_tensor(onnx_path, module):
    """The ONNX tensor a module writes that a node outside the module reads: its output (the exporter's scopes)."""
    import onnx

    graph = onnx.load(onnx_path).graph
    inside = lambda n: n.name.startswith(f"/{module.replace('.', '/')}/") or f"/{module}/" in n.name  # noqa: E731
    written = {o: n for n in graph.node if inside(n) for o in n.output}
    read_outside = [i for n in graph.node if not inside(n) for i in n.input if i in written]
    if not read_outside:
        raise ValueError(f"no ONNX tensor carries module {module!r}")
    return read_outside[-1]


class GraphPeer:
    def setup(self, msg):
        torch.set_num_threads(int(msg["threads"]))
        out = msg["dir"]
        size, batch, train_batch = int(msg["size"]), int(msg["batch"]), int(msg["train_batch"])
        model = build(msg["model"], plain_init=False)
        g = torch.Generator().manual_seed(7)
        self.x = torch.randn(batch, 3, size, size, generator=g)
        self.x1 = self.x[:1].clone()
        self.xt = self.x[:train_batch].clone()
        self.labels = torch.randint(0, 1000, (train_batch,), generator=g)
        for name, t in (("x", self.x), ("x1", self.x1), ("xt", self.xt)):
            np.save(os.path.join(out, f"{name}.npy"), t.numpy())
        np.save(os.path.join(out, "labels.npy"), self.labels.numpy().astype(np.float32))
        torch.onnx.export(model, (self.x1,), os.path.join(out, "model.onnx"), input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        torch.onnx.export(copy.deepcopy(model), (self.x1,), os.path.join(out, "model_bn.onnx"), input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.trainable = copy.deepcopy(model).train()
        for p in self.trainable.parameters():
            p.requires_grad_(True)
        # Deconvolution copy cut after `layer`: forward_hook on the layer stops nothing, so run the children in order.
        self.layer = msg["layer"]
        deconv = copy.deepcopy(model)
        for m in deconv.modules():
            if isinstance(m, nn.ReLU):
                m.inplace = False  # a full backward hook cannot wrap an in-place op (torchvision's ReLUs are)
                m.register_full_backward_hook(deconv_hook)
        names = [n for n, _ in deconv.named_children()]
        self.trunk = nn.Sequential(*[m for n, m in deconv.named_children()][: names.index(self.layer) + 1])
        return {
            "ok": True, "torch": torch.__version__, "numpy": np.__version__, "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(), "mkldnn": torch.backends.mkldnn.is_available(),
            "blas": blas_library(), "layer_tensor": module_output_tensor(os.path.join(out, "model.onnx"), self.layer),
        }

    def forward(self, msg):
        with torch.no_grad():
            return self.model(self.x)

    def project(self, msg):
        x = self.x1.clone().requires_grad_(True)
        a = self.trunk(x)
        seed = torch.zeros_like(a)
        f, y, xx = int(msg["feature"]), int(msg["y"]), int(msg["x"])
        seed[0, f, y, xx] = a.detach()[0, f, y, xx]
        (g,) = torch.autograd.grad(a, x, grad_outputs=seed)
        return g

    def train_step(self, msg):
        model = self.trainable
        model.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(self.xt), self.labels)
        loss.backward()
        self.last_loss = float(loss)
        return model.conv1.weight.grad

    def occlusion(self, msg):
        attribution, _ = captum_occlusion(self.model, self.x1, int(msg["window"]), int(msg["stride"]), int(msg["target"]), 32)
        return attribution

    def run(self, msg):
        work = getattr(self, msg["work"])
        t0 = time.perf_counter()
        out = work(msg)
        reply = {"ms": (time.perf_counter() - t0) * 1000}
        if msg["work"] == "train_step":
            reply["loss"] = self.last_loss
        if msg.get("out"):
            np.save(msg["out"], out.detach().numpy().astype(np.float32))
        return reply


if __name__ == "__main__":
    serve(GraphPeer())
