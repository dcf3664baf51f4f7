"""Contrastive alignment: InfoNCE between English utterances and their translations, on XLM-R.

Paper: Gritta, Hu & Iacobacci (2022), "CrossAligner & Co: Zero-Shot Transfer Methods for
       Task-Oriented Cross-lingual Natural Language Understanding", Findings of ACL 2022, section 3.2
       (Eq. 1, Algorithm 2). https://arxiv.org/abs/2203.09982
Reference code: huawei-noah/noah-research @ aa0f80c, NLP/cross_aligner/train.py (the CTR branch of
       the auxiliary losses).

Usage:
    python contrastive.py --data mtop --lang th --model xlm-roberta-large
    python contrastive.py --data pawsx --lang de --model xlm-roberta-large --pooling mean
    python contrastive.py --data demo --lang de --model tiny                          # CPU, < 1 min

What this file adds to common.py: the contrastive loss (each English sentence must pick out its own
translation among the batch's translations) and the loop that adds it to the English task loss.
Intent/slot data and sentence pairs (PAWS-X, XNLI: the pair is encoded jointly, so whole pairs are
aligned). --no-align is the zero-shot baseline, everything else equal.

The paper's Eq. 1 has no temperature and runs from English to target only; so does the official
code, and so do our defaults (--temperature 1, no --symmetric). "CLS" is the pooler output as in the
code (--cls first for the first token's state); --pooling mean uses mask-averaged token states for
the loss instead, the variant the paper reports in section 5.1. The translations are those of the
batch's own examples (Algorithm 2), so the negatives are the other N-1 translations.

Shapes: B batch of English examples, T subwords, d hidden size, C classes, S slot tags.
"""
import argparse
import time

import torch
import torch.nn.functional as F

import common

# the aligned configs of NLP/cross_aligner/config/*.sh (batch 10: nine in-batch negatives). PAWS-X
# and XNLI are not in the paper: the lr and max_len of XeroAlign's PAWS-X config. Demo: --model tiny.
PAPER = {
    "mtop": dict(lr=2e-5, epochs=10, max_len=70),
    "mtod": dict(lr=5e-6, epochs=5, max_len=50),
    "matis": dict(lr=2e-5, epochs=10, max_len=100),
    "massive": dict(lr=2e-5, epochs=10, max_len=100),
    "pawsx": dict(lr=6e-6, epochs=10, max_len=200),
    "xnli": dict(lr=6e-6, epochs=10, max_len=200),
    "demo": dict(lr=2e-3, epochs=12, max_len=64),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False,
                                formatter_class=common.HelpFormatter)
    common.add_run_args(p)
    g = p.add_argument_group("method")
    g.add_argument("--align", action=argparse.BooleanOptionalAction, default=True,
                   help="add the contrastive loss; --no-align is the zero-shot baseline, all else equal")
    g.add_argument("--temperature", type=float, default=1.0,
                   help="softmax temperature tau; 1 = Eq. 1 and the official code, which have none")
    g.add_argument("--symmetric", action="store_true",
                   help="also score each translation against the English sentences and average both "
                        "directions (Eq. 1 and the code use English -> target only)")
    g.add_argument("--pooling", choices=["cls", "mean"], default="cls",
                   help="sentence vector for the loss: the CLS vector (see --cls) or mask-averaged token states")
    g.add_argument("--cls", choices=["pooler", "first"], default="pooler",
                   help="CLS vector (also what the classifier reads): pooler output (official code) or first token's state")
    g.add_argument("--head_lr", type=float, default=None, help="peak lr of the new heads (default: --lr, as the code)")
    args = p.parse_args(argv)
    for k, v in dict(PAPER[args.data], batch_size=10).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.head_lr = args.head_lr or args.lr
    args.data_dir = args.data_dir or (str(common.DEMO_DIR) if args.data == "demo" else f"data/{args.data}")
    name = "contrastive" if args.align else "zeroshot" if args.train_lang == "en" else "target"
    args.out_dir = args.out_dir or common.default_out_dir(name, args)
    common.check_run_args(p, args)
    if args.align and args.train_lang != "en":
        p.error("alignment pairs English training data with its translations: use --no-align with --train_lang")
    return args


# ---------------------------------------------------------------------------- loss


def contrastive_loss(emb_src, emb_tgt, temperature=1.0, symmetric=False):
    """Contrastive alignment, InfoNCE with in-batch negatives (section 3.2, Eq. 1):

        l_i = -log( exp(sim(e_i, t_i) / tau) / sum_{k=1..N} exp(sim(e_i, t_k) / tau) )
        L_ctr = 1/N sum_i l_i,      sim(u, v) = u.v / (||u|| ||v||)

    emb_src (N, d): English sentence vectors; emb_tgt (N, d): their translations, row i translating
    row i; the other N-1 rows are the negatives. symmetric=True averages this with the same loss
    from the translations' side (t_i against every e_k). Returns a scalar."""
    sim = F.normalize(emb_src.float(), dim=-1) @ F.normalize(emb_tgt.float(), dim=-1).T / temperature
    labels = torch.arange(len(sim), device=sim.device)
    loss = F.cross_entropy(sim, labels)
    return (loss + F.cross_entropy(sim.T, labels)) / 2 if symmetric else loss


