"""PPA: post-pretraining alignment with MoCo and TLM on parallel data, then zero-shot fine-tuning.

Paper: Pan et al. (2021), "Multilingual BERT Post-Pretraining Alignment", NAACL 2021,
       sections 2.1-2.3 (Eq. 2-4) and 3.3. https://arxiv.org/abs/2010.12547
Reference code: none published; the MoCo mechanics follow facebookresearch/moco, moco/builder.py
       (momentum update before the keys, FIFO queue).

Usage:
    # stage 1: align on parallel sentences (line-aligned files, English first; a tab-separated file;
    # or a dataset's English train with its translations; mixed as given), save the query encoder
    # with its MLM head as a normal Hugging Face folder, which --model of every method file loads
    python ppa_moco_tlm.py --stage align --model bert-base-multilingual-cased \
        --parallel europarl.en,europarl.de europarl.en,europarl.fr pairs.tsv --save_dir runs/ppa/aligned
    python ppa_moco_tlm.py --stage align --model bert-base-multilingual-cased \
        --parallel massive:data/massive:th,hi,de --min_len 3 --save_dir runs/ppa/aligned
    python ppa_moco_tlm.py --stage align --model bert-base-multilingual-cased --dev_halves \
        --parallel xnli:data/xnli:th,hi,de --min_len 3   # both sentences of the pairs --dev_halves trains on
    # stage 2: fine-tune the aligned encoder (or any --model) on English, test zero-shot
    python ppa_moco_tlm.py --stage finetune --model runs/ppa/aligned --data xnli --lang all
    python ppa_moco_tlm.py --stage finetune --model runs/ppa/aligned --data xnli --lang de \
        --translate_train --code_switch
    python ppa_moco_tlm.py --stage finetune --model runs/ppa/aligned --data mlqa --lang de,es --data_dir data/qa
    # the demo, offline on a CPU in seconds (--stage defaults to finetune; the align stage reads the
    # demo's --lang translations as parallel data, paired by id, with --min_len 1)
    python ppa_moco_tlm.py --data demo --model tiny
    python ppa_moco_tlm.py --data demo --model tiny --stage align
    python ppa_moco_tlm.py --data demo --model runs/ppa/align-s123456789/aligned   # the line above's encoder

What this file adds to common.py. Stage 1, the method, L = L_MoCo + L_TLM (Eq. 4): per pair, a coin
decides which side the query encoder reads and which the momentum key encoder reads ("random input
shuffling"); both take the L2-normalised final [CLS] (first-token) state through z = W2 ReLU(W1 h)
to 300 dims, normalised again; InfoNCE against the own key and a FIFO queue of 32,000 earlier keys
at temperature 0.05 (Eq. 3; momentum 0.999, the key side updated before it encodes). Progress lines
show MoCo's acc@1 (the own key above every queued one). TLM: the pair concatenated in the same order
(`<s> q </s></s> k </s>` for XLM-R, `[CLS] q [SEP] k [SEP]` for BERT, with segment ids 0 and 1 where
the encoder has them: no position reset, no language embeddings), 15% of the non-special subwords
selected, 80/10/10 mask/random/unchanged, cross-entropy through the query encoder's MLM head.
--no_tlm and --mlm_instead_of_tlm are Table 5's ablations. AdamW (wd 0.01, none on biases and
LayerNorm), lr 3e-5, 10% warm-up then linear decay, batch 128, max length 128, 10 epochs. The
paper's length filter drops pairs with a side under --min_len 10 subwords or a concatenation over
--max_len 128 (the count is printed); short utterances (MASSIVE, MTOD) need a lower --min_len.

Stage 2: the [CLS] state with a linear head for sentence pairs (XNLI, PAWS-X) and intents (MASSIVE,
MTOD, MTOP, MultiATIS++, demo; slots are not trained), or a start/end head for extractive QA (SQuAD
v1.1 train, MLQA dev/test; windows with stride 128, the best span of at most 30 tokens, F1/EM with
MLQA's per-language answer normalisation). --translate_train adds each English example's
translations; --code_switch (section 2.3) adds, for a translated pair (a_x, b_x), (a_x, b_en) and
(a_en, b_x), kept in the same batch. AdamW (wd 0.01), warm-up 1,000 steps then linear decay, batch
32, 2 epochs, lr 5e-5 (QA: 3e-5, max length 386). BERT-family encoders see segment ids for sentence
pairs, as in pre-training. Results are named after the encoder: `finetune` for one stage 1 did not
align, else ppa_align.json's `ppa`, `ppa-no_tlm` or `ppa-mlm`; then `+translate_train`,
`+code_switch`, `_qa`.

Where the paper is silent, and where we deviate:
  1. Projection. The paper does not say whether the key side has it or how W1/W2 are initialised:
     both sides carry it (MoCo v2), PyTorch's default initialisation, the key copy by momentum.
  2. The key encoder is copied from the query encoder in the eval mode from_pretrained leaves it in,
     so it encodes without dropout (the query encoder with).
  3. MoCo enqueues whole batches: --queue must be a multiple of --batch_size (the error suggests a
     size) and an epoch takes whole batches only.
  4. The MLM head is applied to the selected positions only: the same loss, and on a 2-core CPU the
     align step is about 2x faster (the vocabulary projection at every position costs as much as
     the encoder). An encoder without one (e.g. multilingual-e5) gets a fresh head (transform +
     decoder tied to the word embeddings) from AutoModelForMaskedLM; the run says how many tensors.
  5. Gradients are clipped at 1.0 in both stages (the paper does not say).
  6. Fine-tuning warm-up is at most 10% of a short run. A group (an example, its translations and
     code-switched pairs) is never split, so batches can exceed --batch_size; the decay is planned
     for the steps actually taken and reaches 0 at the last one.
  7. --head_lr gives the new head its own rate (not in the paper; our CPU runs of multilingual-e5
     use 1e-3, as for the other methods). QA trains on English SQuAD only (--translate_train and
     --code_switch are refused) and reports its last epoch whatever --select_on says.
  8. One process (no torchrun): MoCo across processes needs the keys gathered before they are
     queued, which this teaching file leaves out.

Shapes: B pairs per batch, T subwords, d hidden size, D = 300 projection size, K queue size, V vocab.
"""
import argparse
import contextlib
import copy
import json
import math
import os
import random
import re
import time
from pathlib import Path

