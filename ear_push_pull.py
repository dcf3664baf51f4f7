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
    python ear_push_pull.py --data demo --model tiny       # CPU, < 1 min: data/demo/synonyms.json, layer 1

What this file adds to common.py: synonym augmentation, the Embedding-Push and Attention-Pull losses,
the Robust target (cross-entropy on both the original and the augmented example), and the loop. No
translations are used: only English labelled data and an English synonym list. --mode plain is the
zero-shot fine-tuning baseline, --mode rsda trains on augmented copies only (RS-DA); --alpha 0 or
--beta 0 give the paper's ablations without EPT or APT.

Where the paper and the official code disagree, and what we follow:
  1. Weights. Paper (section 3.1 and Appendix B): alpha = 1 (EPT), beta = 0.1 (APT). The official
     scripts use alpha = 0.1, beta = 1. We default to the paper: its appendix tunes these values.
  2. Epochs. Paper: one epoch. Official PAWS-X scripts: 30. We default to the paper.
  3. Selection. The official code picks its checkpoint on the test sets; we select on English dev
     (--select_on en by default here), as RS-DA does.
  4. EPT layer. Paper: "pushing away (x, x^a) in the embedding space", visualised "using the
     embedding layer"; code: hidden_states[0], the embedding layer's output (with its dropout). We
     follow the code (--ep_layer embeddings); --ep_layer last uses the last layer instead.
  5. APT maps. Code: post-dropout attention probabilities of the 6th layer over all 128 x 128
     positions, pads included. We use the probabilities before attention dropout (a hook recomputes
     them at that one layer, so the model keeps its fast attention everywhere) and average only over
     the query/key positions that are real tokens in both x and x^a (see `attention_pull_loss`).
     Layer: the 6th, as paper (on 12-layer mBERT/XLM-R base, "the middle layer") and code, also
     on 24-layer models; an encoder with fewer than 12 layers defaults to its middle one (--ap_layer).
  6. Augmentation is seeded (the official code's is not).

Shapes: B batch, T subwords, d hidden size, H heads, C classes.
"""
import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import common

# paper Appendix A (lr 2e-5, batch 32, max length 128, one epoch); AdamW without weight decay, linear
# decay without warm-up, as the official scripts. demo is tuned for --model tiny.
PAPER = {d: dict(lr=2e-5, epochs=1, max_len=128, batch_size=32) for d in common.DATASETS}
PAPER["demo"] = dict(lr=2e-3, epochs=8, max_len=64, batch_size=16)
DEMO_DIR = Path(__file__).resolve().parent / "data" / "demo"  # ships with the repository, as does
DEMO_SYNONYMS = DEMO_DIR / "synonyms.json"  # a small hand-written synonym list of the demo's English words


class DefaultLayer(int):
    """--ap_layer when not given: 6 (the paper's) until `main` knows the encoder's depth (`ap_layer`).
    An int, so the parsed args compare and serialise as 6."""


def ap_layer(n_layers):
    """The default APT layer (1-based) of an encoder with n_layers: the 6th (the paper's, on 12-layer
    models, and the code's fixed index 5, also on 24-layer ones), or the middle one of a shallower encoder."""
    return 6 if n_layers >= 12 else max(1, n_layers // 2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False,
                                formatter_class=common.HelpFormatter)
    common.add_run_args(p)
    p.set_defaults(select_on="en", seed=7)  # RS-DA's protocol; the official EAR scripts use seed 7
    g = p.add_argument_group("method")
    g.add_argument("--mode", choices=["ear", "rsda", "plain"], default="ear",
                   help="EAR; RS-DA (cross-entropy on augmented copies only); plain fine-tuning (zero-shot)")
    g.add_argument("--neighbours", default=None,
                   help="counter-fitted synonym list {word: [neighbours]} (Alzantot et al. 2018), as RS-DA and EAR use "
                        "(default: data/synonyms/counterfitted_neighbors.json; with --data demo the repository's "
                        "data/demo/synonyms.json)")
    g.add_argument("--copies", type=int, default=3, help="augmented copies per example (official EAR: 3; RS-DA: 10 PAWS-X, 3 XNLI)")
    g.add_argument("--alpha", type=float, default=1.0, help="EPT weight (paper 1; official scripts 0.1)")
    g.add_argument("--beta", type=float, default=0.1, help="APT weight (paper 0.1; official scripts 1)")
    g.add_argument("--ap_layer", type=int, default=None, help="1-based encoder layer for APT (default: the 6th, as "
                   "paper and code (index 5); an encoder with fewer than 12 layers: its middle layer)")
    g.add_argument("--ep_layer", choices=["embeddings", "last"], default="embeddings",
                   help="which output EPT mean-pools: the embedding layer (official code) or the last layer")
    g.add_argument("--cls", choices=["pooler", "first"], default="first",
                   help="what the classifier reads: the first token's last state (paper, Eq. 3) or the pooler output")
    g.add_argument("--head_lr", type=float, default=None, help="peak lr of the classifier head (default: --lr, as the code)")
    args = p.parse_args(argv)
    for k, v in PAPER[args.data].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.head_lr = args.head_lr or args.lr
    args.data_dir = args.data_dir or (str(DEMO_DIR) if args.data == "demo" else f"data/{args.data}")
    args.neighbours = args.neighbours or str(DEMO_SYNONYMS if args.data == "demo" else "data/synonyms/counterfitted_neighbors.json")
    if args.ap_layer is None:
        args.ap_layer = DefaultLayer(6)
    args.out_dir = args.out_dir or common.default_out_dir(args.mode, args)
    common.check_run_args(p, args)
    return args


# ---------------------------------------------------------------------------- augmentation


def load_neighbours(path):
    if not Path(path).is_file():
        raise SystemExit(f"error: --neighbours {path}: file not found. It is counterfitted_neighbors.json of "
                         "uclanlp/Robust-XLT (also in KB-Ding/EAR): {word: [neighbour, ...]}")
    try:
        return {w: n for w, n in json.loads(Path(path).read_text(encoding="utf-8")).items() if n}
    except ValueError as e:
        raise SystemExit(f"error: --neighbours {path}: not JSON ({e})") from None


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


# ---------------------------------------------------------------------------- losses


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
    device, autocast, world = common.setup(args)
    ddp = world > 1
    common.log(f"ear_push_pull | mode {args.mode} | device {device} | bf16 autocast {isinstance(autocast, torch.autocast)} "
               f"| processes {world}\nargs {vars(args)}")

    # data: English training examples, their augmented copies (seeded), dev/test sets
    neighbours = load_neighbours(args.neighbours) if args.mode != "plain" else {}
    try:
        langs = common.resolve_langs(args.lang, args.data, args.data_dir)
        train, _, evals = common.load_data(args, langs, False)
    except common.DataError as e:
        raise SystemExit(f"error: {e}") from None
    rng = random.Random(args.seed)
    aug = [augmented(e, neighbours, rng) for _ in range(args.copies) for e in train] if args.mode != "plain" else []
    texts = common.texts_of(train + aug, {}, evals)
    enc, tok = common.load_encoder(args.model, texts, args.out_dir, args.max_len)
    labels = common.Labels.from_train(args.data, train)
    where = f"{args.data}/{args.train_lang}/train"
    if args.mode == "ear":  # each augmented copy carries its original as the second stream
        items = [dict(common.encode(tok, a, labels, args.max_len, where),
                      tgt=[common.encode(tok, o, labels, args.max_len, where)["input_ids"]])
                 for a, o in zip(aug, train * args.copies)]
    else:
        items = [common.encode(tok, e, labels, args.max_len, where) for e in (aug if args.mode == "rsda" else train)]
    evals = common.encode_evals(tok, evals, labels, args)
    changed = sum(a != o for a, o in zip(aug, train * args.copies))
    common.log(f"train {len(items)} items from {len(train)} {args.train_lang} examples | {len(labels.intents)} classes"
               + (f" | {changed} of {len(aug)} augmented copies differ from their original" if aug else ""))
    for note in common.notes():
        common.log(f"data note: {note}")
    shard = (torch.distributed.get_rank(), world) if ddp else None
    loader = common.make_loader(items, args.batch_size // world, tok.pad_token_id, True, args.seed, shard)

    # sentence(-pair) classifier only: intent data is classified by intent, slots are not trained
    model = common.TaskModel(enc, len(labels.intents), 0, args.cls).to(device)
    n_layers = enc.config.num_hidden_layers
    if isinstance(args.ap_layer, DefaultLayer):
        args.ap_layer = ap_layer(n_layers)
        if args.mode == "ear":
            common.log(f"APT at layer {args.ap_layer} of the encoder's {n_layers} (--ap_layer to choose another)")
    elif args.mode == "ear" and not 1 <= args.ap_layer <= n_layers:
        raise SystemExit(f"error: --ap_layer {args.ap_layer}: the encoder has {n_layers} layers; "
                         f"pass 1 to {n_layers}, or leave it out for layer {ap_layer(n_layers)}")
    probe = AttentionProbs(enc, args.ap_layer) if args.mode == "ear" else None
    emb_out = {}  # the embedding layer's output, for EPT
    if args.mode == "ear" and args.ep_layer == "embeddings":
        enc.embeddings.register_forward_hook(lambda m, i, o: emb_out.__setitem__("x", o))
    opt = torch.optim.AdamW(model.param_groups(args.lr, args.head_lr), lr=args.lr, weight_decay=0.0,
                            fused=device.type in ("cpu", "cuda"))
    total = args.epochs * len(loader)
    total = min(total, args.max_steps) if args.max_steps else total
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / total))  # linear decay, no warm-up
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if ddp else model

    selector = common.EpochSelector(args, langs, evals, labels, tok.pad_token_id, device, autocast, "accuracy") \
        if common.is_main() else None
    step, seen, t_train = 0, 0, 0.0
    t_start = time.time()
    for epoch in range(1, args.epochs + 1):
        if ddp:
            loader.sampler.set_epoch(epoch)
        t0, sums = time.time(), torch.zeros(4, device=device)  # ce, ept, apt, steps
        for b in loader:
            B = len(b["intent"])
            ids, mask, y = b["input_ids"], b["attention_mask"], b["intent"].to(device)
            if args.mode == "ear":  # x^a (rows :B) and x (rows B:) through the encoder in one pass
                ids, mask = torch.cat([ids, b["tgt_input_ids"]]), torch.cat([mask, b["tgt_attention_mask"]])
            types = b.get("token_type_ids")  # BERT-style segment ids of sentence pairs (else None)
            if types is not None and args.mode == "ear":
                types = torch.cat([types, b["tgt_token_type_ids"]])
            ids, mask, types = ids.to(device), mask.to(device), None if types is None else types.to(device)
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
                raise SystemExit(f"error: step {step + 1}: the loss is {loss.item()} (ce {ce.item()}, ept {ept.item()}, apt {apt.item()}); stopping")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step, seen = step + 1, seen + B * world
            sums += torch.stack([ce.detach(), ept.detach(), apt.detach(), torch.ones((), device=device)])
            if step % args.log_every == 0 or step == total:
                el = t_train + time.time() - t0
                common.log(f"step {step}/{total} epoch {epoch} | ce {ce.item():.4f} ept {ept.item():.4f} apt {apt.item():.5f} "
                           f"| lr {sched.get_last_lr()[0]:.2e} | {seen / el:.1f} ex/s | eta {el / step * (total - step) / 60:.1f} min")
            if step >= total:
                break
        t_train += time.time() - t0
        if common.is_main():
            m = (sums[:3] / sums[3]).tolist()
            selector.epoch_end(model, epoch, train_ce_loss=m[0], train_ept_loss=m[1], train_apt_loss=m[2])
        common.barrier()
        if step >= total:
            break

    final = None  # only rank 0 evaluates and writes results
    if common.is_main():
        final = selector.finish(model, args.mode, epoch, steps=step, train_examples_seen=seen,
                                train_examples_per_s=seen / max(t_train, 1e-9), wall_s=time.time() - t_start,
                                world_size=world)
    common.barrier()
    if ddp:
        torch.distributed.destroy_process_group()
    return final


if __name__ == "__main__":
    main()
