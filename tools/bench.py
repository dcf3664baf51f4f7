"""Training-step throughput of our method files' step against the official code's style, side by side.

    python tools/bench.py --model tiny                                   # CPU, seconds
    python tools/bench.py --model ~/.cache/xalign/multilingual-e5-small --steps 5
    python tools/bench.py --shape xlm-roberta-large --device cuda        # random weights, GPU (bf16)

Both styles train the same model on the same English utterances and translations (MASSIVE-style
intent/slot batches from --data/--data_dir), with the same optimizer, for --steps timed steps after
--warmup steps:
  official  pads every input to --max_len, passes no attention mask, runs fp32, and encodes the
            English batch and the translations in two forward passes (as the official XeroAlign code);
  ours      pads each batch to its longest sequence with an attention mask, one forward pass over
            English + translations, bf16 autocast on CUDA and fused Adam (as the method files).
Steps: task only (zero-shot), task + XeroAlign, task + CrossAligner + XeroAlign (the paper's best).
Each style is timed in --rounds alternating rounds and the median round is printed. Printed: English
examples/s, real (non-pad) tokens/s, peak memory (CUDA: the allocator's peak; CPU on Linux: the
process's peak resident memory over the timed steps, model and data included), ours/official
ratios, and the time a 10-epoch MTOP-sized run would take at these batches' lengths (MASSIVE-style
utterances unless --data says otherwise); on CUDA also the model FLOP utilisation: non-embedding
FLOPs of the real tokens only (6 N_nonemb per token + 12 L d n^2 per sequence of n tokens, forward
and backward), so padding counts as waste, against --peak_tflops.
--profile K then profiles K steps of each style with torch.profiler and prints the operators that
take the most time (self time; CUDA time on a GPU): where the time goes, before optimising.
Figures only: this is not a test.
"""
import argparse
import contextlib
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import common  # noqa: E402

SHAPES = {"xlm-roberta-large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
          "xlm-roberta-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)}


def build(args, texts):
    """(encoder, tokenizer): tiny, a local folder/hub name, or a random model of a named shape."""
    if args.shape:
        from transformers import AutoTokenizer, XLMRobertaConfig, XLMRobertaModel
        tok = AutoTokenizer.from_pretrained(args.tokenizer) if args.tokenizer else common.load_encoder("tiny", texts, args.tmp, args.max_len)[1]
        cfg = XLMRobertaConfig(vocab_size=max(len(tok), 250002), max_position_embeddings=514, pad_token_id=1, **SHAPES[args.shape])
        return XLMRobertaModel(cfg), tok
    return common.load_encoder(args.model, texts, args.tmp, args.max_len)


def batches(args, tok, labels, train, trans):
    items = [common.encode(tok, e, labels, args.max_len) for e in train]
    for it, t in zip(items, trans):
        it["tgt"] = [common.encode_text(tok, t, args.max_len)]
    rng = random.Random(0)
    return [common.collate(rng.sample(items, args.batch_size), tok.pad_token_id) for _ in range(args.warmup + args.steps)]


def model_flops(b, method, n_nonemb, layers, hidden):
    """Non-embedding training FLOPs of the real tokens of batch `b` (English + translations unless task
    only): 6 N per token (forward and backward matmuls) + 12 L d n^2 per sequence of n tokens (attention)."""
    lens = b["attention_mask"].sum(1)
    if method != "task":
        lens = torch.cat([lens, b["tgt_attention_mask"].sum(1)])
    return 6 * n_nonemb * int(lens.sum()) + 12 * layers * hidden * int((lens ** 2).sum())


def reset_peak_rss():
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current resident size


def peak_rss_mb():
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) / 1024
    return float("nan")


def pad_fixed(x, L, value):
    return F.pad(x, (0, L - x.shape[1]), value=value)


