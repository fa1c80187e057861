#!/usr/bin/env python3
"""PyTorch peer of bench/attribution.ts: Captum 0.7's Grad-CAM, Integrated Gradients and SmoothGrad, timed in the
same run as convscope on the same model, weights and input.

Captum is not installed here (Debian has no package for it), so each method is its algorithm written out the way
Captum runs it with default batching: LayerGradCam (a forward hook keeps the layer's output, torch.autograd.grad of
the target score to it, spatial mean of the gradients, weighted channel sum, relu, then
LayerAttribution.interpolate bilinear to the input); IntegratedGradients (internal_batch_size=None: every scaled
input in one batch, one backward of the summed target scores, the step weights, times input - baseline);
NoiseTunnel(Saliency) with nt_type='smoothgrad', nt_samples_batch_size=None (all noisy copies in one batch, noise
drawn with torch.normal inside the timed call) and abs=False, as convscope's plain SmoothGrad.

Protocol (one JSON object per line, as bench/peer.ts speaks):
  {"cmd": "setup", "threads": 2, "dir": "/tmp/...", "torchvision": "resnet18", "size": 224, "layer": "layer4"}
      builds a torchvision model (bench/tooling/export_torchvision.py's seeded weights) and writes DIR/model.onnx
  {"cmd": "setup", "threads": 2, "dir": "/tmp/...", "arch": [...], "weights": {...}, "layer": "relu5"}
      builds convscope's layer stack (bench/peer.py); either way DIR/x1.npy is the input, seeded
  {"cmd": "run", "work": "gradcam" | "ig" | "smoothgrad", "target": 3, "steps": 32, "samples": 16, "noise": 0.15,
   "given_noise": "/tmp/noise.npy"?, "out": "/tmp/out.npy"?}
      replies {"ms": ...}; with "out", saves the attribution after timing; with "given_noise", SmoothGrad adds that
      noise instead of drawing it (the agreement check); with "float64": true, computes in double precision (the
      reference the agreement check falls back on, untimed).
"""
import copy
import os
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tooling"))
from export_torchvision import build as build_torchvision  # noqa: E402

from peer import blas_library, build as build_stack, serve  # noqa: E402


def gauss_legendre(n):
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return list(0.5 * (1 + nodes)), list(0.5 * weights)


class AttributionPeer:
    def setup(self, msg):
        torch.set_num_threads(int(msg["threads"]))
        out = msg["dir"]
        if "torchvision" in msg:
            size = int(msg["size"])
            self.model = build_torchvision(msg["torchvision"], plain_init=False)
            g = torch.Generator().manual_seed(7)
            self.x = torch.randn(1, 3, size, size, generator=g)
            torch.onnx.export(self.model, (self.x,), os.path.join(out, "model.onnx"), input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        else:
            state = {k: torch.from_numpy(np.load(p)) for k, p in msg["weights"].items()}
            self.model = build_stack(msg["arch"], state)
            self.x = torch.from_numpy(np.load(msg["input"]))
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        np.save(os.path.join(out, "x1.npy"), self.x.numpy())
        self.layer_name = msg["layer"]
        self.model64 = None
        dict(self.model.named_modules())[self.layer_name]  # a missing module fails at setup
        return {
            "ok": True, "torch": torch.__version__, "numpy": np.__version__, "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(), "mkldnn": torch.backends.mkldnn.is_available(),
            "blas": blas_library(),
        }

    def precision(self, msg):
        """The model and input in the precision the request asks for."""
        if not msg.get("float64"):
            return self.model, self.x
        if self.model64 is None:
            self.model64 = copy.deepcopy(self.model).double()
        return self.model64, self.x.double()

    def gradcam(self, msg):
        target = int(msg["target"])
        saved = {}

        def keep(module, inputs, output):
            saved["a"] = output

        model, x = self.precision(msg)
        layer = dict(model.named_modules())[self.layer_name]
        handle = layer.register_forward_hook(keep)
        try:
            x = x.clone().requires_grad_(True)
            scores = model(x)
        finally:
            handle.remove()
        a = saved["a"]
        (g,) = torch.autograd.grad(scores[:, target].sum(), a)
        cam = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1, keepdim=True))
        return F.interpolate(cam, size=self.x.shape[2:], mode="bilinear", align_corners=False)

    def ig(self, msg):
        target, steps = int(msg["target"]), int(msg["steps"])
        model, x = self.precision(msg)
        alphas, weights = gauss_legendre(steps)
        baseline = torch.zeros_like(x)
        scaled = torch.cat([baseline + a * (x - baseline) for a in alphas], dim=0).requires_grad_(True)
        (g,) = torch.autograd.grad(model(scaled)[:, target].sum(), scaled)
        total = (g.reshape(steps, -1) * torch.tensor(weights, dtype=g.dtype).view(steps, 1)).sum(0)
        return total.reshape(x.shape) * (x - baseline)

    def smoothgrad(self, msg):
        target, samples = int(msg["target"]), int(msg["samples"])
        model, x = self.precision(msg)
        if msg.get("given_noise"):
            # Added in float32 as both sides do, then widened: the float64 reference sees the same noisy images.
            noisy = (self.x + torch.from_numpy(np.load(msg["given_noise"]))).to(x.dtype)
        else:
            sigma = float(msg["noise"]) * float(x.max() - x.min())
            noisy = x + torch.normal(0.0, sigma, size=(samples, *x.shape[1:]), dtype=x.dtype)
        noisy.requires_grad_(True)
        (g,) = torch.autograd.grad(model(noisy)[:, target].sum(), noisy)
        return g.mean(dim=0, keepdim=True)

    def run(self, msg):
        work = getattr(self, msg["work"])
        t0 = time.perf_counter()
        out = work(msg)
        reply = {"ms": (time.perf_counter() - t0) * 1000}
        if msg.get("out"):
            np.save(msg["out"], out.detach().numpy().astype(np.float32))
        return reply


if __name__ == "__main__":
    serve(AttributionPeer())
