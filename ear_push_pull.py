"""EAR: Embedding-Push, Attention-Pull and Robust targets from English-only resources, on XLM-R.

Paper: Ding, Liu, Fang, Mao, Zhao, Zhu, Liu, Tian & Chen (2022), "A Simple and Effective Method to
       Improve Zero-Shot Cross-Lingual Transfer Learning" (EAR), COLING 2022. Baseline RS-DA: Huang,
       Ahmad, Peng & Chang (2021), "Improving Zero-Shot Cross-Lingual Transfer Learning via Robust
       Training", EMNLP 2021.
Reference code: KB-Ding/EAR @ a9d0700, models/xlmr_ept_apt.py (the losses), utils/perturb_aug_ori.py
       (augmentation), scripts/*.sh; uclanlp/Robust-XLT @ 175cddb, perturb.py.

Usage:
    python ear_push_pull.py --data xnli --lang all --model xlm-roberta-base
    python ear_push_pull.py --data pawsx --lang de --model xlm-roberta-base --mode rsda --copies 10
    python ear_push_pull.py --data demo --lang de --model tiny                     # CPU, < 1 min

What this file adds to common.py: synonym augmentation, the Embedding-Push and Attention-Pull losses,
the Robust target (cross-entropy on both the original and the augmented example), and the loop. Only
English labelled data and an English synonym list (--neighbours) are used, no translations. --mode
plain is plain fine-tuning (zero-shot), --mode rsda trains on augmented copies only (RS-DA), --alpha 0
/ --beta 0 are the paper's ablations without EPT / APT. Tasks: PAWS-X and XNLI (both sentences
augmented independently) and, an extension the paper does not cover, intent classification on the
intent/slot datasets.

Where the paper and the official code disagree, and what we follow:
  1. Weights. Paper (section 3.1, tuned in Appendix B): alpha = 1 (EPT), beta = 0.1 (APT); official
     scripts: alpha = 0.1, beta = 1. We default to the paper (--alpha 0.1 --beta 1: the scripts').
  2. Epochs. Paper: one epoch. Official PAWS-X scripts: 30. We default to the paper.
  3. Selection. The official code picks its checkpoint on the test sets; we select on English dev
     (--select_on en by default here), as RS-DA does.
  4. EPT layer. Paper: "pushing away (x, x^a) in the embedding space", visualised "using the
     embedding layer"; code: hidden_states[0], the embedding layer's output (with its dropout). We
     follow the code (--ep_layer embeddings); --ep_layer last uses the last layer instead.
  5. APT maps. Code: post-dropout attention probabilities of the 6th layer over all 128 x 128
     positions, pads included. We use the probabilities before attention dropout (`AttentionProbs`,
     tested against an eager-attention pass) and average only over real tokens of both x and x^a
     (`attention_pull_loss`). Layer: the 6th, as paper (on 12-layer mBERT/XLM-R base, "the middle
     layer") and code, also on 24-layer models; an encoder with fewer than 12 layers defaults to its
     middle one (layer 1 of the tiny demo encoder).
  6. Augmentation is seeded by --seed (the official code's is not).

Shapes: B batch, T subwords, d hidden size, H heads, C classes.
"""
import argparse
import contextlib
import json
import math
import os
import random
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

import common

# The paper's settings (Appendix A: lr 2e-5, batch 32, max length 128, one epoch), on every dataset; demo
# is tuned for --model tiny (a random encoder needs a far larger lr than a pretrained one).
PAPER = {d: dict(lr=2e-5, epochs=1, max_len=128, batch_size=32) for d in common.DATASETS}
PAPER["demo"] = dict(lr=2e-3, epochs=8, max_len=64, batch_size=16)
DEMO_SYNONYMS = common.DEMO_DIR / "synonyms.json"  # ships with the repository: the demo's English words


class DefaultLayer(int):
    """--ap_layer when not given: 6 (the paper's) until `main` knows the encoder's depth (`ap_layer`).
    An int, so the parsed args compare and serialise as 6."""