def step_fn(style, method, model, ca_head, b, device, autocast, L, pad_id):
    """One forward + loss of `method` in `style`; returns the loss."""
    B = len(b["intent"])
    intent, slots = b["intent"].to(device), b["slot_labels"].to(device)
    if style == "official":  # fixed length, no mask, fp32, separate passes
        ids, tgt = pad_fixed(b["input_ids"], L, pad_id).to(device), pad_fixed(b["tgt_input_ids"], L, pad_id).to(device)
        ones = torch.ones_like(ids)
        cls, logits, slot_logits, _ = model(ids, ones)
        loss = common.task_loss(logits, intent, slot_logits, pad_fixed(slots, L, -100))
        if method != "task":
            cls_t, _, slot_t, _ = model(tgt, ones)
            loss = loss + F.mse_loss(cls_t, cls)
            if method == "ca+xa":
                y = torch.zeros(B, slot_logits.shape[-1], device=device).scatter_(1, slots.clamp(min=0), 1.0)
                loss = loss + F.binary_cross_entropy_with_logits(ca_head(slot_logits.flatten(1)), y) \
                    + F.binary_cross_entropy_with_logits(ca_head(slot_t.flatten(1)), y)
        return loss, int(b["attention_mask"].sum()) + (int(b["tgt_attention_mask"].sum()) if method != "task" else 0), \
            ids.numel() * (2 if method != "task" else 1)
    ids, mask = b["input_ids"], b["attention_mask"]
    if method != "task":
        ids, mask = torch.cat([ids, b["tgt_input_ids"]]), torch.cat([mask, b["tgt_attention_mask"]])
    ids, mask = ids.to(device), mask.to(device)
    with autocast:
        cls, logits, slot_logits, _ = model(ids, mask)
    loss = common.task_loss(logits[:B], intent, slot_logits[:B], slots)
    if method != "task":
        loss = loss + F.mse_loss(cls[B:].float(), cls[:B].float())
        if method == "ca+xa":
            y = torch.zeros(B, slot_logits.shape[-1], device=device).scatter_(1, slots.clamp(min=0), 1.0)
            x = F.pad(slot_logits.float() * mask.unsqueeze(-1), (0, 0, 0, L - ids.shape[1]))
            loss = loss + F.binary_cross_entropy_with_logits(ca_head(x[:B].flatten(1)), y) \
                + F.binary_cross_entropy_with_logits(ca_head(x[B:].flatten(1)), y)
    return loss, int(mask.sum()), ids.numel()


def run_dtype(args, device):
    """The method files' --dtype rule: bf16 on GPUs with it, else fp16 (GradScaler) on a GPU, fp32 on the CPU."""
    if args.dtype != "auto":
        return args.dtype
    return "float32" if device.type != "cuda" else "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def run(style, method, model, ca_head, data, device, args, tok):
    dtype = run_dtype(args, device) if style == "ours" else "float32"  # the official code: fp32
    autocast = contextlib.nullcontext() if dtype == "float32" else torch.autocast(device.type, dtype=getattr(torch, dtype))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == "float16")  # fp16: scaled loss, as the method files
    params = list(model.parameters()) + list(ca_head.parameters())
    opt = torch.optim.Adam(params, lr=1e-5, fused=device.type in ("cpu", "cuda") and style == "ours")
    real = processed = 0
    for i, b in enumerate(data):
        if i == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            reset_peak_rss()
            t0, real, processed = time.perf_counter(), 0, 0
        loss, r, p = step_fn(style, method, model, ca_head, b, device, autocast, args.max_len, tok.pad_token_id)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        scaler.step(opt)
        scaler.update()
        real, processed = real + r, processed + p
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    flops = sum(model_flops(b, method, args.n_nonemb, args.layers, args.hidden) for b in data[args.warmup:])
    mem = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else peak_rss_mb()
    return {"dtype": dtype, "ex_s": args.steps * args.batch_size / dt, "tok_s": real / dt, "processed_tok_s": processed / dt,
            "flops_s": flops / dt, "mem_mb": mem}