import numpy as np
import torch
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


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    # --- run (the same flags in every method file)
    p.add_argument("--data", choices=[*common.DATASETS, "mlqa"], default="xnli", help="dataset (default: xnli)")
    p.add_argument("--lang", default="de", help="target language(s): th, de,es,fr or all (default: de)")
    p.add_argument("--model", default="xlm-roberta-large", help="HF hub name or local folder; tiny builds a small "
                   "random encoder and tokenizer on the data, offline (default: xlm-roberta-large)")
    p.add_argument("--data_dir", help="dataset folder in its official layout (default: data/<data>)")
    p.add_argument("--train_lang", default="en", help="language of the labelled training data; a target "
                   "language gives the 'Target' upper bound (default: en)")
    p.add_argument("--epochs", type=int, help="training epochs (default: the paper's for --stage, PAPER)")
    p.add_argument("--batch_size", type=int, help="batch size (default: PAPER)")
    p.add_argument("--lr", type=float, help="peak learning rate of the encoder (default: PAPER)")
    p.add_argument("--max_len", type=int, help="max subwords per input (default: PAPER)")
    p.add_argument("--seed", type=int, default=123456789, help="random seed (default: 123456789, as every method)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, help="bf16 autocast (default: on CUDA only; "
                   "--amp also on CPU, --no-amp never)")
    p.add_argument("--out_dir", help="where results.json goes (default: runs/ppa/<data>-<lang>-<train_lang>-"
                   "<model>-s<seed>[-steps<N>][-n<limit_train>]; align: runs/ppa/align-s<seed>)")
    p.add_argument("--overwrite", action="store_true", help="replace a results.json made with other settings")
    p.add_argument("--max_steps", type=int, default=0, help="stop after N optimizer steps (default: 0, no cap)")
    p.add_argument("--limit_train", type=int, default=0, help="train on a fixed random subset of N examples, "
                   "the same for every seed and method (default: 0, all)")
    p.add_argument("--select_on", choices=["last", "en", "target"], default="last", help="the epoch reported: "
                   "the final one, best English dev or best target dev (default: last; QA: always the last)")
    p.add_argument("--log_every", type=int, default=50, help="progress line every N steps (default: 50)")
    p.add_argument("--dev_halves", action="store_true", help="pawsx/xnli without train sets: train on half of "
                   "the row-parallel dev pairs, dev and test on quarters of the rest (align: the pawsx/xnli --parallel "
                   "specs read that training half)")
    # --- method
    p.add_argument("--stage", choices=["align", "finetune"], default="finetune",
                   help="1: align on parallel data; 2: fine-tune and test (default: finetune)")
    p.add_argument("--parallel", nargs="+", default=[], metavar="SPEC", help="align: SRC,TGT (line-aligned "
                   "files, English first), PAIRS.tsv (english<TAB>other) or <data>:<data_dir>:<lang,lang|all> "
                   "(a dataset's English train with its translations; pawsx/xnli: both sentences of each pair, "
                   "with --dev_halves those of its training half); --data demo: its --lang translations")
    p.add_argument("--save_dir", help="align: where the aligned encoder goes (default: <out_dir>/aligned)")
    p.add_argument("--min_len", type=int, default=10, help="align: drop pairs with a side under this many "
                   "subwords (default: 10, the paper's; 1 for the demo's parallel data)")
    p.add_argument("--queue", type=int, default=32000, help="align: MoCo queue size K (default: 32000)")
    p.add_argument("--momentum", type=float, default=0.999, help="align: key encoder momentum m (default: 0.999)")
    p.add_argument("--temperature", type=float, default=0.05, help="align: InfoNCE temperature (default: 0.05)")
    p.add_argument("--proj_dim", type=int, default=300, help="align: projection size D (default: 300)")
    p.add_argument("--mask_prob", type=float, default=0.15, help="align: fraction masked for TLM (default: 0.15)")
    p.add_argument("--no_tlm", action="store_true", help="align: MoCo only (Table 5, -TLM)")
    p.add_argument("--mlm_instead_of_tlm", action="store_true", help="align: MLM on each side alone (Table 5)")
    p.add_argument("--translate_train", action="store_true", help="finetune: also train on the translations")
    p.add_argument("--code_switch", action="store_true", help="finetune: add (a_x, b_en) and (a_en, b_x) per "
                   "translated pair")
    p.add_argument("--warmup_steps", type=int, default=1000, help="finetune: linear warm-up steps, at most 10%% "
                   "of the run (default: 1000)")
    p.add_argument("--cls", choices=["pooler", "first"], default="first", help="finetune: sentence vector "
                   "(default: first, the paper's [CLS] state)")
    p.add_argument("--head_lr", type=float, help="finetune: peak lr of the new head (default: --lr, as the paper; "
                   "a small CPU run of an encoder without a trained pooler needs more, e.g. 1e-3)")
    first = p.parse_known_args(argv)[0]
    tiny = first.model == "tiny" or aligned_from(first.model).get("from") == "tiny"  # also stage 2 of the demo
    p.set_defaults(**PAPER["demo" if tiny else "align" if first.stage == "align" else
                           "mlqa" if first.data == "mlqa" else "finetune"])  # flags given win
    if first.stage == "align" and first.data == "demo" and not first.parallel:
        p.set_defaults(min_len=1)  # the demo's translations (short utterances) as the parallel data
    args = p.parse_args(argv)
    for k in ("epochs", "batch_size", "max_len", "log_every"):
        if getattr(args, k) < 1:
            p.error(f"--{k} must be at least 1, got {getattr(args, k)}")
    if args.lr <= 0 or args.head_lr is not None and args.head_lr <= 0:
        p.error("--lr and --head_lr must be positive")
    if args.max_steps < 0 or args.limit_train < 0:
        p.error("--max_steps and --limit_train must be 0 (no cap) or positive")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", args.device):
        p.error(f"--device {args.device}: expected auto, cpu, cuda or cuda:N")
    if args.lang != "all" and any(not x.strip() for x in args.lang.split(",")):
        p.error(f"--lang {args.lang!r}: an empty language code; give codes separated by commas, e.g. de,es")
    if args.stage == "align" and not args.parallel and args.data != "demo":
        p.error("--stage align needs --parallel (or --data demo, whose languages are parallel)")
    if args.stage == "align" and args.queue % args.batch_size:
        p.error(f"--queue {args.queue} must be a multiple of --batch_size {args.batch_size} (MoCo enqueues whole "
                f"batches), e.g. --queue {args.queue // args.batch_size * args.batch_size or args.batch_size}")
    if args.stage == "align" and args.no_tlm and args.mlm_instead_of_tlm:
        p.error("--no_tlm and --mlm_instead_of_tlm exclude each other")
    if args.code_switch and not args.translate_train:
        p.error("--code_switch augments the translated pairs: add --translate_train")
    if args.stage == "finetune" and args.data == "mlqa" and (args.translate_train or args.code_switch):
        p.error("--data mlqa trains on English SQuAD only: --translate_train and --code_switch are not "
                "implemented for QA")
    return args


# ---------------------------------------------------------------------------- stage 1: losses and key side


def moco_loss(q, k, queue, temperature=0.05):
    """InfoNCE of MoCo (Eq. 3), each query against its own key and the K queued negatives:

        L_MoCo = -1/B sum_i log( exp(z_q,i . z_k+,i / tau)
                                 / (exp(z_q,i . z_k+,i / tau) + sum_{j=1..K} exp(z_q,i . n_j / tau)) )

    q (B, D), k (B, D): L2-normalised query and key projections, row i of each from the two sides of
    pair i; queue (K, D): normalised negatives. Computed in float32 (under bf16 autocast q and k
    arrive in bf16, the queue is kept in float32). Returns a scalar."""
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
    """Cross-entropy over the selected positions only (L_TLM of Eq. 4): logits (..., V) and labels
    (...) of the same leading shape, e.g. (B, T, V) / (B, T), or (N, V) / (N,) for N gathered positions."""
    if not (labels != -100).any():  # nothing selected in this batch
        return logits.sum() * 0.0
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1).to(logits.device),
                           ignore_index=-100)

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
        self.queue = F.normalize(torch.randn(size, dim, generator=g), dim=1).to(next(encoder.parameters()).device)
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