def ap_layer(n_layers):
    """The default APT layer (1-based) of an encoder with n_layers: the 6th (the paper's, on 12-layer
    models, and the code's fixed index 5, also on 24-layer ones), or the middle one of a shallower encoder."""
    return 6 if n_layers >= 12 else max(1, n_layers // 2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    # --- run (the same flags in every method file)
    p.add_argument("--data", choices=list(PAPER), default="demo", help="dataset (default: demo)")
    p.add_argument("--lang", default="de", help="target language(s): th, de,es,fr or all (default: de)")
    p.add_argument("--model", default="xlm-roberta-large", help="HF hub name or local folder; tiny builds a small "
                   "random encoder and tokenizer on the data, offline (default: xlm-roberta-large)")
    p.add_argument("--data_dir", help="dataset folder in its official layout (default: data/<data>)")
    p.add_argument("--train_lang", default="en", help="language of the labelled training data; a target "
                   "language gives the 'Target' upper bound (default: en)")
    p.add_argument("--epochs", type=int, help="training epochs (default: the paper's for --data, PAPER)")
    p.add_argument("--batch_size", type=int, help="effective batch size over all processes (default: PAPER)")
    p.add_argument("--lr", type=float, help="peak learning rate of the encoder (default: PAPER)")
    p.add_argument("--max_len", type=int, help="max subwords per input (default: PAPER)")
    p.add_argument("--seed", type=int, default=7, help="random seed (default: 7, the official scripts')")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, help="bf16 autocast (default: on CUDA only; "
                   "--amp also on CPU, --no-amp never)")
    p.add_argument("--out_dir", help="where results.json goes (default: runs/<method>/<data>-<lang>-<train_lang>-"
                   "<model>-s<seed>[-steps<N>][-n<limit_train>])")
    p.add_argument("--overwrite", action="store_true", help="replace a results.json made with other settings")
    p.add_argument("--max_steps", type=int, default=0, help="stop after N optimizer steps (default: 0, no cap)")
    p.add_argument("--limit_train", type=int, default=0, help="train on a fixed random subset of N examples, "
                   "the same for every seed and method (default: 0, all)")
    p.add_argument("--select_on", choices=["last", "en", "target"], default="en", help="the epoch reported: "
                   "the final one (as the official code), best English dev or best target dev (default: en, "
                   "as RS-DA)")
    p.add_argument("--log_every", type=int, default=50, help="progress line every N steps (default: 50)")
    p.add_argument("--dev_halves", action="store_true", help="pawsx/xnli without train sets: train on half of "
                   "the row-parallel dev pairs, dev and test on quarters of the rest")
    # --- method
    p.add_argument("--mode", choices=["ear", "rsda", "plain"], default="ear", help="EAR; RS-DA "
                   "(cross-entropy on augmented copies only); plain fine-tuning, the zero-shot baseline "
                   "(default: ear)")
    p.add_argument("--neighbours", help="counter-fitted synonym list {word: [neighbours]} (Alzantot et al. "
                   "2018), as RS-DA and EAR use (default: data/synonyms/counterfitted_neighbors.json; with "
                   "--data demo the repository's data/demo/synonyms.json)")
    p.add_argument("--copies", type=int, default=3, help="augmented copies per example (default: 3, official "
                   "EAR; RS-DA: 10 PAWS-X, 3 XNLI)")
    p.add_argument("--alpha", type=float, default=1.0, help="EPT weight (default: 1, paper; code 0.1)")
    p.add_argument("--beta", type=float, default=0.1, help="APT weight (default: 0.1, paper; code 1)")
    p.add_argument("--ap_layer", type=int, default=DefaultLayer(6), help="1-based encoder layer for APT "
                   "(default: 6, as paper and code; an encoder with fewer than 12 layers: its middle layer)")
    p.add_argument("--ep_layer", choices=["embeddings", "last"], default="embeddings", help="what EPT "
                   "mean-pools: the embedding layer's output (official code) or the last layer (default: "
                   "embeddings)")
    p.add_argument("--cls", choices=["pooler", "first"], default="first", help="what the classifier reads: "
                   "the first token's last state (paper, Eq. 3) or the pooler output (default: first)")
    p.add_argument("--head_lr", type=float, help="peak lr of the classifier head (default: --lr, as the "
                   "code)")
    first = p.parse_known_args(argv)[0]
    p.set_defaults(**PAPER[first.data])  # the paper's values for --data; flags given win
    args = p.parse_args(argv)
    for k in ("epochs", "batch_size", "max_len", "log_every", "copies"):
        if getattr(args, k) < 1:
            p.error(f"--{k} must be at least 1, got {getattr(args, k)}")
    if args.lr <= 0 or (args.head_lr is not None and args.head_lr <= 0) or args.max_steps < 0 or args.limit_train < 0:
        p.error("--lr and --head_lr must be positive, --max_steps and --limit_train 0 or positive")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", args.device):
        p.error(f"--device {args.device}: expected auto, cpu, cuda or cuda:N")
    if args.lang != "all" and any(not x.strip() for x in args.lang.split(",")):
        p.error(f"--lang {args.lang!r}: an empty language code; give codes separated by commas, e.g. de,es")
    return args


