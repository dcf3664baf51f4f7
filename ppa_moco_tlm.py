"""PPA: post-pretraining alignment with MoCo and TLM on parallel data, then zero-shot fine-tuning.

Paper: Pan et al. (2021), "Multilingual BERT Post-Pretraining Alignment", NAACL 2021,
       sections 2.1-2.3 (Eq. 2-4) and 3.3. https://arxiv.org/abs/2010.12547
Reference code: none published; the MoCo mechanics follow facebookresearch/moco, moco/builder.py
       (momentum update before the keys, FIFO queue, keys gathered from every process).

Usage:
    python ppa_moco_tlm.py --data demo --model tiny   # the demo: both stages, CPU, < 1 min
    python ppa_moco_tlm.py --data demo --model tiny --stage finetune   # its baseline: no stage 1
    # stage 1 aligns on parallel sentences and saves a Hugging Face folder that any --model loads
    python ppa_moco_tlm.py --stage align --model bert-base-multilingual-cased \
        --parallel europarl.en,europarl.de massive:data/massive:th,hi --save_dir runs/ppa/aligned
    # stage 2 fine-tunes the aligned encoder (or any --model) on English, tests zero-shot
    python ppa_moco_tlm.py --stage finetune --model runs/ppa/aligned --data xnli --lang all
    python ppa_moco_tlm.py --stage finetune --model runs/ppa/aligned --data mlqa --lang de,es
    # both stages in one command (the demo's default), one process per GPU
    torchrun --nproc_per_node 4 ppa_moco_tlm.py --stage both --parallel pairs.tsv --data xnli

Stage 1, the method: L = L_MoCo + L_TLM (Eq. 4). Per pair a coin decides which side the query
encoder reads and which the momentum key encoder reads ("random input shuffling"); both map the
L2-normalised final [CLS] state through z = W2 ReLU(W1 h) to 300 dims, normalised again; InfoNCE
against the own key and a FIFO queue of 32,000 earlier keys at temperature 0.05 (Eq. 3; momentum
0.999). TLM: the pair concatenated in the same order (`<s> q </s></s> k </s>`; BERT: `[CLS] q
[SEP] k [SEP]`, segment ids 0/1), 15% of the non-special subwords selected, 80/10/10 mask/random/
unchanged, cross-entropy through the query encoder's MLM head. --no_tlm, --mlm_instead_of_tlm:
Table 5's ablations. AdamW (wd 0.01, none on biases and LayerNorm), lr 3e-5, 10% warm-up, linear
decay, batch 128, 10 epochs; pairs with a side under --min_len 10 subwords or longer than
--max_len 128 together are dropped (short utterances need a lower --min_len).
Stage 2: the [CLS] state with a linear head for sentence pairs (XNLI, PAWS-X) and intents (no
slots), or a start/end head for extractive QA (SQuAD v1.1 train, MLQA dev/test, F1/EM).
--translate_train adds each example's translations; --code_switch (section 2.3) adds (a_x, b_en)
and (a_en, b_x) for a translated pair (a_x, b_x). AdamW, 1,000 warm-up steps, linear decay, batch
32, 2 epochs, lr 5e-5 (QA: 3e-5, max length 386). Results are named after the encoder: finetune,
or stage 1's ppa, ppa-no_tlm, ppa-mlm; then +translate_train, +code_switch, _qa.

Where the paper is silent, and where we deviate:
  1. Projection: on both sides (MoCo v2), PyTorch's default init, the key copy by momentum.
  2. The key encoder is copied in the eval mode from_pretrained leaves it in: no dropout.
  3. MoCo enqueues whole batches: --queue is a multiple of --batch_size; epochs drop a last part.
  4. The MLM head sees the selected positions only: the same loss, ~2x faster on a CPU. An encoder
     without one gets a fresh head from AutoModelForMaskedLM (the run says so).
  5. Gradients are clipped at 1.0 in both stages (the paper does not say).
  6. Fine-tuning warm-up is at most 10% of a short run. An example's group (it, its translations,
     code-switched pairs) stays in one batch, so batches can exceed --batch_size.
  7. --head_lr gives the new head its own rate (not in the paper). QA trains on English SQuAD
     only and reports its last epoch.
  8. torchrun: each process takes an equal contiguous share of every global batch. Stage 1 gathers
     every process's keys before queueing them (the same queue everywhere); queries meet their
     own keys and the shared queue. TLM masks are drawn for the whole batch and each share's loss
     is weighted by its share of the selected positions (stage 2's by its share of the examples):
     the averaged gradient is one process's on the whole batch. Stage 2 drops batches smaller
     than the number of processes.
  9. Precision: not in the paper. --dtype auto = bf16 autocast on GPUs that have it, else fp16
     with a GradScaler on a GPU, fp32 on the CPU; MoCo's queue stays fp32.

Shapes: B pairs per batch, T subwords, d hidden size, D = 300 projection, K queue size, V vocab.
"""
import argparse
import contextlib
import copy
import json
import os
import random
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

import common

# section 3.3: alignment (PPA) and fine-tuning settings, MLQA with its own lr and max length; demo
# is tuned for --model tiny (a random encoder), in either stage
PAPER = {
    "align": dict(lr=3e-5, epochs=10, batch_size=128, max_len=128),
    "finetune": dict(lr=5e-5, epochs=2, batch_size=32, max_len=128),
    "mlqa": dict(lr=3e-5, epochs=2, batch_size=32, max_len=386),
    "demo": dict(lr=1e-3, epochs=8, batch_size=16, max_len=64),
}


