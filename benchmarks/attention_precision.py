"""Low-precision accuracy of the rel-pos attention path, gradients included.

    python benchmarks/attention_precision.py                       # CPU, NEST-L shapes
    python benchmarks/attention_precision.py --device cuda --dtype bfloat16 float16

Why: NeMo PR #15714 reports FastConformer training loss exploding once attention went through
fused SDPA with an additive relative-position bias, traced to the gradients of the bias. nestkit
uses exactly that formulation (``RelPositionMultiHeadAttention``), so this script measures it.

For one NEST-L attention layer (d_model 512, 8 heads) on a padded batch it computes the output
and the gradients of every input and parameter three ways: a float64 reference written out
explicitly (scores = content + shifted position term, softmax, weighted values), the same
explicit formula under autocast, and nestkit's SDPA + bias module under autocast. It prints
one JSON row per (dtype, quantity): the relative error of each low-precision path against the
reference. Matching errors mean the fused path is as accurate as the textbook one at that
precision; a gradient error far above the explicit path's is the failure PR #15714 describes.
Run it on the GPU to test the CUDA kernels (the CPU has other SDPA kernels).
"""

from __future__ import annotations

import argparse
import json
import math

import torch
from torch import Tensor

from nestkit.components.attention import RelPositionMultiHeadAttention, RelPositionalEncoding, rel_shift


def explicit_attention(m: RelPositionMultiHeadAttention, x: Tensor, pos_emb: Tensor, key_pad: Tensor) -> Tensor:
    """The rel-pos attention as NeMo writes it: materialised scores, masked softmax, values."""
    b, t, _ = x.shape
    q, k, v = m.qkv(x).view(b, t, 3, m.h, m.d_k).permute(2, 0, 3, 1, 4)
    p = m.linear_pos(pos_emb).view(1, -1, m.h, m.d_k).transpose(1, 2)
    content = torch.matmul(q + m.pos_bias_u[:, None, :], k.transpose(-2, -1))
    position = rel_shift(torch.matmul(q + m.pos_bias_v[:, None, :], p.transpose(-2, -1)))
    scores = (content + position) / math.sqrt(m.d_k)
    scores = scores.masked_fill(key_pad[:, None, None, :], -10000.0)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
    weights = weights.masked_fill(key_pad[:, None, None, :], 0.0)
    out = torch.matmul(weights, v).transpose(1, 2).reshape(b, t, m.h * m.d_k)
    out = out.masked_fill(key_pad[:, :, None], 0.0)
    return m.linear_out(out)


def _run(path: str, m: RelPositionMultiHeadAttention, x: Tensor, pos: Tensor, pad: Tensor, grad_out: Tensor,
         dtype: torch.dtype | None) -> dict[str, Tensor]:
    """Output and gradients (x, then each parameter) of one path, as float64."""
    m.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    autocast = torch.autocast(x.device.type, dtype=dtype) if dtype is not None else torch.autocast(x.device.type, enabled=False)
    with autocast:
        out = m(x, pos, pad) if path == "sdpa_bias" else explicit_attention(m, x, pos, pad)
    out.backward(grad_out.to(out.dtype))
    found = {"output": out.detach().double(), "grad x": x.grad.double()}
    for name, p in m.named_parameters():
        found[f"grad {name}"] = p.grad.double()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", nargs="+", default=["bfloat16"], choices=["bfloat16", "float16"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=200, help="encoder frames (16 s at 80 ms)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    d_model, heads = 512, 8
    m = RelPositionMultiHeadAttention(heads, d_model, dropout_att=0.0, use_bias=True).to(device)
    with torch.no_grad():  # trained-looking position biases, not the zeros of a fresh layer
        m.pos_bias_u.normal_(0, 0.1)
        m.pos_bias_v.normal_(0, 0.1)
    enc = RelPositionalEncoding(d_model, 5000, xscale=math.sqrt(d_model), dropout=0.0, dropout_emb=0.0).to(device)
    x = torch.randn(args.batch, args.frames, d_model, device=device)  # a LayerNorm output, as in the block
    _, pos = enc(x)
    lengths = torch.randint(args.frames // 2, args.frames + 1, (args.batch,), device=device)
    lengths[0] = args.frames
    pad = torch.arange(args.frames, device=device)[None, :] >= lengths[:, None]
    grad_out = torch.randn(args.batch, args.frames, d_model, device=device)

    reference = _run("explicit", m.double(), x.double(), pos.double(), pad, grad_out.double(), None)
    m.float()
    for name in args.dtype:
        dtype = getattr(torch, name)
        found = {path: _run(path, m, x, pos, pad, grad_out, dtype) for path in ("explicit", "sdpa_bias")}
        for key, ref in reference.items():
            row = {"device": str(device), "dtype": name, "quantity": key}
            for path, got in found.items():
                row[path] = float((got[key] - ref).norm() / ref.norm().clamp_min(1e-30))
            row["ratio"] = row["sdpa_bias"] / max(row["explicit"], 1e-30)
            print(json.dumps(row))


if __name__ == "__main__":
    main()