# ---------------------------------------------------------------------------- augmentation and losses


def load_neighbours(path):
    if not Path(path).is_file():
        raise SystemExit(f"error: --neighbours {path}: file not found. It is counterfitted_neighbors.json of "
                         "uclanlp/Robust-XLT (also in KB-Ding/EAR): {word: [neighbour, ...]}")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as e:
        raise SystemExit(f"error: --neighbours {path}: not JSON ({e})") from None
    shape = "expected {word: [neighbour, ...]}"
    if not isinstance(data, dict):
        raise SystemExit(f"error: --neighbours {path}: {shape}, found a JSON {type(data).__name__}")
    for w, n in data.items():
        if not isinstance(n, list) or not all(isinstance(x, str) for x in n):
            raise SystemExit(f"error: --neighbours {path}: {shape}, found "
                             f"{json.dumps({w: n})[:80]}")
    return {w: n for w, n in data.items() if n}


def augment(words, neighbours, rng):
    """Replace each word that has neighbours by a uniform draw from [word] + neighbours (so it stays
    with probability 1/(k+1)); exact, case-sensitive match, as the official perturb.py."""
    return [rng.choice([w] + neighbours[w]) if w in neighbours else w for w in words]


def augmented(ex, neighbours, rng):
    """An augmented copy of an example: words for intent data; each side of a pair on its own."""
    if isinstance(ex, common.Pair):
        return common.Pair(ex.id, " ".join(augment(ex.a.split(" "), neighbours, rng)),
                           " ".join(augment(ex.b.split(" "), neighbours, rng)), ex.label)
    return common.Example(ex.id, augment(ex.words, neighbours, rng), ex.intent, ex.slots)


def embedding_push_loss(emb_x, emb_xa, mask_x, mask_xa):
    """Embedding-Push target (Eq. 1): push the mean embeddings of x and x^a apart.

        l_EPT = - 1/(|B| d) sum_x || M(E_x) - M(E_xa) ||^2,   M = mean over the real tokens

    emb_x, emb_xa (B, T, d) token vectors (by default the embedding layer's output); mask_x, mask_xa
    (B, T). The mean includes <s> and </s>, as the official code's pooling. Unbounded below: only
    the embedding LayerNorm keeps it finite."""
    def mean(e, m):
        m = m.unsqueeze(-1).to(e.dtype)
        return (e * m).sum(1) / m.sum(1).clamp(min=1)
    return -F.mse_loss(mean(emb_x.float(), mask_x), mean(emb_xa.float(), mask_xa))