# ---------------------------------------------------------------------------- arguments

def at_least(low, kind=int):  # argparse type: a number >= low, or a one-line error naming the flag
    def parse(text):
        if kind(text) < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text}")
        return kind(text)
    return parse


def positive(text):  # argparse type: a finite float > 0
    if not 0 < float(text) < float("inf"):  # nan fails every comparison
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return float(text)


def parse_args(argv=None, tiny=False):
    """The flags of one stage; tiny: stage 2 of --stage both after a --model tiny stage 1."""
    table = "\n".join(f"  {k:8} " + "  ".join(f"{n} {v:g}" for n, v in d.items())
                      for k, d in PAPER.items())
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"per stage (align; finetune; mlqa) and for --model tiny (demo):\n{table}")
    per, add = "(default: per --stage, below)", p.add_argument
    # --- run (the same flags in every method file)
    add("--data", choices=[*common.DATASETS, "mlqa"], default="xnli", help="(default: xnli)")
    add("--lang", default="de", help="target language(s): th, de,es,fr or all (default: de)")
    add("--model", default="xlm-roberta-large", help="HF hub name or local folder; tiny builds a "
        "small random encoder and tokenizer on the data, offline (default: xlm-roberta-large)")
    add("--data_dir", help="dataset folder in its official layout (default: data/<data>)")
    add("--train_lang", default="en", help="language of the labelled training data; a target "
        "language gives the 'Target' upper bound (default: en)")
    add("--epochs", type=at_least(1), help=f"training epochs {per}")
    add("--batch_size", type=at_least(1), help=f"batch size, all processes {per}")
    add("--lr", type=positive, help=f"peak learning rate of the encoder {per}")
    add("--max_len", type=at_least(8), help=f"max subwords per input {per}")
    add("--seed", type=int, default=123456789, help="random seed (default: 123456789)")
    add("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    add("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
        help="autocast precision; auto: bfloat16 on GPUs that have it, else float16 with a "
        "GradScaler on a GPU, float32 on the CPU (default: auto)")
    add("--threads", type=at_least(0), default=0, help="CPU threads of torch (default: 0, torch's)")
    add("--out_dir", help="where results.json goes (default: runs/ppa/<data>-<lang>-<train_lang>-"
        "<model>-s<seed>[-steps<N>][-n<limit_train>]; align: runs/ppa/align-s<seed>; both: "
        "stage 1 in its align/)")
    add("--overwrite", action="store_true", help="replace a results.json of other code/settings")
    add("--max_steps", type=at_least(0), default=0, help="stop after N steps (default: 0, no cap)")
    add("--limit_train", type=at_least(0), default=0, help="train on a fixed random subset of N "
        "examples, the same for every seed and method (default: 0, all)")
    add("--max_eval", type=at_least(0), default=0, help="evaluate on a fixed subset of N examples "
        "of each dev and test set, for smoke runs (default: 0, all)")
    add("--select_on", choices=["last", "en", "target"], default="last", help="the epoch "
        "reported: the final one, best English or best target dev (default: last; QA: last)")
    add("--log_every", type=at_least(1), default=50, help="progress every N steps (default: 50)")
    add("--dev_halves", action="store_true", help="pawsx/xnli without train sets: train on half of "
        "the row-parallel dev pairs, dev and test on quarters of the rest (align: the pawsx/xnli "
        "--parallel specs read that training half)")
    # --- method
    add("--stage", choices=["align", "finetune", "both"], help="1: align on parallel data; 2: "
        "fine-tune and test; both: 1, then 2 on its encoder (default: both for --data demo, else "
        "finetune)")
    add("--parallel", nargs="+", default=[], metavar="SPEC", help="align: SRC,TGT (line-aligned "
        "files, English first), PAIRS.tsv (english<TAB>other) or <data>:<data_dir>:<langs|all> "
        "(a dataset's English train with its translations; pawsx/xnli: both sentences of each "
        "pair); --data demo: its --lang translations")
    add("--save_dir", help="align: where the aligned encoder goes (default: <out_dir>/aligned)")
    add("--min_len", type=at_least(0), default=10, help="align: drop pairs with a side under this "
        "many subwords (default: 10, the paper's; demo data: 1)")
    add("--queue", type=at_least(1), default=32000, help="align: MoCo queue size (default: 32000)")
    add("--momentum", type=float, default=0.999, help="align: key momentum (default: 0.999)")
    add("--temperature", type=positive, default=0.05, help="align: InfoNCE's (default: 0.05)")
    add("--proj_dim", type=at_least(1), default=300, help="align: projection size (default: 300)")
    add("--mask_prob", type=float, default=0.15, help="align: TLM's selected (default: 0.15)")
    add("--no_tlm", action="store_true", help="align: MoCo only (Table 5, -TLM)")
    add("--mlm_instead_of_tlm", action="store_true", help="align: MLM on each side alone (Table 5)")
    add("--translate_train", action="store_true", help="finetune: also train on the translations")
    add("--code_switch", action="store_true", help="finetune: add (a_x, b_en), (a_en, b_x)")
    add("--warmup_steps", type=at_least(0), default=1000, help="finetune: linear warm-up steps, at "
        "most 10%% of the run (default: 1000)")
    add("--cls", choices=["pooler", "first"], default="first", help="finetune: sentence vector "
        "(default: first, [CLS])")
    add("--head_lr", type=positive, help="finetune: peak lr of the new head (default: --lr, as "
        "the paper; a small CPU run of multilingual-e5 needs e.g. 1e-3)")
    first = p.parse_known_args(argv)[0]
    stage = first.stage or ("both" if first.data == "demo" else "finetune")
    tiny = tiny or first.model == "tiny" or aligned_from(first.model).get("from") == "tiny"
    p.set_defaults(stage=stage, **PAPER["demo" if tiny else "align" if stage != "finetune" else
                                        "mlqa" if first.data == "mlqa" else "finetune"])
    if stage != "finetune" and first.data == "demo" and not first.parallel:
        p.set_defaults(min_len=1)  # the demo's translations (short utterances) as parallel data
    args = p.parse_args(argv)
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", args.device):
        p.error(f"--device {args.device}: expected auto, cpu, cuda or cuda:N")
    if args.lang != "all" and any(not x.strip() for x in args.lang.split(",")):
        p.error(f"--lang {args.lang!r}: an empty language code; give codes separated by commas")
    if stage != "finetune" and not args.parallel and args.data != "demo":
        p.error(f"--stage {stage} needs --parallel (or --data demo, whose languages are parallel)")
    if stage != "finetune" and args.queue % args.batch_size:
        p.error(f"--queue {args.queue} must be a multiple of --batch_size {args.batch_size} (MoCo "
                "enqueues whole batches), e.g. --queue "
                f"{args.queue // args.batch_size * args.batch_size or args.batch_size}")
    if args.no_tlm and args.mlm_instead_of_tlm:
        p.error("--no_tlm and --mlm_instead_of_tlm exclude each other")
    if args.code_switch and not args.translate_train:
        p.error("--code_switch augments the translated pairs: add --translate_train")
    if args.data == "mlqa" and (args.translate_train or args.code_switch):
        p.error("--data mlqa trains on English SQuAD only: --translate_train and --code_switch "
                "are not implemented for QA")
    return args