def profile(style, method, model, ca_head, data, device, args, tok):
    """Print the operators taking the most self time over args.profile steps of `style`."""
    from torch.profiler import ProfilerActivity, profile as torch_profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sub = argparse.Namespace(**{**vars(args), "warmup": 0, "steps": args.profile})  # warm already: after the rounds
    with torch_profile(activities=acts) as prof:
        run(style, method, model, ca_head, data[:args.profile], device, sub, tok)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"\nprofile: {method}, {style} style, {args.profile} steps, top operators by {key}")
    print(prof.key_averages().table(sort_by=key, row_limit=args.profile_rows))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--model", default="tiny", help="tiny, a local folder or a hub name")
    p.add_argument("--shape", choices=sorted(SHAPES), default=None, help="random weights of this shape instead of --model")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder for --shape (default: a tiny one trained on the data)")
    p.add_argument("--data", default="demo")
    p.add_argument("--data_dir", default=str(ROOT / "data/demo"))
    p.add_argument("--lang", default="de")
    p.add_argument("--max_len", type=int, default=70, help="the official style's fixed length (MTOP: 70)")
    p.add_argument("--batch_size", type=int, default=10)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per style; the median is printed")
    p.add_argument("--methods", nargs="+", default=["task", "xa", "ca+xa"])
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="our style's autocast (auto: bf16 on GPUs with it, else fp16 + GradScaler on "
                   "a GPU, fp32 on the CPU); the official style is fp32")
    p.add_argument("--peak_tflops", type=float, default=989.0, help="dense bf16/fp16 peak of the GPU (H100 SXM: 989; A100: 312; T4 fp16: 65)")
    p.add_argument("--profile", type=int, default=0, metavar="K", help="also profile K steps of each style (torch.profiler)")
    p.add_argument("--profile_rows", type=int, default=15, help="operators printed per profile")
    p.add_argument("--tmp", default="runs/bench")
    args = p.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    torch.manual_seed(0)
    train = common.load_split(args.data, args.data_dir, "en", "train")
    trans = common.load_translations(args.data, args.data_dir, args.lang, train)
    train, trans = zip(*[(e, t) for e, t in zip(train, trans) if t])
    labels = common.Labels.from_train(args.data, train)
    enc, tok = build(args, [" ".join(e.words) for e in train] + list(trans))
    model = common.TaskModel(enc, len(labels.intents), len(labels.slots), "first").to(device)
    ca_head = nn.Linear(args.max_len * len(labels.slots), len(labels.slots)).to(device)
    data = batches(args, tok, labels, train, trans)
    cfg = enc.config
    n_nonemb = sum(p.numel() for n, p in enc.named_parameters() if "embeddings" not in n)
    args.n_nonemb, args.layers, args.hidden = n_nonemb, cfg.num_hidden_layers, cfg.hidden_size
    print(f"device {device} | model {args.shape or args.model} ({n_nonemb / 1e6:.1f}M non-embedding parameters) | "
          f"batch {args.batch_size} | official max_len {args.max_len} | {args.steps} timed steps after {args.warmup} | "
          f"ours {run_dtype(args, device)}, official float32")
    print(f"{'method':8} {'style':9} {'ex/s':>9} {'real tok/s':>11} {'peak MB' if device.type == 'cuda' else 'peak RSS MB':>11} {'MFU':>6}")
    for style in ("official", "ours"):  # untimed: the first steps of a process pay one-off start-up costs
        run(style, args.methods[-1], model, ca_head, data, device, args, tok)
    for method in args.methods:
        rounds = {"official": [], "ours": []}
        for _ in range(args.rounds):  # alternate the styles so that drifting machine load hits both
            for style in rounds:
                rounds[style].append(run(style, method, model, ca_head, data, device, args, tok))
        res = {}
        for style, rs in rounds.items():
            res[style] = r = sorted(rs, key=lambda x: x["ex_s"])[len(rs) // 2]  # the median round
            mfu = f"{100 * r['flops_s'] / (args.peak_tflops * 1e12):5.1f}%" if device.type == "cuda" else ""
            print(f"{method:8} {style:9} {r['ex_s']:9.1f} {r['tok_s']:11.0f} {r['mem_mb']:11.0f} {mfu:>6}")
        print(f"{method:8} {'ratio':9} {res['ours']['ex_s'] / res['official']['ex_s']:8.2f}x"
              f" {res['ours']['tok_s'] / res['official']['tok_s']:10.2f}x"
              f" {res['ours']['mem_mb'] / res['official']['mem_mb']:10.2f}x"
              f"  | 10 epochs of MTOP-sized data (15.7k English + translations): "
              f"official {10 * 15667 / res['official']['ex_s'] / 3600:.2f} h, ours {10 * 15667 / res['ours']['ex_s'] / 3600:.2f} h")
    if args.profile:
        for style in ("official", "ours"):
            profile(style, args.methods[-1], model, ca_head, data, device, args, tok)


if __name__ == "__main__":
    main()