def attention_pull_loss(att_x, att_xa, mask_x, mask_xa):
    """Attention-Pull target (Eq. 2): pull the multi-head attention maps of x and x^a together.

        l_APT = 1/N sum_{b, h, i, j valid} (A_x[b, h, i, j] - A_xa[b, h, i, j])^2

    att_x, att_xa (B, H, T, T) attention probabilities at one layer; mask_x, mask_xa (B, T). Like
    the official code the maps are compared position by position (no word alignment: a synonym with
    another number of subwords shifts what follows). Unlike it, only pairs (i, j) where i and j are
    real tokens in both x and x^a count, so padding neither dilutes nor inflates the mean."""
    both = (mask_x * mask_xa).to(att_x.dtype)  # (B, T)
    valid = (both[:, :, None] * both[:, None, :]).unsqueeze(1)  # (B, 1, T, T)
    sq = (att_x.float() - att_xa.float()) ** 2 * valid
    return sq.sum() / (valid.sum() * att_x.shape[1]).clamp(min=1)


def robust_ce_loss(logits_x, logits_xa, labels):
    """Robust target (Eq. 4): cross-entropy on the original and on the augmented example, both with
    the gold label: l_CE = CE(P_x, y) + CE(P_xa, y), each a batch mean."""
    return F.cross_entropy(logits_x.float(), labels) + F.cross_entropy(logits_xa.float(), labels)


class AttentionProbs:
    """Attention probabilities of one encoder layer, recomputed by a forward hook from that layer's
    input: softmax(Q K^T / sqrt(d_head) + key mask), before attention dropout. The model's own
    forward pass is untouched (it keeps SDPA attention). Set `mask` (B, T) before a forward whose
    maps you want; with mask None (evaluation) the hook does nothing."""

    def __init__(self, encoder, layer):
        self.attn = encoder.encoder.layer[layer - 1].attention.self
        self.mask, self.probs = None, None
        self.handle = self.attn.register_forward_hook(self.hook)

    def hook(self, module, inputs, output):
        if self.mask is None:  # not asked for (evaluation)
            return
        h = inputs[0]  # (B, T, d)
        B, T, _ = h.shape
        q = module.query(h).view(B, T, -1, module.attention_head_size).transpose(1, 2)
        k = module.key(h).view(B, T, -1, module.attention_head_size).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(module.attention_head_size)
        scores = scores.masked_fill(self.mask[:, None, None, :] == 0, torch.finfo(scores.dtype).min)
        self.probs = scores.softmax(-1)


# ---------------------------------------------------------------------------- main