def aligned_from(model):
    """The ppa_align.json that stage 1 writes beside an aligned encoder ({} for any other)."""
    marker = Path(model).expanduser() / "ppa_align.json"
    return json.loads(marker.read_text()) if marker.is_file() else {}


# ---------------------------------------------------------------------------- stage 1: the method

METHOD = "ppa"  # names stage 1's encoders (ppa, ppa-no_tlm, ppa-mlm), their results and runs/ppa/


def moco_loss(q, k, queue, temperature=0.05):
    """InfoNCE of MoCo (Eq. 3), each query against its own key and the K queued negatives:

        L_MoCo = -1/B sum_i log( exp(z_q,i . z_k+,i / tau)
                   / (exp(z_q,i . z_k+,i / tau) + sum_{j=1..K} exp(z_q,i . n_j / tau)) )

    q (B, D), k (B, D): L2-normalised query and key projections, row i of each from the two sides
    of pair i; queue (K, D): normalised negatives. Computed in float32 (under autocast q and k
    arrive in half precision, the queue is kept in float32). Returns a scalar."""
    q, k, queue = q.float(), k.float(), queue.float()
    pos = (q * k).sum(-1, keepdim=True)  # (B, 1)
    neg = q @ queue.T  # (B, K)
    logits = torch.cat([pos, neg], dim=1).float() / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def tlm_mask(input_ids, special_mask, mask_id, vocab_size, prob=0.15, generator=None):
    """BERT masking for TLM/MLM: each non-special subword is selected with probability `prob`; a
    selected one becomes <mask> 80% of the time, a random token 10%, and stays 10%. special_mask
    (B, T) is True for special tokens and padding, which are never selected. Returns (inputs,
    labels): labels hold the original id at selected positions and -100 elsewhere."""
    u = torch.rand(input_ids.shape, generator=generator)
    selected = (u < prob) & ~special_mask
    how = torch.rand(input_ids.shape, generator=generator)
    inputs = input_ids.clone()
    inputs[selected & (how < 0.8)] = mask_id
    rand = selected & (how >= 0.8) & (how < 0.9)
    inputs[rand] = torch.randint(vocab_size, input_ids.shape, generator=generator)[rand]
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))
    return inputs, labels


def tlm_loss(logits, labels):
    """L_TLM of Eq. 4, cross-entropy over the N selected positions only:

        L_TLM = -1/N sum_{selected n} log softmax(logits_n)[label_n]

    logits (..., V) and labels (...) of the same leading shape: (B, T, V) / (B, T), or (N, V) /
    (N,) for the gathered positions."""
    if not (labels != -100).any():  # nothing selected in this batch
        return logits.sum() * 0.0
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(),
                           labels.reshape(-1).to(logits.device), ignore_index=-100)


