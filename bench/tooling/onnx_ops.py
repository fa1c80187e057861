#!/usr/bin/python3
"""Survey ONNX graphs: op types with counts, opset, size and the patterns a DAG importer must handle.

Usage (from the repository root, Debian's /usr/bin/python3 with python3-onnx):

    /usr/bin/python3 bench/tooling/onnx_ops.py .cache/torchvision/*-224/model.onnx
    /usr/bin/python3 bench/tooling/onnx_ops.py --table .cache/torchvision/*-224 /work/shared/fixtures/graph/*/
    /usr/bin/python3 bench/tooling/onnx_ops.py --json out.json DIR_OR_ONNX ...

Each argument is a .onnx file or a folder (every *.onnx in it). For each model it prints the op
counts, opset, file size and a pattern report: constant subgraphs (nodes computable from
initializers and Constant nodes alone), Shape-dependent nodes, Pad / Clip / HardSigmoid parameters,
SiLU (Sigmoid·Mul of the same tensor) and broadcast Mul (squeeze-excite), GlobalAveragePool vs
ReduceMean, Flatten vs Reshape, Concat and Add fan-in, MaxPool/AveragePool attributes (ceil_mode,
pads), grouped/depthwise/dilated Conv, BatchNormalization, Dropout/Identity, tensors read by more
than one node (branch points), and the node naming scheme. If a modules.json (written by
export_torchvision.py: {module path: class name}) sits beside the .onnx, the module path recovered
from every node name is checked against the real modules, and modules without any node are listed.

``--table`` prints only one compact markdown table of op counts (models as rows);
``--json FILE`` also writes everything as JSON.

Module path recovery from a node name such as ``/layer1/layer1.0/relu_1/Relu`` or
``/features/features.1/block/block.0/block.0.2/HardSwish`` (torch 1.13 scoped names):
drop the leading '' and the last segment (op type, maybe with ``_N``); walk the scope segments:
a segment that starts with the previous segment plus '.' (a numbered child of a Sequential:
``layer1`` -> ``layer1.0``, ``block.0`` -> ``block.0.2``) replaces that previous segment, any other
segment is appended with '.'. A trailing ``_N`` on a segment marks the N+1-th call of the same
module (``relu_1``); it is stripped when the name with it is not a module.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import sys

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference


def attrs(node) -> dict:
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        if isinstance(v, onnx.TensorProto):
            v = numpy_helper.to_array(v).tolist()
        out[a.name] = v
    return out


def scope_segments(name: str):
    """('/a/a.0/conv1/Conv_1') -> (['a', 'a.0', 'conv1'], 'Conv_1'); None if not a scoped name."""
    if not name.startswith("/"):
        return None
    parts = name.split("/")[1:]
    return parts[:-1], parts[-1]


def recover(segments, modules=None) -> tuple[str, bool]:
    """Module path from scope segments; returns (path, whether a call suffix _N was stripped)."""
    comps: list[str] = []
    prev = None
    for seg in segments:
        if prev is not None and seg.startswith(prev + "."):
            # 'layer1' then 'layer1.0': the new segment extends the previous one
            comps[-1] = seg
        else:
            comps.append(seg)
        prev = seg
    path = ".".join(comps)
    if modules is not None and path and path not in modules:
        fixed = ".".join(re.sub(r"_\d+$", "", c) for c in ".".join(comps).split("."))
        if fixed in modules:
            return fixed, True
    return path, False


def analyse(path: str) -> dict:
    model = onnx.load(path, load_external_data=False)
    g = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    inits = {i.name: i for i in g.initializer}
    graph_inputs = [i.name for i in g.input if i.name not in inits]
    nodes = list(g.node)
    ops = collections.Counter(n.op_type for n in nodes)
    producer = {o: n for n in nodes for o in n.output}
    consumers = collections.defaultdict(list)
    for n in nodes:
        for i in n.input:
            if i:
                consumers[i].append(n)

    # shapes
    shapes = {}
    try:
        inferred = shape_inference.infer_shapes(model)
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]
            shapes[vi.name] = dims
    except Exception as e:  # shape inference is best effort
        shapes["__error__"] = str(e)
    for name, t in inits.items():
        shapes[name] = list(t.dims)

    # constant subgraphs: nodes whose every input is an initializer or another constant node's output
    const = set(inits)
    const_nodes = []
    for n in nodes:  # ONNX graphs are topologically sorted
        if all((not i) or i in const for i in n.input):
            const.update(n.output)
            const_nodes.append(n)
    const_ops = collections.Counter(n.op_type for n in const_nodes)

    def src(name):
        if name in inits:
            return "initializer"
        p = producer.get(name)
        if p is None:
            return "graph input" if name in graph_inputs else "?"
        return ("const " if name in const else "") + p.op_type

    def const_value(name):
        if name in inits:
            return numpy_helper.to_array(inits[name])
        p = producer.get(name)
        if p is not None and p.op_type == "Constant":
            return np.asarray(attrs(p)["value"])
        return None

    pat: dict = {}
    pat["constant_subgraph_nodes"] = dict(const_ops)
    # Shape-dependent subgraphs that read activations (not foldable at load time)
    pat["shape_nodes_on_activations"] = sum(1 for n in nodes if n.op_type == "Shape" and n.input[0] not in const)

    pads = []
    for n in nodes:
        if n.op_type == "Pad":
            a = attrs(n)
            pv = const_value(n.input[1]) if len(n.input) > 1 else a.get("pads")
            pads.append({"name": n.name, "mode": a.get("mode", "constant"), "pads_from": src(n.input[1]) if len(n.input) > 1 else "attribute",
                         "pads_chain": chain(n.input[1], producer, inits) if len(n.input) > 1 else None,
                         "pads": None if pv is None else np.asarray(pv).tolist()})
    pat["pad"] = pads

    clips = collections.Counter()
    for n in nodes:
        if n.op_type == "Clip":
            a = attrs(n)
            lo = const_value(n.input[1]) if len(n.input) > 1 and n.input[1] else a.get("min")
            hi = const_value(n.input[2]) if len(n.input) > 2 and n.input[2] else a.get("max")
            how = "inputs from " + ",".join(sorted({src(i) for i in n.input[1:] if i})) if len(n.input) > 1 else "attributes"
            clips[f"min={None if lo is None else float(lo)} max={None if hi is None else float(hi)} ({how})"] += 1
    pat["clip"] = dict(clips)
    pat["hardsigmoid"] = dict(collections.Counter(json.dumps(attrs(n), sort_keys=True) for n in nodes if n.op_type == "HardSigmoid"))

    silu = 0
    mul_kinds = collections.Counter()
    for n in nodes:
        if n.op_type != "Mul":
            continue
        a, b = n.input[0], n.input[1]
        pa, pb = producer.get(a), producer.get(b)
        if (pa is not None and pa.op_type == "Sigmoid" and pa.input[0] == b) or (pb is not None and pb.op_type == "Sigmoid" and pb.input[0] == a):
            silu += 1
            continue
        sa, sb = shapes.get(a), shapes.get(b)
        kind = "broadcast" if sa and sb and sa != sb else ("same shape" if sa and sb else "unknown shape")
        desc = f"{kind} {sa}x{sb}" if kind == "broadcast" else kind
        gate = "/".join(sorted({p.op_type for p in (pa, pb) if p is not None and p.op_type in ("Sigmoid", "HardSigmoid")}))
        mul_kinds[(desc if kind != "broadcast" else "broadcast [N,C,1,1]x[N,C,H,W]" if any(s[2:] == [1, 1] for s in (sa, sb)) else desc) + (f" gate={gate}" if gate else "")] += 1
    pat["silu_sigmoid_mul"] = silu
    pat["other_mul"] = dict(mul_kinds)

    pat["reduce_mean"] = [attrs(n) for n in nodes if n.op_type == "ReduceMean"]
    pat["global_average_pool"] = ops["GlobalAveragePool"]
    pat["flatten"] = dict(collections.Counter(json.dumps(attrs(n)) for n in nodes if n.op_type == "Flatten"))
    pat["reshape"] = [{"name": n.name, "shape_from": src(n.input[1]), "shape": (lambda v: None if v is None else v.tolist())(const_value(n.input[1]))} for n in nodes if n.op_type == "Reshape"]

    def hist(op):
        return dict(sorted(collections.Counter(len([i for i in n.input if i]) for n in nodes if n.op_type == op).items()))

    pat["concat_fan_in"] = hist("Concat")
    pat["concat_axes"] = sorted({attrs(n).get("axis") for n in nodes if n.op_type == "Concat"})
    pat["concat_single_input"] = sum(1 for n in nodes if n.op_type == "Concat" and len(n.input) == 1)
    pat["add_fan_in"] = hist("Add")
    pat["add_with_constant"] = sum(1 for n in nodes if n.op_type == "Add" and any(i in const for i in n.input))

    def pool(op):
        c = collections.Counter()
        for n in nodes:
            if n.op_type == op:
                a = attrs(n)
                c[json.dumps({k: a[k] for k in sorted(a)})] += 1
        return dict(c)

    pat["maxpool"] = pool("MaxPool")
    pat["averagepool"] = pool("AveragePool")

    conv = collections.Counter()
    for n in nodes:
        if n.op_type != "Conv":
            continue
        a = attrs(n)
        w = shapes.get(n.input[1])
        group = a.get("group", 1)
        cin = shapes.get(n.input[0], [None, None])[1] if shapes.get(n.input[0]) else None
        tags = []
        if group > 1:
            tags.append("depthwise" if cin == group and w and w[0] == group else f"grouped g={group}")
        if any(d != 1 for d in a.get("dilations", [1])):
            tags.append(f"dilated {a['dilations']}")
        p = a.get("pads", [0, 0, 0, 0])
        if p[: len(p) // 2] != p[len(p) // 2 :]:
            tags.append(f"asymmetric pads {p}")
        if a.get("auto_pad", "NOTSET") not in ("NOTSET",):
            tags.append(f"auto_pad {a['auto_pad']}")
        if len(n.input) < 3 or not n.input[2]:
            tags.append("no bias")
        conv[", ".join(tags) or "plain"] += 1
    pat["conv"] = dict(conv)
    pat["batchnorm"] = dict(collections.Counter(
        f"after {producer[n.input[0]].op_type if n.input[0] in producer else 'input'}; {json.dumps(attrs(n), sort_keys=True)}" for n in nodes if n.op_type == "BatchNormalization"))
    pat["dropout"] = ops["Dropout"]
    pat["identity"] = [f"{n.name}: {n.input[0]} ({src(n.input[0])}) -> {n.output[0]}" for n in nodes if n.op_type == "Identity"]
    pat["gemm"] = dict(collections.Counter(json.dumps(attrs(n), sort_keys=True) for n in nodes if n.op_type == "Gemm"))
    branch = [t for t, cs in consumers.items() if len(cs) > 1 and t not in const]
    pat["branch_tensors"] = len(branch)
    pat["max_fan_out"] = max((len(consumers[t]) for t in branch), default=1)

    # naming
    modules = None
    mfile = os.path.join(os.path.dirname(path), "modules.json")
    if os.path.exists(mfile):
        with open(mfile) as f:
            modules = json.load(f)
    unscoped = [n.name for n in nodes if scope_segments(n.name) is None]
    opname_ok = sum(1 for n in nodes if scope_segments(n.name) and re.fullmatch(re.escape(n.op_type) + r"(_\d+)?", scope_segments(n.name)[1]))
    out_ok = sum(1 for n in nodes for k, o in enumerate(n.output) if o == f"{n.name}_output_{k}")
    naming = {
        "nodes": len(nodes),
        "scoped": len(nodes) - len(unscoped),
        "unscoped_examples": unscoped[:5],
        "last_segment_is_op_type": opname_ok,
        "outputs_named_node_output_k": out_ok,
        "outputs_total": sum(len(n.output) for n in nodes),
        "initializers": len(inits),
        "initializers_onnx_renamed": sum(1 for k in inits if k.startswith("onnx::")),
        "examples": [n.name for n in nodes if n.op_type not in ("Constant",)][:3],
    }
    if modules is not None:
        leaf, container, root, suffixed, bad = 0, 0, 0, 0, []
        seen_modules = set()
        for n in nodes:
            s = scope_segments(n.name)
            if s is None:
                continue
            p, strip = recover(s[0], modules)
            suffixed += strip
            if p == "":
                root += 1
            elif p in modules:
                seen_modules.add(p)
                is_leaf = not any(m.startswith(p + ".") for m in modules)
                leaf += is_leaf
                container += not is_leaf
            else:
                bad.append(n.name)
        # a module counts as covered if it or a descendant has a node
        covered = {m for m in modules if any(s == m or s.startswith(m + ".") for s in seen_modules)}
        missing = collections.Counter(modules[m] for m in modules if m not in covered)
        naming.update({
            "recovered_leaf_module": leaf,
            "recovered_container_functional": container,
            "root_scope_functional": root,
            "call_suffix_stripped": suffixed,
            "unresolved": bad[:8],
            "unresolved_count": len(bad),
            "modules_without_nodes": dict(missing),
        })

    # module -> tensor carrying its output: the last node (graph order) of the module's first call
    # (checked against a fixture index.json, whose names refer to model.onnx only)
    index_file = os.path.join(os.path.dirname(path), "index.json")
    if os.path.basename(path) == "model.onnx" and os.path.exists(index_file):
        with open(index_file) as f:
            idx = json.load(f)
        want = {m: v["onnx_output"] for m, v in (idx.get("modules") or {}).items() if isinstance(v, dict) and "onnx_output" in v}
        if want:
            got = module_outputs(nodes, want)
            naming["module_output_rule_checked"] = len(want)
            naming["module_output_rule_mismatches"] = {m: [want[m], got.get(m)] for m in want if got.get(m) != want[m]}

    return {
        "file": path,
        "bytes": os.path.getsize(path),
        "opset": opset,
        "producer": f"{model.producer_name} {model.producer_version}",
        "inputs": {i: shapes.get(i) for i in graph_inputs},
        "outputs": {o.name: shapes.get(o.name) for o in g.output},
        "nodes": len(nodes),
        "ops": dict(sorted(ops.items())),
        "patterns": pat,
        "naming": naming,
        "shape_inference_error": shapes.get("__error__"),
    }


def module_outputs(nodes, module_names) -> dict:
    """For each module path, the first output of the last node of its first call (exact scope,
    no _N call suffix) or of anything nested in it."""
    raw = []
    for n in nodes:
        sc = scope_segments(n.name)
        raw.append(recover(sc[0])[0] if sc else None)
    out = {}
    for m in module_names:
        last = None
        for n, p in zip(nodes, raw):
            if p is not None and (p == m or p.startswith(m + ".")):
                last = n
        if last is not None:
            out[m] = last.output[0]
    return out


def chain(name, producer, inits, depth=0):
    """The op types feeding a tensor, as a compact string (for Pad's pads input)."""
    if name in inits:
        return "init"
    p = producer.get(name)
    if p is None or depth > 8:
        return "input" if p is None else "..."
    ins = [chain(i, producer, inits, depth + 1) for i in p.input if i]
    return p.op_type + ("(" + ",".join(ins) + ")" if ins else "")


def label(path: str) -> str:
    d = os.path.basename(os.path.dirname(os.path.abspath(path)))
    f = os.path.basename(path)
    return d if f == "model.onnx" else f"{d}/{f}"


def expand(args):
    files = []
    for a in args:
        if os.path.isdir(a):
            files += sorted(glob.glob(os.path.join(a, "*.onnx")))
        else:
            files.append(a)
    return files


def print_table(results):
    all_ops = sorted({o for r in results for o in r["ops"]})
    print("| model | opset | MB | nodes | " + " | ".join(all_ops) + " |")
    print("|---|---|---|---|" + "---|" * len(all_ops))
    for r in results:
        cells = [str(r["ops"].get(o, "")) for o in all_ops]
        print(f"| {label(r['file'])} | {r['opset']} | {r['bytes'] / 1e6:.1f} | {r['nodes']} | " + " | ".join(cells) + " |")


def print_report(r):
    print(f"## {label(r['file'])}")
    print(f"opset {r['opset']}, {r['bytes'] / 1e6:.2f} MB, {r['nodes']} nodes, inputs {r['inputs']}, outputs {r['outputs']}")
    print("ops: " + ", ".join(f"{k} {v}" for k, v in r["ops"].items()))
    for k, v in r["patterns"].items():
        if v in (0, {}, [], None):
            continue
        print(f"  {k}: {json.dumps(v) if not isinstance(v, (int, str)) else v}")
    print("  naming: " + json.dumps(r["naming"]))
    if r["shape_inference_error"]:
        print("  shape inference error: " + r["shape_inference_error"])
    print()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("paths", nargs="+", help=".onnx files or folders holding them")
    p.add_argument("--table", action="store_true", help="only a compact markdown table of op counts")
    p.add_argument("--json", metavar="FILE", help="also write all results as JSON")
    args = p.parse_args(argv)
    results = [analyse(f) for f in expand(args.paths)]
    if args.table:
        print_table(results)
    else:
        for r in results:
            print_report(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