def main(argv=None):
    args = parse_args(argv)
    data_dir = args.data_dir or (str(common.DEMO_DIR) if args.data == "demo" else f"data/{args.data}")
    out_dir = args.out_dir or common.default_out_dir(args.mode, args)
    head_lr = args.head_lr or args.lr
    synonyms = args.neighbours or str(DEMO_SYNONYMS if args.data == "demo" else
                                      "data/synonyms/counterfitted_neighbors.json")
    settings = {**vars(args), "data_dir": data_dir, "out_dir": out_dir, "head_lr": head_lr,
                "neighbours": synonyms}  # as used (ap_layer: once the encoder's depth is known)

    # setup: the commit, seeds, device, bf16 autocast, and one process per GPU under torchrun
    common.git_commit()  # the commit this run starts from, for results.json
    world = int(os.environ.get("WORLD_SIZE", "1"))
    ddp = world > 1
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {args.device}: this torch ({torch.__version__}) sees no CUDA GPU")
    if args.batch_size % world:
        raise SystemExit(f"error: --batch_size {args.batch_size} must be divisible by the {world} processes")
    if ddp:
        if not dist.is_initialized():  # (already started when a test runs several mains in one process)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
    main_rank = not ddp or dist.get_rank() == 0  # only rank 0 evaluates, logs and writes results
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    bf16 = args.amp if args.amp is not None else device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    common.check_out_dir(settings)  # never replace a results.json made with other settings
    common.log(f"{args.mode} | device {device} | bf16 autocast {bf16} | processes {world}\nargs {settings}")

    # data: English training examples, their augmented copies (seeded), dev/test sets
    neighbours = load_neighbours(synonyms) if args.mode != "plain" else {}
    try:
        langs, train, _, evals = common.load_task(args.data, data_dir, args.lang, args.train_lang,
                                                  args.limit_train, False, args.dev_halves)
        rng, copies = random.Random(args.seed), 0 if args.mode == "plain" else args.copies
        aug, orig = [augmented(e, neighbours, rng) for _ in range(copies) for e in train], train * copies
        texts = common.texts_of(train + aug, {}, evals)
        enc, tok = common.load_encoder(args.model, texts, out_dir, args.max_len)
        labels = common.Labels.from_train(args.data, train)
        where = f"{args.data}/{args.train_lang}/train"
        items = [common.encode(tok, e, labels, args.max_len, where) for e in (aug if copies else train)]
        if args.mode == "ear":  # each copy x^a carries its original x as second stream, like a translation
            for it, o in zip(items, orig):
                x = common.encode(tok, o, labels, args.max_len, where)
                it["tgt"] = [x["input_ids"]]
                if "token_type_ids" in x:  # BERT-style segment ids of a sentence pair
                    it["tgt_types"] = [x["token_type_ids"]]
        evals = common.encode_evals(tok, evals, labels, args.max_len, args.data)
    except common.DataError as e:  # bad input: one line naming the file and line
        raise SystemExit(f"error: {e}") from None
    for note in common.notes():
        common.log(f"data note: {note}")
    changed = sum(a != o for a, o in zip(aug, orig))
    common.log(f"train {len(items)} items from {len(train)} {args.train_lang} examples, "
               f"{len(labels.intents)} classes" + (f" | {changed} of {len(aug)} augmented copies differ "
                                                   "from their original" if aug else ""))
    shard = (dist.get_rank(), world) if ddp else None  # each process reads its own 1/world of the data
    loader = common.make_loader(items, args.batch_size // world, tok.pad_token_id, True, args.seed, shard)

    # model: encoder + a linear classifier (slots are not trained), the attention probe, the embedding
    # hook; AdamW without weight decay, linear decay without warm-up (the scripts'), gradients clipped at 1
    model = common.TaskModel(enc, len(labels.intents), 0, args.cls).to(device)
    n_layers = enc.config.num_hidden_layers
    apt_layer = ap_layer(n_layers) if isinstance(args.ap_layer, DefaultLayer) else args.ap_layer
    settings["apt_layer"] = apt_layer  # results.json records the layer used (ap_layer: as asked)
    if args.mode == "ear" and not 1 <= apt_layer <= n_layers:
        raise SystemExit(f"error: --ap_layer {apt_layer}: the encoder has {n_layers} layers; "
                         f"pass 1 to {n_layers}, or leave it out for layer {ap_layer(n_layers)}")
    if args.mode == "ear":
        common.log(f"APT at layer {apt_layer} of the encoder's {n_layers} (--ap_layer to choose another)")
    probe = AttentionProbs(enc, apt_layer) if args.mode == "ear" else None
    emb_out = {}  # the embedding layer's output, for EPT
    if args.mode == "ear" and args.ep_layer == "embeddings":
        enc.embeddings.register_forward_hook(lambda m, i, o: emb_out.__setitem__("x", o))
    opt = torch.optim.AdamW(model.param_groups(args.lr, head_lr), lr=args.lr, weight_decay=0.0,
                            fused=device.type in ("cpu", "cuda"))
    total = args.epochs * len(loader)
    total = min(total, args.max_steps) if args.max_steps else total
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / total))
    net = model if not ddp else \
        torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

    # training, with dev evaluation after every epoch; --select_on keeps the best epoch's weights
    key = "accuracy"  # sentence(-pair) classification only
    watch = ["en"] if args.select_on == "en" else [x for x in langs if x != "en"] or ["en"]
    history, best = [], None  # best: (dev score, epoch, weights on the CPU)
    step, seen, t_train, t_start = 0, 0, 0.0, time.time()
    for epoch in range(1, args.epochs + 1):
        if ddp:
            loader.sampler.set_epoch(epoch)
        t0, sums = time.time(), torch.zeros(4, device=device)  # ce, ept, apt, steps (no per-step sync)
        for b in loader:
            B = len(b["intent"])
            ids, mask, types = b["input_ids"], b["attention_mask"], b.get("token_type_ids")  # types: BERT pairs
            if args.mode == "ear":  # x^a (rows :B) and x (rows B:) through the encoder in one forward pass
                ids, mask = torch.cat([ids, b["tgt_input_ids"]]), torch.cat([mask, b["tgt_attention_mask"]])
                types = None if types is None else torch.cat([types, b["tgt_token_type_ids"]])
            ids, mask, types = ids.to(device), mask.to(device), None if types is None else types.to(device)
            y = b["intent"].to(device)
            if probe:
                probe.mask = mask
            with autocast:
                _, logits, _, h_last = net(ids, mask, types)
            ept = apt = torch.zeros((), device=device)
            if args.mode == "ear":
                ce = robust_ce_loss(logits[B:], logits[:B], y)  # Eq. 4
                emb = emb_out["x"] if args.ep_layer == "embeddings" else h_last
                ept = embedding_push_loss(emb[B:], emb[:B], mask[B:], mask[:B])  # Eq. 1
                apt = attention_pull_loss(probe.probs[B:], probe.probs[:B], mask[B:], mask[:B])  # Eq. 2
                probe.mask = None
            else:
                ce = F.cross_entropy(logits.float(), y)
            loss = ce + args.alpha * ept + args.beta * apt  # Eq. 5
            if not torch.isfinite(loss):  # stop before a NaN reaches the weights
                raise SystemExit(f"error: step {step + 1}: the loss is {loss.item()} "
                                 f"(ce {ce.item()}, ept {ept.item()}, apt {apt.item()}); stopping")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step, seen = step + 1, seen + B * world
            sums += torch.stack([ce.detach(), ept.detach(), apt.detach(), torch.ones((), device=device)])
            if step % args.log_every == 0 or step == total:
                el = t_train + time.time() - t0
                common.log(f"step {step}/{total} epoch {epoch} | ce {ce.item():.4f} ept {ept.item():.4f} apt "
                           f"{apt.item():.5f} | lr {sched.get_last_lr()[0]:.2e} | {seen / el:.1f} ex/s | "
                           f"eta {el / step * (total - step) / 60:.1f} min")
            if step >= total:
                break
        t_train += time.time() - t0
        if main_rank:
            dev = {x: common.evaluate(model, *evals[x]["dev"], labels, tok.pad_token_id, device, autocast)
                   for x in evals}
            history.append({"epoch": epoch, "train_ce_loss": (sums[0] / sums[3]).item(),
                            "train_ept_loss": (sums[1] / sums[3]).item(),
                            "train_apt_loss": (sums[2] / sums[3]).item(), "dev": dev})
            common.log_metrics(f"epoch {epoch} dev", dev)
            score = sum(dev[x][key] for x in watch) / len(watch)
            if args.select_on != "last" and (best is None or score > best[0]):
                best = (score, epoch, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
        if ddp:
            dist.barrier()
        if step >= total:
            break

    # the reported model: test in every language, results.json
    metrics = None
    if main_rank:
        if best is not None:
            common.log(f"restoring epoch {best[1]} (best {args.select_on} dev {key} {best[0]:.2f})")
            model.load_state_dict(best[2])
        picked = best[1] if best else epoch
        dev = next(h["dev"] for h in history if h["epoch"] == picked)  # evaluation is deterministic
        metrics = {x: {"dev": dev[x], "test": common.evaluate(model, *evals[x]["test"], labels, tok.pad_token_id,
                                                              device, autocast)} for x in evals}
        common.log_metrics("final", metrics)
        path = common.save_results(out_dir, args.mode, settings, metrics, history=history, selected_epoch=picked,
                                   peak_memory_mb=common.peak_memory_mb(device), steps=step, world_size=world,
                                   train_examples_seen=seen, train_examples_per_s=seen / max(t_train, 1e-9),
                                   wall_s=time.time() - t_start)
        common.log(f"wrote {path}")
    if ddp:
        dist.barrier()
        dist.destroy_process_group()
    return metrics


if __name__ == "__main__":
    main()
