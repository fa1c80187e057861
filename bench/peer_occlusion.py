#!/usr/bin/env python3
"""PyTorch peer of bench/occlusion.ts: Captum's Occlusion loop on the same ZFNet, weights and input, in the same run.

Captum is not installed here (Debian has no package for it), so this is its algorithm written out the way
captum.attr.Occlusion runs it (FeatureAblation with sliding-window masks): windows ceil((D-W)/S)+1 per axis from 0,
the last clipped; per batch of `batch` windows, the ablated inputs input * (1 - mask) + baseline * mask go through
the model under no_grad; attribution = sum over windows of (out_t(original) - out_t(ablated)) * mask, divided by the
number of windows covering each pixel. The model is bench/peer.py's nn.Sequential with convscope's layer names.

Protocol (one JSON object per line on stdin, one reply per line on stdout, as bench/peer.ts expects):
  {"cmd": "setup", "threads": 2, "arch": [...], "weights": "/tmp/w.f32", "manifest": [["conv1.weight", [96, 3, 7, 7]], ...],
   "input": "/tmp/x.f32", "shape": [1, 3, 224, 224]}                    -> {"ok": true, "torch": ..., "threads": ...}
  {"cmd": "run", "window": 50, "stride": 8, "target": 3, "batch": 32, "out": "/tmp/a.npy"?}
      -> {"ms": wall time of the whole attribution, "positions": n}; with "out", saves the attribution after timing.
  {"cmd": "quit"}
"""
import json
import math
import sys
import time

import numpy as np
import torch

from peer import build, serve


def captum_occlusion(model, x, window, stride, target, batch):
    """Captum's Occlusion on input x [1, C, H, W], baseline 0: the attribution and the number of window positions."""
    _, c, h, w = x.shape
    ys = [i * stride for i in range(math.ceil((h - window) / stride) + 1)]
    xs = [i * stride for i in range(math.ceil((w - window) / stride) + 1)]
    starts = [(y, xx) for y in ys for xx in xs]
    total = torch.zeros_like(x[0])
    weights = torch.zeros_like(x[0])
    with torch.no_grad():
        initial = model(x)[0, target]
        for i in range(0, len(starts), batch):
            chunk = starts[i:i + batch]
            mask = torch.zeros((len(chunk), c, h, w), dtype=x.dtype)
            for j, (y, xx) in enumerate(chunk):
                mask[j, :, y:y + window, xx:xx + window] = 1
            ablated = x * (1 - mask)  # + baseline (0) * mask
            diff = initial - model(ablated)[:, target]
            total += (diff.reshape(-1, 1, 1, 1) * mask).sum(dim=0)
            weights += mask.sum(dim=0)
    return (total / weights).unsqueeze(0), len(starts)


class OcclusionPeer:
    def setup(self, msg):
        torch.set_num_threads(int(msg["threads"]))
        flat = np.fromfile(msg["weights"], dtype="<f4")
        state, offset = {}, 0
        for key, shape in msg["manifest"]:
            n = int(np.prod(shape))
            state[key] = torch.from_numpy(flat[offset:offset + n].reshape(shape).copy())
            offset += n
        if offset != flat.size:
            raise ValueError(f"weights file holds {flat.size} floats, the manifest {offset}")
        self.model = build(msg["arch"], state)
        self.input = torch.from_numpy(np.fromfile(msg["input"], dtype="<f4").reshape(msg["shape"]).copy())
        return {"ok": True, "torch": torch.__version__, "threads": torch.get_num_threads(),
                "interop_threads": torch.get_num_interop_threads(), "mkldnn": torch.backends.mkldnn.is_available()}

    def occlusion(self, window, stride, target, batch):
        return captum_occlusion(self.model, self.input, window, stride, target, batch)

    def run(self, msg):
        t0 = time.perf_counter()
        attribution, n = self.occlusion(int(msg["window"]), int(msg["stride"]), int(msg["target"]), int(msg["batch"]))
        ms = (time.perf_counter() - t0) * 1000
        if msg.get("out"):
            np.save(msg["out"], attribution.numpy().astype(np.float32))
        return {"ms": ms, "positions": n}


def main():
    serve(OcclusionPeer())


if __name__ == "__main__":
    main()