class MomentumKeys:
    """MoCo's key side: a momentum copy of the query encoder and its projection, which the
    optimizer never updates, and the FIFO queue of their keys.

        theta_k <- m theta_k + (1 - m) theta_q      (before the keys of each step are encoded)

    queue (K, D) starts as random unit vectors; `enqueue` overwrites the oldest rows, wrapping."""

    def __init__(self, encoder, proj, size, dim, momentum, seed=0):
        self.encoder, self.proj = copy.deepcopy(encoder), copy.deepcopy(proj)
        for p in self.params():
            p.requires_grad_(False)
        g = torch.Generator().manual_seed(seed)
        self.queue = F.normalize(torch.randn(size, dim, generator=g), dim=1).to(
            next(encoder.parameters()).device)
        self.ptr, self.momentum = 0, momentum

    def params(self):
        return [*self.encoder.parameters(), *self.proj.parameters()]

    @torch.no_grad()
    def update(self, encoder, proj):
        for pk, pq in zip(self.params(), [*encoder.parameters(), *proj.parameters()]):
            pk.mul_(self.momentum).add_(pq.detach(), alpha=1 - self.momentum)

    @torch.no_grad()
    def enqueue(self, k):
        idx = (self.ptr + torch.arange(len(k))) % len(self.queue)
        self.queue[idx.to(self.queue.device)] = k.detach().to(self.queue.dtype)
        self.ptr = (self.ptr + len(k)) % len(self.queue)


def project(encoder, proj, enc):
    """z = normalize(W2 ReLU(W1 normalize(h_[CLS]))), (B, D): Eq. 2 on the first-token state.
    enc: a tokenizer batch (input_ids, attention_mask, BERT: token_type_ids) on the device."""
    h = encoder(**enc).last_hidden_state[:, 0]
    return F.normalize(proj(F.normalize(h.float(), dim=-1)), dim=-1)


class QuerySide(nn.Module):
    """What stage 1 trains: the encoder with its MLM head, and the projection. One forward gives
    the queries and the TLM logits, so that DDP sees one forward per backward."""

    def __init__(self, mlm, proj):
        super().__init__()
        self.mlm, self.proj = mlm, proj

    def forward(self, q_batch, tlm_batch=None, sel=None):
        q = project(self.mlm.base_model, self.proj, q_batch)  # (B, D)
        if tlm_batch is None:
            return q, None
        h = self.mlm.base_model(**tlm_batch).last_hidden_state[sel]  # (N selected, d), dev. 4
        return q, common.mlm_head(self.mlm)(h)  # (N, V)


# ---------------------------------------------------------------------------- both stages

def adamw(model, lr, device, head_lr=None):
    """AdamW with weight decay 0.01 on weight matrices, none on biases and LayerNorm (section 3.3);
    with head_lr, the new heads learn at that rate: every parameter outside model.encoder (the
    heads' models keep their pretrained encoder there)."""
    groups = {}  # (decay?, head?) -> parameters
    for n, p in model.named_parameters():
        head = bool(head_lr) and not n.startswith("encoder.")
        groups.setdefault((p.ndim > 1, head), []).append(p)
    groups = [{"params": ps, "weight_decay": 0.01 if decay else 0.0, "lr": head_lr if head else lr}
              for (decay, head), ps in groups.items()]
    return torch.optim.AdamW(groups, lr=lr, fused=device.type in ("cpu", "cuda"))


