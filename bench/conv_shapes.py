#!/usr/bin/env python3
"""Prints the Conv layers of an ONNX model, in graph order, as lines of the `convlayers`
example (`n c h w m c_g kh kw sh sw pad_top pad_left pad_bottom pad_right group`), so that a
model's convolutions can be timed one after another as the model runs them (each layer's
weights then come from memory, as inside the model, not from the cache).

    python3 bench/conv_shapes.py MODEL.onnx [--filter EXPR] > shapes.txt
    CPUTIME=1 THREADS=1 target/release/examples/convlayers shapes.txt 50

`--filter` keeps the layers for which a Python expression over n, c, h, w, m, cg, kh, kw,
sh, sw, group is true (e.g. `kh == 1 and m < 64`); the others are still printed, commented
out, unless `--only` is given.
"""

import argparse
import sys

import onnx
from onnx import shape_inference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--filter", help="Python expression over the layer's fields")
    ap.add_argument("--only", action="store_true", help="print the filtered layers only")
    ap.add_argument("--shape", help="the first input's dims, for models with dynamic ones (e.g. 1,3,640,640)")
    args = ap.parse_args()
    model = onnx.load(args.model)
    if args.shape:
        dims_in = model.graph.input[0].type.tensor_type.shape.dim
        for d, v in zip(dims_in, (int(x) for x in args.shape.split(",")), strict=True):
            d.Clear()
            d.dim_value = v
    model = shape_inference.infer_shapes(model)
    g = model.graph
    dims = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            dims[vi.name] = [d.dim_value for d in t.shape.dim]
    # Weights are initializers, or Constant nodes (paddle2onnx exports).
    inits = {i.name: list(i.dims) for i in g.initializer}
    for node in g.node:
        if node.op_type == "Constant":
            for at in node.attribute:
                if at.name == "value":
                    inits[node.output[0]] = list(at.t.dims)
    for node in g.node:
        if node.op_type != "Conv":
            continue
        x, w = dims.get(node.input[0]), inits.get(node.input[1])
        if not x or not w or len(x) != 4 or len(w) != 4:
            print(f"# {node.name}: shapes unknown", file=sys.stderr)
            continue
        a = {at.name: onnx.helper.get_attribute_value(at) for at in node.attribute}
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            print(f"# {node.name}: auto_pad not resolved", file=sys.stderr)
            continue
        if list(a.get("dilations", [1, 1])) != [1, 1]:
            print(f"# {node.name}: dilated, not expressible", file=sys.stderr)
            continue
        sh, sw = a.get("strides", [1, 1])
        pt, pl, pb, pr = a.get("pads", [0, 0, 0, 0])
        group = a.get("group", 1)
        n, c, h, wd = x
        m, cg, kh, kw = w
        fields = dict(n=n, c=c, h=h, w=wd, m=m, cg=cg, kh=kh, kw=kw, sh=sh, sw=sw, group=group)
        keep = args.filter is None or eval(args.filter, {}, fields)  # noqa: S307 (a local tool)
        if not keep and args.only:
            continue
        line = f"{n} {c} {h} {wd} {m} {cg} {kh} {kw} {sh} {sw} {pt} {pl} {pb} {pr} {group}"
        print(line if keep else f"# {line}")


if __name__ == "__main__":
    main()
