#!/usr/bin/python3
"""Export torchvision classifiers (random, seeded weights) to ONNX with stock torch.onnx.export.

Groundwork for importing DAG models (issue 12). Nothing is downloaded: every model is
built with ``weights=None`` and seeded random initialisation. Run with Debian's interpreter
(``/usr/bin/python3``: python3-torch 1.13, python3-torchvision 0.14, python3-onnx).

Usage (from the repository root):

    /usr/bin/python3 bench/tooling/export_torchvision.py                  # all nine at 224
    /usr/bin/python3 bench/tooling/export_torchvision.py --size 64        # small variants
    /usr/bin/python3 bench/tooling/export_torchvision.py --models resnet18,googlenet --force
    /usr/bin/python3 bench/tooling/export_torchvision.py OUT_DIR --bn-preserve   # keep BatchNormalization

Positional OUT_DIR defaults to ``.cache/torchvision/`` (git-ignored). Each export goes to
``OUT_DIR/<model>-<size>[-bn][-dyn][-opsetN][-plain]/``:

    model.onnx    torch.onnx.export(model.eval(), x, input_names=['input'], output_names=['logits'])
                  with the exporter's default opset (14 for torch 1.13) and do_constant_folding=True,
                  i.e. BatchNormalization folded into the preceding Conv (see --bn-preserve)
    input.npy     the fixed input, float32 [1, 3, size, size], torch.randn with generator seed 1234
    logits.npy    the eval-mode PyTorch logits of input.npy, float32 [1, 1000]
    modules.json  named_modules() of the PyTorch model: {"<path>": "<class name>"}, for checking
                  that module paths can be recovered from ONNX node names
    meta.json     model, size, opset, torch/torchvision versions, file size, op counts, export options

and ``OUT_DIR/index.json`` collects every meta.json (and failures, with their error message).

Weights: ``torch.manual_seed(0)`` before each constructor (so a model does not depend on which
others are exported), torchvision's own init. That init leaves every BatchNorm at weight 1, bias 0,
running mean 0, running var 1, which hides BN-folding bugs and, in the deeper nets (googlenet,
mobilenet_v2/v3, efficientnet_b0), lets the signal vanish so the logits ignore the input. So the
BatchNorm running statistics are then measured on a seeded 4x3x224x224 calibration batch (BN layers
in train mode with momentum=None, everything else in eval) and the BN affine parameters re-drawn
(weight U(0.5, 1.5), bias N(0, 0.1)); ``--plain-init`` skips both. meta.json records
``input_sensitivity`` = max|logits(input) - logits(other seeded input)| / max|logits(input)|
(0.03 to 0.95 here), i.e. how much a parity test on logits.npy can see.

Idempotent: an export whose model.onnx, input.npy and logits.npy all exist is skipped unless
``--force``. Sizes where the architecture cannot be exported (vgg11_bn below 224: its
AdaptiveAvgPool2d(7, 7) is only exportable when 7 divides the feature map) are recorded as
failures in index.json and the run carries on; the exit status is 1 if anything failed.

Other options: ``--bn-preserve`` exports with training=TrainingMode.PRESERVE and
do_constant_folding=False (every BatchNormalization kept, initializers named as in the
state_dict); ``--dynamic-batch`` adds dynamic_axes={'input': {0: 'batch'}, 'logits': {0: 'batch'}};
``--opset N`` overrides the default opset.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
import traceback

import numpy as np
import torch
import torchvision
from torch.onnx import _constants as onnx_constants

ALL_MODELS = [
    "resnet18",
    "resnet50",
    "vgg11_bn",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "squeezenet1_1",
    "densenet121",
    "googlenet",
]
MODEL_SEED = 0
BN_SEED = 1
INPUT_SEED = 1234
SENSITIVITY_SEED = 99
CALIB_BATCH = 4
CALIB_SIZE = 224
DEFAULT_OPSET = onnx_constants.ONNX_DEFAULT_OPSET  # 14 in torch 1.13


def build(name: str, plain_init: bool) -> torch.nn.Module:
    torch.manual_seed(MODEL_SEED)
    ctor = getattr(torchvision.models, name)
    if name == "googlenet":
        model = ctor(weights=None, aux_logits=False, init_weights=True)
    else:
        model = ctor(weights=None)
    if not plain_init:
        # BatchNorm: running statistics measured on a seeded calibration batch (so every BN
        # really normalises and the logits depend on the input), affine parameters re-drawn.
        bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if bns:
            g = torch.Generator().manual_seed(BN_SEED)
            calib = torch.randn(CALIB_BATCH, 3, CALIB_SIZE, CALIB_SIZE, generator=g)
            model.eval()
            for m in bns:
                m.reset_running_stats()
                m.momentum = None  # cumulative average: after one batch, exactly its statistics
                m.train()
            with torch.no_grad():
                model(calib)
            for m in bns:
                m.momentum = 0.1
                n = m.num_features
                with torch.no_grad():
                    m.weight.copy_(0.5 + torch.rand(n, generator=g))
                    m.bias.copy_(0.1 * torch.randn(n, generator=g))
    return model.eval()


def fixed_input(size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(INPUT_SEED)
    return torch.randn(1, 3, size, size, generator=g, dtype=torch.float32)


def export_tag(name: str, size: int, args) -> str:
    return (f"{name}-{size}" + ("-bn" if args.bn_preserve else "") + ("-dyn" if args.dynamic_batch else "")
            + (f"-opset{args.opset}" if args.opset else "") + ("-plain" if args.plain_init else ""))


def op_counts(path: str) -> dict[str, int]:
    import onnx

    m = onnx.load(path, load_external_data=False)
    return dict(sorted(collections.Counter(n.op_type for n in m.graph.node).items()))


def export_one(name: str, size: int, out_root: str, args) -> dict:
    tag = export_tag(name, size, args)
    out = os.path.join(out_root, tag)
    onnx_path = os.path.join(out, "model.onnx")
    files = [onnx_path, os.path.join(out, "input.npy"), os.path.join(out, "logits.npy")]
    meta_path = os.path.join(out, "meta.json")
    if not args.force and all(os.path.exists(f) for f in files) and os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        meta["skipped"] = True
        print(f"skip   {tag} (exists; --force to redo)")
        return meta

    model = build(name, args.plain_init)
    x = fixed_input(size)
    with torch.no_grad():
        logits = model(x)
        other = model(torch.randn(x.shape, generator=torch.Generator().manual_seed(SENSITIVITY_SEED)))
    sensitivity = float((logits - other).abs().max() / logits.abs().max())
    os.makedirs(out, exist_ok=True)
    opset = args.opset or DEFAULT_OPSET
    kwargs = dict(
        input_names=["input"],
        output_names=["logits"],
        opset_version=args.opset,  # None = exporter default
        do_constant_folding=not args.bn_preserve,
    )
    if args.bn_preserve:
        kwargs["training"] = torch.onnx.TrainingMode.PRESERVE
    if args.dynamic_batch:
        kwargs["dynamic_axes"] = {"input": {0: "batch"}, "logits": {0: "batch"}}
    t0 = time.time()
    tmp = onnx_path + ".tmp"
    try:
        torch.onnx.export(model, (x,), tmp, **kwargs)
    except Exception:
        if os.path.exists(tmp):
            os.remove(tmp)
        if not os.listdir(out):
            os.rmdir(out)
        raise
    os.replace(tmp, onnx_path)
    seconds = time.time() - t0
    np.save(os.path.join(out, "input.npy"), x.numpy())
    np.save(os.path.join(out, "logits.npy"), logits.numpy().astype(np.float32))
    with open(os.path.join(out, "modules.json"), "w") as f:
        json.dump({k: type(m).__name__ for k, m in model.named_modules() if k}, f, indent=0)

    import onnx

    proto = onnx.load(onnx_path, load_external_data=False)
    actual_opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    meta = {
        "model": name,
        "size": size,
        "dir": tag,
        "opset": actual_opset,
        "opset_requested": args.opset,
        "exporter_default_opset": DEFAULT_OPSET,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "onnx_bytes": os.path.getsize(onnx_path),
        "params": sum(p.numel() for p in model.parameters()),
        "nodes": len(proto.graph.node),
        "initializers": len(proto.graph.initializer),
        "ops": op_counts(onnx_path),
        "logits_shape": list(logits.shape),
        "logits_top5": logits[0].topk(5).indices.tolist(),
        "logits_absmax": float(logits.abs().max()),
        "logits_std": float(logits.std()),
        # max |logits(input) - logits(other seeded input)| / max |logits(input)|: how much a parity
        # test on logits.npy can see (a model whose logits ignore the input would score ~0)
        "input_sensitivity": sensitivity,
        "seeds": {"model": MODEL_SEED, "batchnorm": None if args.plain_init else BN_SEED, "input": INPUT_SEED, "sensitivity_input": SENSITIVITY_SEED},
        "batchnorm_init": "torchvision" if args.plain_init else f"running stats of a seeded {CALIB_BATCH}x3x{CALIB_SIZE}x{CALIB_SIZE} batch; weight U(0.5,1.5), bias N(0,0.1)",
        "export": {
            "do_constant_folding": not args.bn_preserve,
            "training": "PRESERVE" if args.bn_preserve else "EVAL",
            "dynamic_batch": args.dynamic_batch,
        },
        "export_seconds": round(seconds, 2),
    }
    assert actual_opset == opset, (actual_opset, opset)
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=1)
    print(f"export {tag}: opset {actual_opset}, {meta['onnx_bytes'] / 1e6:.1f} MB, {meta['nodes']} nodes, {seconds:.1f} s")
    return meta


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", nargs="?", default=".cache/torchvision/", help="output folder (default .cache/torchvision/)")
    p.add_argument("--models", default=",".join(ALL_MODELS), help="comma-separated subset of: " + ",".join(ALL_MODELS))
    p.add_argument("--size", type=int, default=224, help="input height = width (default 224)")
    p.add_argument("--force", action="store_true", help="re-export even if the files exist")
    p.add_argument("--bn-preserve", action="store_true", help="training=PRESERVE, do_constant_folding=False: keep BatchNormalization")
    p.add_argument("--dynamic-batch", action="store_true", help="dynamic batch axis on input and logits")
    p.add_argument("--opset", type=int, default=None, help=f"opset (default: exporter default, {DEFAULT_OPSET})")
    p.add_argument("--plain-init", action="store_true", help="keep torchvision's BatchNorm init (identity statistics)")
    args = p.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in ALL_MODELS]
    if unknown:
        p.error(f"unknown model(s): {', '.join(unknown)}")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    os.makedirs(args.out, exist_ok=True)
    index_path = os.path.join(args.out, "index.json")
    index = {}
    if os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
    failed = 0
    for name in models:
        tag = export_tag(name, args.size, args)
        try:
            meta = export_one(name, args.size, args.out, args)
            meta.pop("skipped", None)
            index[tag] = meta
        except Exception as e:  # record and carry on
            failed += 1
            msg = f"{type(e).__name__}: {e}".strip().splitlines()
            index[tag] = {"model": name, "size": args.size, "failed": " ".join(msg)[:500]}
            print(f"FAIL   {tag}: {index[tag]['failed']}", file=sys.stderr)
            if os.environ.get("EXPORT_TRACEBACK"):
                traceback.print_exc()
        with open(index_path, "w") as f:
            json.dump(dict(sorted(index.items())), f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