def mlm_head(mlm):
    """The prediction head of a Hugging Face *ForMaskedLM model (BERT: .cls, RoBERTa/XLM-R: .lm_head),
    so that it can be applied to the selected positions only."""
    for name in ("lm_head", "cls"):
        if isinstance(getattr(mlm, name, None), nn.Module):
            return getattr(mlm, name)
    raise SystemExit(f"error: {type(mlm).__name__} has neither .lm_head nor .cls; ppa_moco_tlm.py does not know "
                     "its MLM head")


def project(encoder, proj, enc):
    """z = normalize(W2 ReLU(W1 normalize(h_[CLS]))), (B, D): Eq. 2 on the L2-normalised first-token state.
    enc: a tokenizer batch (input_ids, attention_mask and, for BERT, token_type_ids) on the device."""
    h = encoder(**enc).last_hidden_state[:, 0]
    return F.normalize(proj(F.normalize(h.float(), dim=-1)), dim=-1)


# ---------------------------------------------------------------------------- optimizer (both stages)


def adamw(model, lr, device, head_lr=None):
    """AdamW with weight decay 0.01 on weight matrices, none on biases and LayerNorm (section 3.3);
    with head_lr, the task model's new heads (every parameter outside model.encoder) learn at that rate."""
    groups = {}  # (decay?, head?) -> parameters
    for n, p in model.named_parameters():
        groups.setdefault((p.ndim > 1, bool(head_lr) and not n.startswith("encoder.")), []).append(p)
    groups = [{"params": ps, "weight_decay": 0.01 if decay else 0.0, "lr": head_lr if head else lr}
              for (decay, head), ps in groups.items()]
    return torch.optim.AdamW(groups, lr=lr, fused=device.type in ("cpu", "cuda"))