def schedule(opt, total, warmup):
    """Linear warm-up over `warmup` steps (at most 10% of the run), then linear decay to 0."""
    warm = max(1, min(warmup, total // 10))
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: s / warm if s < warm else max(0.0, (total - s) / max(1, total - warm)))


def optimizer_step(loss, params, opt, sched, scaler, step, **parts):
    """One update, gradients clipped at 1.0 (dev. 5). Without a GradScaler a non-finite loss stops
    the run before it reaches the weights (naming its `parts`, e.g. moco=..., tlm=...); fp16's
    scaler skips such a step instead. Returns whether the step was skipped."""
    if not torch.isfinite(loss) and not scaler.is_enabled():
        detail = ", ".join(f"{k} {v.item()}" for k, v in parts.items())
        raise SystemExit(f"error: step {step + 1}: the loss is {loss.item()}"
                         f"{f' ({detail})' if detail else ''}; stopping")
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()  # fp16: a scaled loss keeps small gradients from 0
    scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    scale = scaler.get_scale()
    scaler.step(opt)  # fp16: skipped when a gradient overflowed
    scaler.update()
    sched.step()
    return scaler.is_enabled() and scaler.get_scale() < scale  # the scale fell: skipped


def share(items, run):
    """This process's contiguous share of a global batch (dev. 8), and the weight n_mine * world /
    n_all of its mean loss: DDP averages the processes' gradients, and these weights make that
    average the gradient of the whole batch's mean loss (1.0 in one process)."""
    lo, hi = len(items) * run.rank // run.world, len(items) * (run.rank + 1) // run.world
    return items[lo:hi], (hi - lo) * run.world / len(items)


def summed(values, run):
    """Per-process numbers (floats) summed over every process, float64 on the CPU."""
    t = torch.tensor(values, dtype=torch.float64)
    if run.world > 1:  # the epoch's numbers over every process's examples, not rank 0's alone
        t = t.to(run.device)
        dist.all_reduce(t)
    return t.cpu()


# ---------------------------------------------------------------------------- stage 1: alignment

def align(args, plan, run):
    """Stage 1: MoCo + TLM on the --parallel pairs; saves the query encoder with its MLM head."""
    # data: the pairs, and the paper's length filter (each side >= --min_len, the pair <= --max_len)
    try:
        # pairs: [(english, other)]; counts: pairs per spec, e.g. {"demo/de": 200}
        pairs, counts = common.load_parallel_specs(plan["parallel"], args.dev_halves)
    except common.DataError as e:
        raise SystemExit(f"error: {e}") from None
    # the tokenizer (tiny: a random encoder and a tokenizer of these sentences, saved first in
    # <out_dir>/tiny_model); the encoder itself is loaded again below, with its MLM head
    enc, tok = common.load_encoder(args.model, [s for p in pairs for s in p], plan["out_dir"],
                                   args.max_len)
    path = enc.name_or_path
    del enc
    kept = [(a, b) for a, b in pairs if len(tok(a, b)["input_ids"]) <= args.max_len
            and min(map(len, tok([a, b], add_special_tokens=False)["input_ids"])) >= args.min_len]
    common.log(f"parallel pairs: {counts} | length filter: kept {len(kept)} of {len(pairs)} pairs "
               f"(each side >= {args.min_len} subwords, pair <= {args.max_len})")
    if len(kept) < args.batch_size:
        raise SystemExit(f"error: {len(kept)} pairs after the length filter, fewer than one batch "
                         f"of {args.batch_size}")

    # model: the query encoder with its MLM head, the projection, the momentum key side (copied in
    # eval mode: no dropout, dev. 2) and its queue; AdamW, 10% warm-up, then linear decay
    mlm, new = common.load_mlm(path)
    mlm, encoder = mlm.to(run.device), mlm.base_model
    common.log(f"MLM head: new, {new} tensors initialised (the encoder has none; dev. 4)" if new
               else "MLM head: from the checkpoint")
    h = encoder.config.hidden_size
    proj = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, args.proj_dim)).to(run.device)
    keys = MomentumKeys(encoder, proj, args.queue, args.proj_dim, args.momentum, args.seed)
    query = QuerySide(mlm, proj)
    opt = adamw(query, args.lr, run.device)
    scaler = torch.amp.GradScaler(run.device.type, enabled=run.dtype == "float16")  # off: no-op
    net = query if run.world == 1 else nn.parallel.DistributedDataParallel(
        query, device_ids=[run.device] if run.device.type == "cuda" else None,
        find_unused_parameters=args.no_tlm)  # averages the gradients; --no_tlm: the head idles
    per_epoch = len(kept) // args.batch_size  # whole batches only: the queue takes B keys (dev. 3)
    total = args.epochs * per_epoch
    total = min(total, args.max_steps) if args.max_steps else total
    sched = schedule(opt, total, total // 10)
    special = torch.tensor(sorted(set(tok.all_special_ids)))  # never masked
    segments = getattr(encoder.config, "type_vocab_size", 1) > 1 and \
        "token_type_ids" in tok.model_input_names
    as_batch = dict(truncation=True, max_length=args.max_len, padding=True, return_tensors="pt",
                    return_token_type_ids=segments)  # BERT: segment 1 on a TLM pair's second half
    gen, rng = torch.Generator().manual_seed(args.seed), random.Random(args.seed)
    mlm.train()

    # training. A step takes B pairs (english, other) of the shuffled pairs; this process encodes
    # its share of B/world (dev. 8). Per pair a coin picks the query side: the query encoder reads
    # the q texts, z_q (B, D); the key encoder the k texts, z_k (B, D). TLM reads the pairs "q k"
    # as one input (B, T) with ~15% of the subwords selected (labels: the original id there, -100
    # elsewhere); the MLM head gives (N selected, V) logits. MoCo's loss rises while acc@1 climbs:
    # the queue starts as random unit vectors, easy negatives, replaced by keys of real sentences,
    # harder ones, while the encoder learns to tell the own key from them. (The demo's 200 pairs
    # give 1,536 keys in 8 epochs: the 32,000-row queue stays mostly random vectors, and from
    # epoch 2 it also holds older keys of the same pairs.)
    common.log("MoCo: acc@1 is the share of queries whose own key outscores every queued key; the "
               "queue starts as random vectors, easy negatives; as keys of real sentences replace "
               "them the loss rises, while acc@1 still climbs")
    history, step, skipped, t0 = [], 0, 0, time.time()
    for epoch in range(1, args.epochs + 1):
        rng.shuffle(kept)
        sums = [0.0] * 4  # moco, tlm, acc@1, steps
        for s in range(0, per_epoch * args.batch_size, args.batch_size):
            chunk = kept[s:s + args.batch_size]
            # ---- PPA: random input shuffling, drawn for the whole batch in every process
            swap = [rng.random() < 0.5 for _ in chunk]
            q_all = [b if w else a for (a, b), w in zip(chunk, swap)]
            k_all = [a if w else b for (a, b), w in zip(chunk, swap)]
            (q_txt, _), (k_txt, _), (rows, _) = (share(x, run) for x in (q_all, k_all,
                                                                          range(len(chunk))))
            tlm, rows = None, list(rows)
            if not args.no_tlm:  # the pair in the shuffled order (Table 5's MLM: each side alone)
                batch = tok(q_all + k_all, **as_batch) if args.mlm_instead_of_tlm else \
                    tok(q_all, k_all, **as_batch)
                ids = batch["input_ids"]  # masked for the whole batch: the same in every process
                batch["input_ids"], labels = tlm_mask(ids, torch.isin(ids, special),
                                                      tok.mask_token_id, len(tok), args.mask_prob,
                                                      gen)
                if args.mlm_instead_of_tlm:  # rows i and B + i: the two sides of pair i
                    rows += [len(chunk) + i for i in rows]
                sel = labels[rows] != -100  # the head on the selected positions only (dev. 4)
                weight = sel.sum().item() * run.world / max((labels != -100).sum().item(), 1)
                tlm = ({k: v[rows].to(run.device) for k, v in batch.items()}, sel.to(run.device))
            with run.autocast:
                q, logits = net(dict(tok(q_txt, **as_batch).to(run.device)), *(tlm or ()))
            with torch.no_grad():
                keys.update(encoder, proj)  # momentum update, then the keys (dev. 1, 2)
                with run.autocast:
                    k = project(keys.encoder, keys.proj, tok(k_txt, **as_batch).to(run.device))
            loss_moco = moco_loss(q, k, keys.queue, args.temperature)  # own keys + shared queue
            with torch.no_grad():  # MoCo's acc@1: the own key above every queued negative
                acc = ((q * k).float().sum(-1) > (q.float() @ keys.queue.T).max(1).values)
                acc = acc.float().mean()
            loss_tlm = torch.zeros((), device=run.device)
            if tlm is not None:  # weighted: the mean over the whole batch's selected positions
                loss_tlm = tlm_loss(logits, labels[rows][sel]) * weight
            loss = loss_moco + loss_tlm  # Eq. 4
            # ---- end PPA
            skipped += optimizer_step(loss, list(query.parameters()), opt, sched, scaler, step,
                                      moco=loss_moco, tlm=loss_tlm)
            # ---- PPA: every process's keys, in batch order, into the queue (dev. 8)
            if run.world > 1:
                k = k.detach().float().contiguous()
                got = [torch.empty_like(k) for _ in range(run.world)]
                dist.all_gather(got, k)  # no gradient: keys are constants
                k = torch.cat(got)
            keys.enqueue(k)
            # ---- end PPA
            step += 1
            sums = [a + b for a, b in zip(sums, [loss_moco.item(), loss_tlm.item(), acc.item(), 1])]
            if step % args.log_every == 0 or step == total:
                el = time.time() - t0
                common.log(f"step {step}/{total} epoch {epoch} | moco {loss_moco.item():.4f} acc@1 "
                           f"{acc.item():.2f} tlm {loss_tlm.item():.4f} | lr "
                           f"{sched.get_last_lr()[0]:.2e} | {step * args.batch_size / el:.1f} "
                           f"pairs/s | eta {el / step * (total - step) / 60:.1f} min"
                           + (f" | skipped {skipped}" if scaler.is_enabled() else ""))
            if step >= total:
                break
        sums = summed(sums, run).tolist()  # over every process: the means of the whole batches
        history.append({"epoch": epoch, **{k: sums[i] / max(sums[3], 1) for i, k in
                                           enumerate(("moco", "tlm", "moco_acc"))}})
        common.log("epoch {epoch} | mean moco {moco:.4f} acc@1 {moco_acc:.3f} tlm {tlm:.4f}"
                   .format(**history[-1]))
        if step >= total:
            break

    # the aligned query encoder, a normal HF folder that AutoModel.from_pretrained reads, and
    # results.json: written by the first process, the others wait
    if run.main:
        mlm.save_pretrained(plan["save_dir"])
        tok.save_pretrained(plan["save_dir"])
        (Path(plan["save_dir"]) / "ppa_align.json").write_text(json.dumps(  # read by stage 2
            {"variant": plan["variant"], "from": args.model, "steps": step,
             "pairs_kept": len(kept), "args": plan["settings"]}, indent=2, default=str))
        common.log(f"saved the aligned query encoder to {plan['save_dir']} (use --model "
                   f"{plan['save_dir']})")
        path = common.save_results(
            plan["out_dir"], plan["method"], plan["settings"], {}, __file__, history=history,
            steps=step, pairs=counts, pairs_kept=len(kept), save_dir=plan["save_dir"],
            world_size=run.world, dtype=run.dtype, skipped_steps=int(skipped),
            wall_s=time.time() - t0, peak_memory_mb=common.peak_memory_mb(run.device))
        common.log(f"wrote {path}")
    common.barrier()
    return history


# ---------------------------------------------------------------------------- stage 2: fine-tuning

def finetune(args, plan, run):
    """Stage 2: sentence-pair or intent classification on English (+ translations), or QA on
    SQuAD; tested in every language zero-shot."""
    # data: English (or --train_lang) examples, with --translate_train their translations, dev/test
    qa, stage1 = args.data == "mlqa", aligned_from(args.model)
    try:
        if qa:
            langs, train, evals, texts = common.load_qa_task(
                plan["data_dir"], args.lang, args.train_lang, args.limit_train, args.max_eval)
        else:
            langs, train, trans, evals = common.load_task(
                args.data, plan["data_dir"], args.lang, args.train_lang, args.limit_train,
                args.translate_train, args.dev_halves, args.max_eval)
            texts = common.texts_of(train, trans, evals)
        with common.quiet_transformers() if stage1 else contextlib.nullcontext():
            enc, tok = common.load_encoder(args.model, texts, plan["out_dir"], args.max_len)
        if qa:  # windows of the contexts, the answer's first and last token in each (<s>: none)
            items, evals = common.qa_items(tok, train, evals, args.max_len)
        else:  # one group per English example: it, its translations and code-switched pairs
            labels = common.Labels.from_train(args.data, train)
            items = common.train_groups(tok, train, labels, trans, args.max_len,
                                        f"{args.data}/{args.train_lang}/train", args.code_switch)
            evals = common.encode_evals(tok, evals, labels, args.max_len, args.data)
    except common.DataError as e:  # bad input: one line naming the file and line
        raise SystemExit(f"error: {e}") from None
    if stage1:
        common.log(f"encoder: stage 1's ({stage1['variant']}), its MLM head left out")
    for note in common.notes():
        common.log(f"data note: {note}")
    common.log(f"train {len(train)} questions, {len(items)} windows" if qa else
               f"train {len(items)} {args.train_lang} examples, {sum(map(len, items))} items "
               f"(with --translate_train/--code_switch: its translations and mixes) | "
               f"{len(labels.intents)} classes")

    # model: encoder + a linear head on [CLS] (QA: a start/end head on every token); AdamW (the new
    # head at --head_lr), warm-up, then linear decay
    model = (common.QAModel(enc) if qa else
             common.TaskModel(enc, len(labels.intents), 0, args.cls)).to(run.device)  # 0: no slots
    opt = adamw(model, args.lr, run.device, args.head_lr)
    scaler = torch.amp.GradScaler(run.device.type, enabled=run.dtype == "float16")  # off: no-op
    net = model if run.world == 1 else nn.parallel.DistributedDataParallel(
        model, device_ids=[run.device] if run.device.type == "cuda" else None)
    # every epoch's batches, drawn up front: groups are kept whole (dev. 6), so there can be fewer
    # batches than ceil(items / batch size), and the decay must end at the last step taken
    pad, rng, epochs = tok.pad_token_id, random.Random(args.seed), []
    for _ in range(args.epochs):
        if qa:
            rng.shuffle(items)
        epochs.append([items[s:s + args.batch_size] for s in range(0, len(items), args.batch_size)]
                      if qa else common.group_batches(items, args.batch_size, rng))
    if run.world > 1:  # every process needs a share of every batch (dev. 8)
        epochs = [[b for b in bs if len(b) >= run.world] for bs in epochs]
    total = sum(map(len, epochs))
    total = min(total, args.max_steps) if args.max_steps else total
    sched = schedule(opt, total, args.warmup_steps)

    def evaluate(x, split):  # accuracy (QA: F1 and exact match) on one language's dev or test
        if qa:
            return common.qa_evaluate(model, *evals[x][split], x, pad, run.device, run.autocast)
        return common.evaluate(model, *evals[x][split], labels, pad, run.device, run.autocast)

    # training, with dev evaluation after every epoch; --select_on keeps the best epoch's weights.
    # Classification: a batch holds B items (English examples, their translations and mixes), the
    # collated input_ids and attention_mask (B, T), intent (B,) the class (XNLI/PAWS-X: the
    # pair's), BERT pairs also token_type_ids; net returns (CLS (B, d), logits (B, C), None,
    # states). QA: B windows "<s> question </s></s> context </s>" (B, T) and the gold answer's
    # start and end token; net returns start and end logits (B, T).
    watch = ["en"] if args.select_on == "en" else [x for x in langs if x != "en"] or ["en"]
    history, best = [], None  # best: (dev accuracy, epoch, weights on the CPU)
    step, seen, skipped, t_train, t_start = 0, 0, 0, 0.0, time.time()
    for epoch, batches in enumerate(epochs, 1):
        t0, losses = time.time(), []
        for batch in batches:
            mine, weight = share(batch, run)  # this process's share, and its weight (dev. 8)
            if qa:
                ids, gold = (t.to(run.device) for t in common.qa_batch(mine, pad))
                with run.autocast:
                    st, en = net(ids, (ids != pad).long())
                loss = (F.cross_entropy(st, gold[:, 0]) + F.cross_entropy(en, gold[:, 1])) / 2
            else:
                b = common.collate(mine, pad)
                types = b["token_type_ids"].to(run.device) if "token_type_ids" in b else None
                with run.autocast:
                    _, logits, _, _ = net(b["input_ids"].to(run.device),
                                          b["attention_mask"].to(run.device), types)
                loss = F.cross_entropy(logits.float(), b["intent"].to(run.device))
            loss = loss * weight
            skipped += optimizer_step(loss, model.parameters(), opt, sched, scaler, step)
            step, seen = step + 1, seen + len(batch)
            losses.append(loss.item())
            if step % args.log_every == 0 or step == total:
                el = t_train + time.time() - t0
                common.log(f"step {step}/{total} epoch {epoch} | {'qa' if qa else 'task'} "
                           f"{loss.item():.4f} | lr {sched.get_last_lr()[0]:.2e} | "
                           f"{seen / el:.1f} ex/s | eta {el / step * (total - step) / 60:.1f} min"
                           + (f" | skipped {skipped}" if scaler.is_enabled() else ""))
            if step >= total:
                break
        t_train += time.time() - t0
        mean = summed([float(np.mean(losses))], run)[0].item() / run.world
        if run.main:
            dev = {x: evaluate(x, "dev") for x in evals}
            history.append({"epoch": epoch, "train_task_loss": mean, "dev": dev})
            common.log_metrics(f"epoch {epoch} dev", dev)
            score = 0 if qa else sum(dev[x]["accuracy"] for x in watch) / len(watch)
            if args.select_on != "last" and not qa and (best is None or score > best[0]):
                best = (score, epoch, {k: v.detach().to("cpu", copy=True)
                                       for k, v in model.state_dict().items()})
        common.barrier()
        if step >= total:
            break

    # the reported model (rank 0): test in every language, results.json
    if not run.main:
        return None
    if best is not None:
        common.log(f"restoring epoch {best[1]} (best {args.select_on} dev accuracy {best[0]:.2f})")
        model.load_state_dict(best[2])
    picked = best[1] if best else epoch
    dev = next(h["dev"] for h in history if h["epoch"] == picked)  # evaluation is deterministic
    metrics = {x: {"dev": dev[x], "test": evaluate(x, "test")} for x in evals}
    common.log_metrics("final", metrics)
    path = common.save_results(
        plan["out_dir"], plan["method"], plan["settings"], metrics, __file__, history=history,
        selected_epoch=picked, peak_memory_mb=common.peak_memory_mb(run.device), steps=step,
        world_size=run.world, dtype=run.dtype, skipped_steps=int(skipped),
        train_examples_seen=seen, train_examples_per_s=seen / max(t_train, 1e-9),
        wall_s=time.time() - t_start)
    common.log(f"wrote {path}")
    return metrics


# ---------------------------------------------------------------------------- main

def plan_of(args, variant=None):
    """Where one stage reads and writes, and its name: stage 2's results are named after the
    encoder (stage 1's variant ppa, ppa-no_tlm, ppa-mlm, or finetune) and its options."""
    data_dir = args.data_dir or (str(common.DEMO_DIR) if args.data == "demo" else
                                 f"data/{args.data}")
    parallel = args.parallel or [f"demo:{data_dir}:{args.lang}"]  # demo: its translations
    own = METHOD + ("-no_tlm" if args.no_tlm else "-mlm" if args.mlm_instead_of_tlm else "")
    method = f"{METHOD}_align" if args.stage == "align" else (
        (variant or aligned_from(args.model).get("variant", "finetune"))
        + "+translate_train" * args.translate_train + "+code_switch" * args.code_switch
        + "_qa" * (args.data == "mlqa"))
    out_dir = args.out_dir or (f"runs/{METHOD}/align-s{args.seed}" if args.stage == "align" else
                               common.default_out_dir(METHOD, args))
    save_dir = args.save_dir or str(Path(out_dir) / "aligned")
    settings = {**vars(args), "data_dir": data_dir, "out_dir": out_dir}  # as used
    if args.stage == "align":
        settings.update(save_dir=save_dir, parallel=parallel)
    return dict(data_dir=data_dir, parallel=parallel, variant=own, method=method, out_dir=out_dir,
                save_dir=save_dir, settings=settings)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    # --stage both: stage 1's command, then stage 2's on the encoder it saves (flags given win)
    if args.stage == "both":
        out_dir = args.out_dir or common.default_out_dir(METHOD, args)
        one = parse_args([*argv, "--stage", "align", "--out_dir", str(Path(out_dir) / "align")])
        p1 = plan_of(one)
        two = parse_args([*argv, "--stage", "finetune", "--model", p1["save_dir"], "--out_dir",
                          out_dir], tiny=args.model == "tiny")
        stages = [(one, p1), (two, plan_of(two, variant=p1["variant"]))]
    else:
        stages = [(args, plan_of(args))]

    # setup: one process per GPU under torchrun (WORLD_SIZE set), else one process
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {args.device}: this torch sees no CUDA GPU")
    if any(a.batch_size % world for a, _ in stages):
        raise SystemExit(f"error: --batch_size: not divisible by {world} processes")
    if world > 1:
        if not dist.is_initialized():  # (already started when a test runs several mains at once)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
    if args.threads:
        torch.set_num_threads(args.threads)
    # precision (dev. 9): bf16 has fp32's range, so it needs no loss scaling; fp16 does
    dtype = args.dtype if args.dtype != "auto" else "float32" if device.type != "cuda" else \
        "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    autocast = contextlib.nullcontext() if dtype == "float32" else \
        torch.autocast(device.type, dtype=getattr(torch, dtype))
    rank = dist.get_rank() if world > 1 else 0
    run = argparse.Namespace(device=device, dtype=dtype, autocast=autocast, world=world,
                             rank=rank, main=rank == 0)  # only rank 0 evaluates and writes
    for a, plan in stages:  # before loading: a bad --out_dir fails now, not after training
        common.check_out_dir(plan["settings"], __file__)
    for a, plan in stages:  # each stage seeded alike, whether it runs alone or after stage 1
        random.seed(a.seed)
        np.random.seed(a.seed)
        torch.manual_seed(a.seed)
        common.log(f"{plan['method']} | stage {a.stage} | device {device} | dtype {dtype} | "
                   f"processes {world}\nargs {plan['settings']}")
        out = (align if a.stage == "align" else finetune)(a, plan, run)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return out


if __name__ == "__main__":
    main()
