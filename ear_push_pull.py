"""EAR: Embedding-Push, Attention-Pull and Robust targets from English-only resources, on XLM-R.

Paper: Ding et al. (2022), "A Simple and Effective Method to Improve Zero-Shot Cross-Lingual
       Transfer Learning" (EAR), COLING 2022. Baseline RS-DA: Huang et al. (2021), "Improving
       Zero-Shot Cross-Lingual Transfer Learning via Robust Training", EMNLP 2021.
Reference code: KB-Ding/EAR @ a9d0700, models/xlmr_ept_apt.py (the losses), utils/perturb_aug_ori.py
       (augmentation), scripts/*.sh; uclanlp/Robust-XLT @ 175cddb, perturb.py.

Usage:
    python ear_push_pull.py --data xnli --lang all --model xlm-roberta-base
    python ear_push_pull.py --data pawsx --lang de --model xlm-roberta-base --mode rsda --copies 10
    python ear_push_pull.py --data demo --lang de --model tiny                     # CPU, < 1 min

The method, English only: CE on examples x and on copies x^a with English synonyms swapped in
(--neighbours), mean embeddings of x, x^a pushed apart (EPT), attention maps pulled together (APT):
    L = CE(P_x, y) + CE(P_xa, y) + alpha * l_EPT(x, x^a) + beta * l_APT(x, x^a)      (Eq. 5)
--mode rsda: CE on the augmented copies only (RS-DA); plain: fine-tuning (zero-shot); --alpha 0 /
--beta 0: ablations. Tasks: PAWS-X, XNLI (each sentence augmented alone); extension: intent data.

Deviations from the paper or the official code, and what we follow (cited in the code as "dev. N"):
  1. Weights. Paper (section 3.1, Appendix B): alpha = 1 (EPT), beta = 0.1 (APT); official scripts:
     alpha = 0.1, beta = 1. Ours: the paper (--alpha 0.1 --beta 1: the scripts').
  2. Epochs. Paper: one epoch. Official PAWS-X scripts: 30. Ours: the paper.
  3. Selection. Code: the checkpoint best on the test sets. Ours: best English dev, as RS-DA.
  4. EPT layer. Paper: "pushing away (x, x^a) in the embedding space"; code: hidden_states[0], the
     embedding layer's output (with its dropout). Ours: the code (--ep_layer last: the last layer).
  5. APT maps. Code: post-dropout attention probabilities of the 6th layer, all 128 x 128 positions,
     pads included. Ours: pre-dropout (`AttentionProbs`), real tokens of both x and x^a only; layer
     6 (paper: "the middle layer" of 12; code), also of 24; under 12 layers the middle (tiny: 1).
  6. Augmentation is seeded by --seed (the official code's is not).
  7. Precision. The code: fp32. Ours: --dtype auto = bf16 autocast on GPUs with bf16, else fp16
     with a GradScaler; fp32 on the CPU.
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

# The paper's settings (Appendix A), on every dataset; demo: for --model tiny (a far larger lr).
PAPER = {d: dict(lr=2e-5, epochs=1, max_len=128, batch_size=32) for d in common.DATASETS}
PAPER["demo"] = dict(lr=2e-3, epochs=8, max_len=64, batch_size=16)


def ap_layer(n_layers):  # default APT layer: the 6th (paper; code, also of 24), or the middle one
    return min(6, max(1, n_layers // 2))


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


def parse_args(argv=None):
    table = "\n".join(f"  {k:8} " + "  ".join(f"{n} {v:g}" for n, v in d.items())
                      for k, d in PAPER.items())
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=f"per --data (Appendix A; demo: --model tiny):\n{table}")
    arg, per_data, weight = p.add_argument, "(default: per --data, below)", at_least(0.0, float)
    # --- run (the same flags in every method file)
    arg("--data", choices=list(PAPER), default="demo", help="dataset (default: demo)")
    arg("--lang", default="de", help="target language(s): th, de,es,fr or all (default: de)")
    arg("--model", default="xlm-roberta-large", help="HF hub name or local folder; tiny builds a "
        "small random encoder and tokenizer on the data, offline (default: xlm-roberta-large)")
    arg("--data_dir", help="dataset folder in its official layout (default: data/<data>)")
    arg("--train_lang", default="en", help="language of the labelled training data; a target "
        "language gives the 'Target' upper bound (default: en)")
    arg("--epochs", type=at_least(1), help=f"training epochs {per_data}")
    arg("--batch_size", type=at_least(1), help=f"batch size, all processes {per_data}")
    arg("--lr", type=positive, help=f"peak learning rate of the encoder {per_data}")
    arg("--max_len", type=at_least(8), help=f"max subwords per input {per_data}")
    arg("--seed", type=int, default=7, help="random seed (default: 7, the official scripts')")
    arg("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    arg("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
        help="autocast precision; auto: bf16 (else fp16) on a GPU, fp32 on the CPU")
    arg("--threads", type=at_least(0), default=0, help="torch CPU threads (default: 0, torch's)")
    arg("--out_dir", help="where results.json goes (default: runs/<method>/<data>-<lang>-"
        "<train_lang>-<model>-s<seed>[-steps<N>][-n<limit_train>])")
    arg("--overwrite", action="store_true", help="replace a results.json of other code or settings")
    arg("--max_steps", type=at_least(0), default=0, help="stop after N steps (default: 0, no cap)")
    arg("--limit_train", type=at_least(0), default=0, help="a fixed subset of N (default: 0, all)")
    arg("--max_eval", type=at_least(0), default=0, help="evaluate on a fixed subset of N examples "
        "of each dev and test set, for smoke runs (default: 0, all)")
    arg("--select_on", choices=["last", "en", "target"], default="en", help="the epoch reported: "
        "the last, best English dev or best target dev (default: en, as RS-DA)")
    arg("--log_every", type=at_least(1), default=50, help="log every N steps (default: 50)")
    arg("--dev_halves", action="store_true", help="pawsx/xnli without train sets: train on half of "
        "the row-parallel dev pairs, dev and test on quarters of the rest")
    # --- method
    arg("--mode", choices=["ear", "rsda", "plain"], default="ear", help="EAR; RS-DA (cross-entropy "
        "on augmented copies only); plain fine-tuning, the zero-shot baseline (default: ear)")
    arg("--neighbours", help="counter-fitted synonyms {word: [neighbours]}, as RS-DA and EAR "
        "(default: data/synonyms/counterfitted_neighbors.json; demo: data/demo/synonyms.json)")
    arg("--copies", type=at_least(1), default=3, help="augmented copies per example (default: 3)")
    arg("--alpha", type=weight, default=1.0, help="EPT weight (default: 1, paper; code 0.1)")
    arg("--beta", type=weight, default=0.1, help="APT weight (default: 0.1, paper; code 1)")
    arg("--ap_layer", type=at_least(1), help="APT layer, 1-based (default: 6; < 12 layers: middle)")
    arg("--ep_layer", choices=["embeddings", "last"], default="embeddings", help="what EPT pools: "
        "the embedding layer's output (code) or the last layer's (default: embeddings)")
    arg("--cls", choices=["pooler", "first"], default="first", help="what the classifier reads: "
        "the first token's last state (paper, Eq. 3) or the pooler output (default: first)")
    arg("--head_lr", type=positive, help="peak lr of the classifier (default: --lr, as the code)")
    p.set_defaults(**PAPER[p.parse_known_args(argv)[0].data])  # per --data; flags given win
    args = p.parse_args(argv)
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", args.device):
        p.error(f"--device {args.device}: expected auto, cpu, cuda or cuda:N")
    if args.lang != "all" and any(not x.strip() for x in args.lang.split(",")):
        p.error(f"--lang {args.lang!r}: an empty language code; give codes separated by commas")
    return args


# ---------------------------------------------------------------------------- augmentation, losses
def load_neighbours(path):
    """The synonym list {word: [neighbour, ...]}; a missing file or another shape is an error."""
    if not Path(path).is_file():
        raise SystemExit(f"error: --neighbours {path}: not found. It is "
                         "counterfitted_neighbors.json of uclanlp/Robust-XLT (also in KB-Ding/EAR)")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as e:
        raise SystemExit(f"error: --neighbours {path}: not JSON ({e})") from None
    if not isinstance(data, dict) or not all(isinstance(n, list) and all(
            isinstance(x, str) for x in n) for n in data.values()):
        raise SystemExit(f"error: --neighbours {path}: expected {{word: [neighbour, ...]}}")
    return {w: n for w, n in data.items() if n}


def augmented(ex, neighbours, rng):
    """An augmented copy: a word with k neighbours becomes a uniform draw from [word] + neighbours
    (kept with probability 1/(k+1)); exact, case-sensitive match (perturb.py); a pair: each side."""
    def swap(words):
        return [rng.choice([w] + neighbours[w]) if w in neighbours else w for w in words]
    if isinstance(ex, common.Pair):
        return common.Pair(ex.id, " ".join(swap(ex.a.split(" "))), " ".join(swap(ex.b.split(" "))),
                           ex.label)
    return common.Example(ex.id, swap(ex.words), ex.intent, ex.slots)


def embedding_push_loss(emb_x, emb_xa, mask_x, mask_xa):
    """Embedding-Push target (Eq. 1): push the mean embeddings of x and x^a apart.
        l_EPT = - 1/(|B| d) sum_x || M(E_x) - M(E_xa) ||^2,   M = mean over the real tokens
    emb_x, emb_xa (B, T, d) token vectors (default: the embedding layer's output), masks (B, T); the
    mean includes <s> and </s> (as the code). Unbounded below: only LayerNorm keeps it finite."""
    def mean(e, m):
        m = m.unsqueeze(-1).to(e.dtype)
        return (e * m).sum(1) / m.sum(1).clamp(min=1)
    return -F.mse_loss(mean(emb_x.float(), mask_x), mean(emb_xa.float(), mask_xa))


def attention_pull_loss(att_x, att_xa, mask_x, mask_xa):
    """Attention-Pull target (Eq. 2): pull the multi-head attention maps of x and x^a together.
        l_APT = 1/N sum_{b, h, i, j valid} (A_x[b, h, i, j] - A_xa[b, h, i, j])^2
    att_x, att_xa (B, H, T, T) attention probabilities at one layer, masks (B, T). As the code: maps
    compared position by position (no word alignment: a synonym's other length shifts what follows).
    Unlike it: only (i, j) real in both x and x^a count, so padding neither dilutes nor inflates."""
    both = (mask_x * mask_xa).to(att_x.dtype)  # (B, T)
    valid = (both[:, :, None] * both[:, None, :]).unsqueeze(1)  # (B, 1, T, T)
    sq = (att_x.float() - att_xa.float()) ** 2 * valid
    return sq.sum() / (valid.sum() * att_x.shape[1]).clamp(min=1)


def robust_ce_loss(logits_x, logits_xa, labels):
    """Robust target (Eq. 4): l_CE = CE(P_x, y) + CE(P_xa, y), gold label on both, batch means."""
    return F.cross_entropy(logits_x.float(), labels) + F.cross_entropy(logits_xa.float(), labels)


class AttentionProbs:
    """Attention probabilities of one layer, recomputed by a forward hook from its input:
    softmax(Q K^T / sqrt(d_head) + key mask), before attention dropout; the model's forward (SDPA)
    is untouched. Set `mask` (B, T) before each forward whose maps you want; None: no work."""
    def __init__(self, encoder, layer):
        self.mask, self.probs = None, None
        encoder.encoder.layer[layer - 1].attention.self.register_forward_hook(self.hook)

    def hook(self, module, inputs, output):
        if self.mask is None:  # not asked for (evaluation)
            return
        h = inputs[0]  # (B, T, d)
        B, T, _ = h.shape
        q = module.query(h).view(B, T, -1, module.attention_head_size).transpose(1, 2)
        k = module.key(h).view(B, T, -1, module.attention_head_size).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(module.attention_head_size)
        scores = scores.masked_fill(self.mask[:, None, None, :] == 0, torch.finfo(scores.dtype).min)
        self.probs, self.mask = scores.softmax(-1), None  # used once: evaluation skips the work


# ---------------------------------------------------------------------------- main
def main(argv=None):
    args = parse_args(argv)
    data_dir = args.data_dir or str(common.DEMO_DIR if args.data == "demo" else f"data/{args.data}")
    out_dir = args.out_dir or common.default_out_dir(args.mode, args)
    head_lr = args.head_lr or args.lr
    synonyms = args.neighbours or str(common.DEMO_DIR / "synonyms.json" if args.data == "demo" else
                                      "data/synonyms/counterfitted_neighbors.json")  # demo: shipped
    settings = {**vars(args), "data_dir": data_dir, "out_dir": out_dir, "head_lr": head_lr,
                "neighbours": synonyms}  # as used; apt_layer once the encoder's depth is known
    # setup: one process per GPU under torchrun (WORLD_SIZE set), else one process
    world = int(os.environ.get("WORLD_SIZE", "1"))
    ddp = world > 1
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {args.device}: this torch sees no CUDA GPU")
    if args.batch_size % world:
        raise SystemExit(f"error: --batch_size {args.batch_size}: not divisible by {world} ranks")
    if ddp:
        if not dist.is_initialized():  # (already started when a test runs several mains at once)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
    main_rank = not ddp or dist.get_rank() == 0  # only rank 0 evaluates, logs and writes results
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    # precision (dev. 7): bf16 has fp32's range, so it needs no loss scaling; fp16 does (GradScaler)
    dtype = args.dtype if args.dtype != "auto" else "float32" if device.type != "cuda" else \
        "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    autocast = contextlib.nullcontext() if dtype == "float32" else \
        torch.autocast(device.type, dtype=getattr(torch, dtype))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == "float16")  # off: a no-op
    common.check_out_dir(settings, __file__)  # before loading: a bad --out_dir fails now, not later
    common.log(f"{args.mode} | device {device} | dtype {dtype} | world {world}\nargs {settings}")
    # data: English training examples, their augmented copies (seeded, dev. 6), dev/test sets
    neighbours = load_neighbours(synonyms) if args.mode != "plain" else {}
    try:
        langs, train, _, evals = common.load_task(args.data, data_dir, args.lang, args.train_lang,
                                                  args.limit_train, False, args.dev_halves,
                                                  args.max_eval)
        rng, copies = random.Random(args.seed), 0 if args.mode == "plain" else args.copies
        aug = [augmented(e, neighbours, rng) for _ in range(copies) for e in train]
        orig = train * copies  # orig[i]: the example aug[i] was drawn from
        enc, tok = common.load_encoder(args.model, common.texts_of(train + aug, {}, evals),
                                       out_dir, args.max_len)
        labels = common.Labels.from_train(args.data, train)
        where = f"{args.data}/{args.train_lang}/train"
        items = [common.encode(tok, e, labels, args.max_len, where) for e in aug or train]
        if args.mode == "ear":  # each copy x^a carries its original x in the translation slot
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
    common.log(f"train {len(items)} items from {len(train)} {args.train_lang} examples | "
               f"{sum(a != o for a, o in zip(aug, orig))} of {len(aug)} copies drew a synonym")
    shard = (dist.get_rank(), world) if ddp else None  # each process reads its own 1/world
    loader = common.make_loader(items, args.batch_size // world, tok.pad_token_id,
                                torch.Generator().manual_seed(args.seed), shard)
    # model: encoder + linear classifier, APT probe, EPT hook; AdamW, no decay or warm-up (scripts')
    model = common.TaskModel(enc, len(labels.intents), 0, args.cls).to(device)
    depth = enc.config.num_hidden_layers
    settings["apt_layer"] = apt_layer = args.ap_layer or ap_layer(depth)  # used; ap_layer: as asked
    probe, emb_out = None, {}  # EAR: layer apt_layer's attention maps; the embedding layer's output
    if args.mode == "ear":
        if apt_layer > depth:
            raise SystemExit(f"error: --ap_layer {apt_layer}: the encoder has only {depth} layers")
        probe = AttentionProbs(enc, apt_layer)  # dev. 5
        if args.ep_layer == "embeddings":  # dev. 4
            enc.embeddings.register_forward_hook(lambda m, i, o: emb_out.__setitem__("x", o))
    opt = torch.optim.AdamW(model.param_groups(args.lr, head_lr), lr=args.lr, weight_decay=0.0,
                            fused=device.type in ("cpu", "cuda"))
    total = min(args.epochs * len(loader), args.max_steps or args.epochs * len(loader))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / total))
    net = model if not ddp else torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device] if device.type == "cuda" else None)  # averages the gradients
    # training, with dev evaluation after every epoch; --select_on keeps the best epoch's weights
    # (dev. 3). A batch b holds B copies x^a (plain: originals) padded to the longest (T):
    # input_ids, attention_mask (B, T), intent (B,) the class (a pair's label on PAWS-X/XNLI);
    # intent data's slot_labels (-100 on non-first subwords) go unused. EAR: x is x^a's only
    # "translation", so the per-step draw always picks it: tgt_input_ids, tgt_attention_mask (B, T),
    # has_tgt (B,) all True; BERT-style tokenizers add (tgt_)token_type_ids. net(ids, mask, types)
    # returns (sentence vector (N, d), class logits (N, C), None, last states (N, T, d)), N rows.
    watch = ["en"] if args.select_on == "en" else [x for x in langs if x != "en"] or ["en"]
    history, best = [], None  # best: (dev accuracy, epoch, weights on the CPU)
    step, seen, skipped, t_train, t_start = 0, 0, 0, 0.0, time.time()
    for epoch in range(1, args.epochs + 1):
        if ddp:
            loader.sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every process
        t0, sums = time.time(), torch.zeros(4, device=device)  # ce, ept, apt, steps: no GPU sync
        for b in loader:
            B = len(b["intent"])
            ids, mask, types = b["input_ids"], b["attention_mask"], b.get("token_type_ids")
            # ---- EAR: x^a (rows :B) and its original x (rows B:) through the encoder in one pass
            if args.mode == "ear":
                ids = torch.cat([ids, b["tgt_input_ids"]])
                mask = torch.cat([mask, b["tgt_attention_mask"]])
                types = None if types is None else torch.cat([types, b["tgt_token_type_ids"]])
            # ---- end EAR
            ids, mask, y = ids.to(device), mask.to(device), b["intent"].to(device)
            types = None if types is None else types.to(device)
            if probe:  # EAR: ask the hook for this forward's attention maps
                probe.mask = mask
            with autocast:
                _, logits, _, h_last = net(ids, mask, types)
            # ---- EAR: Eq. 4 + alpha Eq. 1 + beta Eq. 2 (weights: dev. 1); RS-DA, plain: CE only
            ept = apt = torch.zeros((), device=device)
            if args.mode == "ear":
                ce = robust_ce_loss(logits[B:], logits[:B], y)  # Eq. 4: CE on x and on x^a
                emb = emb_out["x"] if args.ep_layer == "embeddings" else h_last  # dev. 4
                ept = embedding_push_loss(emb[B:], emb[:B], mask[B:], mask[:B])  # Eq. 1: push
                apt = attention_pull_loss(probe.probs[B:], probe.probs[:B], mask[B:], mask[:B])
            else:
                ce = F.cross_entropy(logits.float(), y)
            loss = ce + args.alpha * ept + args.beta * apt  # Eq. 5
            # ---- end EAR
            if not torch.isfinite(loss) and not scaler.is_enabled():  # fp16: the scaler skips it
                raise SystemExit(f"error: step {step + 1}: the loss is {loss.item()} "
                                 f"(ce {ce.item()}, ept {ept.item()}, apt {apt.item()}); stopping")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # fp16: a scaled loss keeps small gradients from 0
            scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scale = scaler.get_scale()
            scaler.step(opt)  # fp16: skipped when a gradient overflowed
            scaler.update()
            skipped += scaler.is_enabled() and scaler.get_scale() < scale  # the scale fell: skipped
            sched.step()  # also after a skipped fp16 step: the schedule keeps its length
            step, seen = step + 1, seen + B * world
            sums += torch.stack([ce, ept, apt, torch.ones((), device=device)]).detach()
            if step % args.log_every == 0 or step == total:
                el = t_train + time.time() - t0
                common.log(f"step {step}/{total} epoch {epoch} | ce {ce.item():.4f} ept "
                           f"{ept.item():.4f} apt {apt.item():.5f} | lr "
                           f"{sched.get_last_lr()[0]:.2e} | {seen / el:.1f} ex/s | eta "
                           f"{el / step * (total - step) / 60:.1f} min"
                           + (f" | skipped {skipped}" if scaler.is_enabled() else ""))
            if step >= total:
                break
        t_train += time.time() - t0
        if ddp:  # the epoch's losses over every process's examples, not rank 0's alone
            dist.all_reduce(sums)
        if main_rank:  # every --lang dev set is scored, whichever --select_on watches
            dev = {x: common.evaluate(model, *evals[x]["dev"], labels, tok.pad_token_id, device,
                                      autocast) for x in evals}
            history.append({"epoch": epoch, **{f"train_{k}_loss": (v / sums[3]).item() for k, v
                                               in zip(("ce", "ept", "apt"), sums)}, "dev": dev})
            common.log_metrics(f"epoch {epoch} dev", dev)
            score = sum(dev[x]["accuracy"] for x in watch) / len(watch)
            if args.select_on != "last" and (best is None or score > best[0]):
                best = (score, epoch, {k: v.detach().to("cpu", copy=True)
                                       for k, v in model.state_dict().items()})
        if ddp:
            dist.barrier()
        if step >= total:
            break
    # the reported model: test in every language, results.json
    metrics = None
    if main_rank:
        if best is not None:
            common.log(f"restoring epoch {best[1]} (best {args.select_on} dev acc {best[0]:.2f})")
            model.load_state_dict(best[2])
        picked = best[1] if best else epoch
        dev = next(h["dev"] for h in history if h["epoch"] == picked)  # evaluation is deterministic
        metrics = {x: {"dev": dev[x], "test": common.evaluate(
            model, *evals[x]["test"], labels, tok.pad_token_id, device, autocast)} for x in evals}
        common.log_metrics("final", metrics)
        path = common.save_results(
            out_dir, args.mode, settings, metrics, __file__, history=history, selected_epoch=picked,
            peak_memory_mb=common.peak_memory_mb(device), steps=step, world_size=world, dtype=dtype,
            skipped_steps=int(skipped), train_examples_seen=seen,
            train_examples_per_s=seen / max(t_train, 1e-9), wall_s=time.time() - t_start)
        common.log(f"wrote {path}")
    if ddp:
        dist.barrier()
        dist.destroy_process_group()
    return metrics


if __name__ == "__main__":
    main()