def schedule(opt, total, warmup):
    """Linear warm-up over `warmup` steps (at most 10% of the run), then linear decay to 0 at `total`."""
    warm = max(1, min(warmup, total // 10))
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: s / warm if s < warm else max(0.0, (total - s) / max(1, total - warm)))


def optimizer_step(loss, params, opt, sched, step, **parts):
    """One update, gradients clipped at 1.0; a non-finite loss stops the run before it reaches the
    weights (naming its `parts`, e.g. moco=..., tlm=...)."""
    if not torch.isfinite(loss):
        detail = ", ".join(f"{k} {v.item()}" for k, v in parts.items())
        raise SystemExit(f"error: step {step + 1}: the loss is {loss.item()}{f' ({detail})' if detail else ''}; "
                         "stopping")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()


# ---------------------------------------------------------------------------- stage 1: alignment


def read_parallel_specs(specs, dev_halves=False):
    """[(english, other)] from every --parallel spec, with a count per spec. A sentence-pair dataset
    (pawsx, xnli) gives both sides of each pair as parallel sentences; with `dev_halves`, those of
    --dev_halves's training half (its dev rows that no run evaluates in any language)."""
    pairs, counts = [], {}
    for spec in specs:
        data, folder, langs = spec.split(":") if spec.count(":") == 2 else (None, None, None)
        if data in common.PAIR_TASKS:
            _, english, trans, _ = common.load_task(data, folder, langs, align=True, dev_halves=dev_halves)
            for lang, tr in trans.items():
                got = [(s, t) for e, both in zip(english, tr) if both for s, t in zip((e.a, e.b), both)]
                counts[f"{data}/{lang}"] = len(got)
                pairs += got
        elif data in common.INTENT_SLOT:
            english = common.load_split(data, folder, "en", "train")
            for lang in common.resolve_langs(langs, data, folder):  # de,es or all
                tr = common.load_translations(data, folder, lang, english)
                got = [(" ".join(e.words), t) for e, t in zip(english, tr) if t]
                counts[f"{data}/{lang}"] = len(got)
                pairs += got
        else:
            got = common.read_parallel(spec.split(","))
            counts[spec] = len(got)
            pairs += got
    return pairs, counts


def align(args, parallel, out_dir, save_dir, settings, device, autocast):
    """Stage 1: MoCo + TLM on the --parallel pairs; saves the query encoder with its MLM head."""
    from transformers import AutoModelForMaskedLM

    # data: the pairs, and the paper's length filter (each side >= --min_len subwords, the pair <= --max_len)
    try:
        pairs, counts = read_parallel_specs(parallel, args.dev_halves)
    except common.DataError as e:
        raise SystemExit(f"error: {e}") from None
    enc, tok = common.load_encoder(args.model, [s for p in pairs for s in p], out_dir, args.max_len)
    path = enc.name_or_path  # loaded again below, with its MLM head
    del enc
    kept = [(a, b) for a, b in pairs if len(tok(a, b)["input_ids"]) <= args.max_len
            and min(map(len, tok([a, b], add_special_tokens=False)["input_ids"])) >= args.min_len]
    common.log(f"parallel pairs: {counts} | length filter: kept {len(kept)} of {len(pairs)} pairs (each side "
               f">= {args.min_len} subwords, pair <= {args.max_len})")
    if len(kept) < args.batch_size:
        raise SystemExit(f"error: {len(kept)} pairs after the length filter, fewer than one batch of "
                         f"{args.batch_size}")

    # model: the query encoder with its MLM head, the projection, the momentum key side (copied in eval
    # mode: no dropout) and its queue; AdamW, 10% warm-up, then linear decay
    mlm, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
    mlm, encoder, head = mlm.to(device), mlm.base_model, mlm_head(mlm)
    common.log("MLM head: " + (f"new, {len(info['missing_keys'])} tensors initialised (the checkpoint has none)"
                               if info["missing_keys"] else "from the checkpoint"))
    h = encoder.config.hidden_size
    proj = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, args.proj_dim)).to(device)
    keys = MomentumKeys(encoder, proj, args.queue, args.proj_dim, args.momentum, args.seed)
    params = [*mlm.parameters(), *proj.parameters()]
    opt = adamw(nn.ModuleList([mlm, proj]), args.lr, device)
    per_epoch = len(kept) // args.batch_size  # whole batches only: the queue takes B keys at a time
    total = args.epochs * per_epoch
    total = min(total, args.max_steps) if args.max_steps else total
    sched = schedule(opt, total, total // 10)
    special = torch.tensor(sorted(set(tok.all_special_ids)))  # never masked
    segments = getattr(encoder.config, "type_vocab_size", 1) > 1 and "token_type_ids" in tok.model_input_names
    as_batch = dict(truncation=True, max_length=args.max_len, padding=True, return_tensors="pt",
                    return_token_type_ids=segments)  # BERT: segment 1 on the second sentence of a TLM pair
    gen, rng = torch.Generator().manual_seed(args.seed), random.Random(args.seed)
    mlm.train()

    history, step, t0 = [], 0, time.time()
    for epoch in range(1, args.epochs + 1):
        rng.shuffle(kept)
        sums = np.zeros(4)  # moco, tlm, acc@1, steps
        for s in range(0, per_epoch * args.batch_size, args.batch_size):
            chunk = kept[s:s + args.batch_size]
            swap = [rng.random() < 0.5 for _ in chunk]  # random input shuffling: who is query, who is key
            q_txt = [b if w else a for (a, b), w in zip(chunk, swap)]
            k_txt = [a if w else b for (a, b), w in zip(chunk, swap)]
            with autocast:
                q = project(encoder, proj, tok(q_txt, **as_batch).to(device))
            with torch.no_grad():
                keys.update(encoder, proj)  # momentum update, then the keys
                with autocast:
                    k = project(keys.encoder, keys.proj, tok(k_txt, **as_batch).to(device))
            loss_moco = moco_loss(q, k, keys.queue, args.temperature)
            with torch.no_grad():  # MoCo's acc@1: the own key scores above every queued negative
                acc = ((q * k).float().sum(-1) > (q.float() @ keys.queue.T).max(1).values).float().mean()
            loss_tlm = torch.zeros((), device=device)
            if not args.no_tlm:  # the pair concatenated in the shuffled order (Table 5's MLM: each side alone)
                batch = tok(q_txt + k_txt, **as_batch) if args.mlm_instead_of_tlm else \
                    tok(q_txt, k_txt, **as_batch)
                ids = batch["input_ids"]
                batch["input_ids"], labels = tlm_mask(ids, torch.isin(ids, special), tok.mask_token_id, len(tok),
                                                      args.mask_prob, gen)
                sel = labels != -100  # the head on the ~15% selected positions only
                with autocast:
                    logits = head(encoder(**batch.to(device)).last_hidden_state[sel.to(device)])
                loss_tlm = tlm_loss(logits, labels[sel])
            loss = loss_moco + loss_tlm  # Eq. 4
            optimizer_step(loss, params, opt, sched, step, moco=loss_moco, tlm=loss_tlm)
            keys.enqueue(k)
            step += 1
            sums += [loss_moco.item(), loss_tlm.item(), acc.item(), 1]
            if step % args.log_every == 0 or step == total:
                el = time.time() - t0
                common.log(f"step {step}/{total} epoch {epoch} | moco {loss_moco.item():.4f} acc@1 "
                           f"{acc.item():.2f} tlm {loss_tlm.item():.4f} | lr {sched.get_last_lr()[0]:.2e} | "
                           f"{step * args.batch_size / el:.1f} pairs/s | "
                           f"eta {el / step * (total - step) / 60:.1f} min")
            if step >= total:
                break
        n = max(sums[3], 1)
        history.append({"epoch": epoch, "moco": sums[0] / n, "tlm": sums[1] / n, "moco_acc": sums[2] / n})
        common.log(f"epoch {epoch} | mean moco {sums[0] / n:.4f} acc@1 {sums[2] / n:.3f} tlm {sums[1] / n:.4f}")
        if step >= total:
            break

    # the aligned query encoder: a normal HF folder (AutoModel.from_pretrained(save_dir) reads the encoder)
    mlm.save_pretrained(save_dir)
    tok.save_pretrained(save_dir)
    variant = "ppa" + ("-no_tlm" if args.no_tlm else "-mlm" if args.mlm_instead_of_tlm else "")
    (Path(save_dir) / "ppa_align.json").write_text(json.dumps(  # tells stage 2 what it fine-tunes
        {"variant": variant, "from": args.model, "steps": step, "pairs_kept": len(kept), "args": settings},
        indent=2, default=str))
    common.log(f"saved the aligned query encoder to {save_dir} (use --model {save_dir})")
    path = common.save_results(out_dir, "ppa_align", settings, {}, history=history, steps=step, pairs=counts,
                               pairs_kept=len(kept), save_dir=save_dir, wall_s=time.time() - t0,
                               peak_memory_mb=common.peak_memory_mb(device))
    common.log(f"wrote {path}")
    return history


# ---------------------------------------------------------------------------- stage 2: fine-tuning


def aligned_from(model):
    """The ppa_align.json that stage 1 writes beside an aligned encoder ({} for any other --model)."""
    marker = Path(model).expanduser() / "ppa_align.json"
    return json.loads(marker.read_text()) if marker.is_file() else {}


def finetune_items(args, tok, train, trans, labels):
    """Groups of encoded training items, one group per English example: the example, then (with
    --translate_train) each translation, then (with --code_switch, pairs only) the two mixed pairs."""
    groups = []
    where = f"{args.data}/{args.train_lang}/train"
    for i, ex in enumerate(train):
        group = [common.encode(tok, ex, labels, args.max_len, where)]
        for lang, t in trans.items():
            if not t[i]:
                continue
            if isinstance(ex, common.Pair):
                variants = [t[i]] + ([(t[i][0], ex.b), (ex.a, t[i][1])] if args.code_switch else [])
                group += [common.encode(tok, common.Pair(ex.id, a, b, ex.label), labels, args.max_len, where)
                          for a, b in variants]
            else:  # an utterance: its translation with the English intent
                x = common.Example(ex.id, t[i].split(), ex.intent, ["O"] * len(t[i].split()))
                group.append(common.encode(tok, x, labels, args.max_len, where))
        for it in group:  # sentence-level training only: no slot labels
            it.pop("slot_labels", None)
            it.pop("starts", None)
        groups.append(group)
    return groups


def group_batches(groups, batch_size, rng):
    """Shuffle the groups, keep each group's items together, cut into batches of ~batch_size."""
    order = list(range(len(groups)))
    rng.shuffle(order)
    out, cur = [], []
    for g in order:
        cur += groups[g]
        if len(cur) >= batch_size:
            out.append(cur)
            cur = []
    return out + ([cur] if cur else [])


def finetune(args, method, data_dir, out_dir, settings, device, autocast):
    """Stage 2: sentence-pair or intent classification, English (+ translations), tested zero-shot."""
    try:
        langs, train, trans, evals = common.load_task(args.data, data_dir, args.lang, args.train_lang,
                                                      args.limit_train, args.translate_train, args.dev_halves)
        enc, tok = common.load_encoder(args.model, common.texts_of(train, trans, evals), out_dir, args.max_len)
        labels = common.Labels.from_train(args.data, train)
        groups = finetune_items(args, tok, train, trans, labels)
        evals = common.encode_evals(tok, evals, labels, args.max_len, args.data)
    except common.DataError as e:  # bad input: one line naming the file and line
        raise SystemExit(f"error: {e}") from None
    for note in common.notes():
        common.log(f"data note: {note}")
    common.log(f"train {len(groups)} {args.train_lang} examples, {sum(map(len, groups))} items with translations/"
               f"code-switching | {len(labels.intents)} classes")
    model = common.TaskModel(enc, len(labels.intents), 0, args.cls).to(device)
    opt = adamw(model, args.lr, device, args.head_lr)
    # every epoch's batches, drawn up front: groups are kept whole, so there can be fewer batches than
    # ceil(items / batch size), and the linear decay must end at the last step actually taken
    rng = random.Random(args.seed)
    epochs = [group_batches(groups, args.batch_size, rng) for _ in range(args.epochs)]
    total = sum(map(len, epochs))
    total = min(total, args.max_steps) if args.max_steps else total
    sched = schedule(opt, total, args.warmup_steps)

    watch = ["en"] if args.select_on == "en" else [x for x in langs if x != "en"] or ["en"]
    history, best = [], None  # best: (dev accuracy, epoch, weights on the CPU)
    step, seen, t_train, t_start = 0, 0, 0.0, time.time()
    for epoch, batches in enumerate(epochs, 1):
        t0, losses = time.time(), []
        for items in batches:
            b = common.collate(items, tok.pad_token_id)
            types = b["token_type_ids"].to(device) if "token_type_ids" in b else None  # BERT: segments of a pair
            with autocast:
                _, logits, _, _ = model(b["input_ids"].to(device), b["attention_mask"].to(device), types)
            loss = F.cross_entropy(logits.float(), b["intent"].to(device))
            optimizer_step(loss, model.parameters(), opt, sched, step)
            step, seen = step + 1, seen + len(items)
            losses.append(loss.item())
            if step % args.log_every == 0 or step == total:
                el = t_train + time.time() - t0
                common.log(f"step {step}/{total} epoch {epoch} | task {loss.item():.4f} | lr "
                           f"{sched.get_last_lr()[0]:.2e} | {seen / el:.1f} ex/s | "
                           f"eta {el / step * (total - step) / 60:.1f} min")
            if step >= total:
                break
        t_train += time.time() - t0
        dev = {x: common.evaluate(model, *evals[x]["dev"], labels, tok.pad_token_id, device, autocast)
               for x in evals}
        history.append({"epoch": epoch, "train_task_loss": float(np.mean(losses)), "dev": dev})
        common.log_metrics(f"epoch {epoch} dev", dev)
        score = sum(dev[x]["accuracy"] for x in watch) / len(watch)
        if args.select_on != "last" and (best is None or score > best[0]):
            best = (score, epoch, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
        if step >= total:
            break

    # the reported model: test in every language, results.json
    if best is not None:
        common.log(f"restoring epoch {best[1]} (best {args.select_on} dev accuracy {best[0]:.2f})")
        model.load_state_dict(best[2])
    picked = best[1] if best else epoch
    dev = next(h["dev"] for h in history if h["epoch"] == picked)  # evaluation is deterministic
    metrics = {x: {"dev": dev[x], "test": common.evaluate(model, *evals[x]["test"], labels, tok.pad_token_id,
                                                          device, autocast)} for x in evals}
    common.log_metrics("final", metrics)
    path = common.save_results(out_dir, method, settings, metrics, history=history, selected_epoch=picked,
                               peak_memory_mb=common.peak_memory_mb(device), steps=step, world_size=1,
                               train_examples_seen=seen, train_examples_per_s=seen / max(t_train, 1e-9),
                               wall_s=time.time() - t_start)
    common.log(f"wrote {path}")
    return metrics


# ---------------------------------------------------------------------------- stage 2: extractive QA


def finetune_qa(args, method, data_dir, out_dir, settings, device, autocast):
    """Stage 2 for QA: SQuAD v1.1 (English) training, MLQA evaluation per language (F1, exact match)."""
    langs = [x for x in args.lang.split(",") if x and x != "en"]
    try:
        train = common.load_qa(data_dir, args.train_lang, "train")
        if 0 < args.limit_train < len(train):
            train = [train[i] for i in sorted(random.Random(0).sample(range(len(train)), args.limit_train))]
        evals = {x: {s: common.load_qa(data_dir, x, s) for s in ("dev", "test")} for x in ["en", *langs]}
    except common.DataError as e:
        raise SystemExit(f"error: {e}") from None
    enc, tok = common.load_encoder(args.model, [t for ex in train for t in (ex.question, ex.context)], out_dir,
                                   args.max_len)
    for note in common.notes():
        common.log(f"data note: {note}")
    feats = [f for f in common.qa_features(tok, train, args.max_len) if f["start"] or train[f["example"]].answers]
    evals = {x: {s: (exs, common.qa_features(tok, exs, args.max_len)) for s, exs in d.items()}
             for x, d in evals.items()}
    common.log(f"train {len(train)} questions, {len(feats)} windows")
    model = common.QAModel(enc).to(device)
    opt = adamw(model, args.lr, device, args.head_lr)
    total = args.epochs * math.ceil(len(feats) / args.batch_size)
    total = min(total, args.max_steps) if args.max_steps else total
    sched = schedule(opt, total, args.warmup_steps)
    rng, pad = random.Random(args.seed), tok.pad_token_id

    history, step, t_start = [], 0, time.time()
    for epoch in range(1, args.epochs + 1):
        rng.shuffle(feats)
        losses = []
        for s in range(0, len(feats), args.batch_size):
            chunk = feats[s:s + args.batch_size]
            T = max(len(f["input_ids"]) for f in chunk)
            ids = torch.tensor([f["input_ids"] + [pad] * (T - len(f["input_ids"])) for f in chunk], device=device)
            with autocast:
                st, en = model(ids, (ids != pad).long())
            gold = torch.tensor([[f["start"], f["end"]] for f in chunk], device=device)  # (B, 2)
            loss = (F.cross_entropy(st, gold[:, 0]) + F.cross_entropy(en, gold[:, 1])) / 2
            optimizer_step(loss, model.parameters(), opt, sched, step)
            step += 1
            losses.append(loss.item())
            if step % args.log_every == 0 or step == total:
                common.log(f"step {step}/{total} epoch {epoch} | qa {loss.item():.4f} | "
                           f"lr {sched.get_last_lr()[0]:.2e}")
            if step >= total:
                break
        dev = {x: common.qa_evaluate(model, *d["dev"], x, pad, device, autocast) for x, d in evals.items()}
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "dev": dev})
        common.log_metrics(f"epoch {epoch} dev", dev)
        if step >= total:
            break

    # the last epoch's model: dev and test in every language, results.json
    metrics = {x: {s: common.qa_evaluate(model, *v, x, pad, device, autocast) for s, v in d.items()}
               for x, d in evals.items()}
    common.log_metrics("final", metrics)
    path = common.save_results(out_dir, method, settings, metrics, history=history, steps=step,
                               selected_epoch=len(history), wall_s=time.time() - t_start,
                               peak_memory_mb=common.peak_memory_mb(device), world_size=1)
    common.log(f"wrote {path}")
    return metrics