def mean_pool(h_tok, attention_mask):
    """Average of the token states over real (unmasked) tokens: (B, T, d), (B, T) -> (B, d)."""
    m = attention_mask.unsqueeze(-1).to(h_tok.dtype)
    return (h_tok * m).sum(1) / m.sum(1).clamp(min=1)


# ---------------------------------------------------------------------------- main


def main(argv=None):
    args = parse_args(argv)
    device, autocast, world = common.setup(args)
    ddp = world > 1
    common.log(f"contrastive | device {device} | bf16 autocast {isinstance(autocast, torch.autocast)} "
               f"| processes {world}\nargs {vars(args)}")

    # data: English (or --train_lang) training data, translations for alignment, dev/test sets
    langs, enc, tok, labels, items, evals = common.prepare(args, args.align)
    shard = (torch.distributed.get_rank(), world) if ddp else None
    loader = common.make_loader(items, args.batch_size // world, tok.pad_token_id, True, args.seed, shard)

    # model: encoder + linear heads; Adam + OneCycleLR with PyTorch defaults, clip 1.0 (METHODS.md 1.3)
    model = common.TaskModel(enc, len(labels.intents), len(labels.slots), args.cls).to(device)
    opt = torch.optim.Adam(model.param_groups(args.lr, args.head_lr), lr=args.lr, fused=device.type in ("cpu", "cuda"))
    total = args.epochs * len(loader)
    total = min(total, args.max_steps) if args.max_steps else total
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[args.lr, args.head_lr], total_steps=total)
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if ddp else model

    selector = common.EpochSelector(args, langs, evals, labels, tok.pad_token_id, device, autocast,
                                    "exact_match" if args.data in common.INTENT_SLOT else "accuracy") \
        if common.is_main() else None
    step, seen, t_train = 0, 0, 0.0
    t_start = time.time()
    for epoch in range(1, args.epochs + 1):
        if ddp:
            loader.sampler.set_epoch(epoch)
        t0, sums = time.time(), torch.zeros(3, device=device)  # task, align, steps (no per-step sync)
        for b in loader:
            B = len(b["intent"])
            ids, mask = b["input_ids"], b["attention_mask"]
            if args.align:  # English and translations through the encoder in one forward pass
                ids, mask = torch.cat([ids, b["tgt_input_ids"]]), torch.cat([mask, b["tgt_attention_mask"]])
            types = b.get("token_type_ids")  # BERT-style segment ids of sentence pairs (else None)
            if types is not None and args.align:
                types = torch.cat([types, b["tgt_token_type_ids"]])
            ids, mask, types = ids.to(device), mask.to(device), None if types is None else types.to(device)
            with autocast:
                cls, logits, slot_logits, h_tok = net(ids, mask, types)
            loss_task = common.task_loss(logits[:B], b["intent"], None if slot_logits is None else slot_logits[:B],
                                         b.get("slot_labels"))
            loss_align = torch.zeros((), device=device)
            if args.align and b["has_tgt"].any():  # examples without a translation are not aligned
                # a slice when every row has one: boolean indexing would sync the GPU
                has = slice(None) if b["has_tgt"].all() else b["has_tgt"].to(device)
                emb = cls if args.pooling == "cls" else mean_pool(h_tok, mask)
                loss_align = contrastive_loss(emb[:B][has], emb[B:][has], args.temperature, args.symmetric)
            loss = loss_task + loss_align  # Algorithm 2 line 6: L_ic + L_ec + L_cl
            if not torch.isfinite(loss):  # stop before a NaN reaches the weights
                raise SystemExit(f"error: step {step + 1}: the loss is {loss.item()} "
                                 f"(task {loss_task.item()}, align {loss_align.item()}); stopping")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step, seen = step + 1, seen + B * world
            sums += torch.stack([loss_task.detach(), loss_align.detach(), torch.ones((), device=device)])
            if step % args.log_every == 0 or step == total:
                el = t_train + time.time() - t0
                common.log(f"step {step}/{total} epoch {epoch} | task {loss_task.item():.4f} align {loss_align.item():.4f} "
                           f"| lr {sched.get_last_lr()[0]:.2e} | {seen / el:.1f} ex/s | eta {el / step * (total - step) / 60:.1f} min")
            if step >= total:
                break
        t_train += time.time() - t0
        if common.is_main():
            selector.epoch_end(model, epoch, train_task_loss=(sums[0] / sums[2]).item(),
                               train_align_loss=(sums[1] / sums[2]).item())
        common.barrier()
        if step >= total:
            break

    final = None  # only rank 0 evaluates and writes results
    if common.is_main():
        final = selector.finish(
            model, "contrastive" if args.align else "zeroshot" if args.train_lang == "en" else "target", epoch,
            steps=step, train_examples_seen=seen, train_examples_per_s=seen / max(t_train, 1e-9),
            wall_s=time.time() - t_start, world_size=world)
    common.barrier()
    if ddp:
        torch.distributed.destroy_process_group()
    return final


if __name__ == "__main__":
    main()