# ---------------------------------------------------------------------------- main


def main(argv=None):
    args = parse_args(argv)
    data_dir = args.data_dir or (str(common.DEMO_DIR) if args.data == "demo" else f"data/{args.data}")
    demo_pairs = args.stage == "align" and not args.parallel  # --data demo: its translations, paired by id
    parallel = [f"demo:{data_dir}:{args.lang}"] if demo_pairs else args.parallel
    # stage 2's results are named after the encoder: stage 1's variant (ppa, ppa-no_tlm, ppa-mlm) or finetune
    method = "ppa_align" if args.stage == "align" else (aligned_from(args.model).get("variant", "finetune")
              + "+translate_train" * args.translate_train + "+code_switch" * args.code_switch
              + "_qa" * (args.data == "mlqa"))
    out_dir = args.out_dir or (f"runs/ppa/align-s{args.seed}" if args.stage == "align" else
                               common.default_out_dir("ppa", args))
    save_dir = args.save_dir or str(Path(out_dir) / "aligned")
    settings = {**vars(args), "data_dir": data_dir, "out_dir": out_dir, "save_dir": save_dir,
                "parallel": parallel}  # as used

    # setup: the commit, one process, device, seeds, bf16 autocast
    common.git_commit()  # the commit this run starts from, for results.json
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SystemExit("error: ppa_moco_tlm.py runs on one process (the MoCo queue is not gathered "
                         "across processes)")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {args.device}: this torch ({torch.__version__}) sees no CUDA GPU")
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    bf16 = args.amp if args.amp is not None else device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    common.check_out_dir(settings)  # never replace a results.json made with other settings
    common.log(f"{method} | stage {args.stage} | device {device} | bf16 autocast {bf16}\nargs {settings}")

    if args.stage == "align":
        return align(args, parallel, out_dir, save_dir, settings, device, autocast)
    if args.data == "mlqa":
        return finetune_qa(args, method, data_dir, out_dir, settings, device, autocast)
    return finetune(args, method, data_dir, out_dir, settings, device, autocast)


if __name__ == "__main__":
    main()
