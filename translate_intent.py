"""Translate-Intent: the intent classifier also learns from translations, on XLM-R.

Paper: Gritta, Hu & Iacobacci (2022), "CrossAligner & Co: Zero-Shot Transfer Methods for
       Task-Oriented Cross-lingual Natural Language Understanding", Findings of ACL 2022, section 3.3
       (Algorithm 3). https://arxiv.org/abs/2203.09982
Reference code: huawei-noah/noah-research @ aa0f80c, NLP/cross_aligner/train.py (the TI branch of
       the auxiliary losses).

Usage:
    python translate_intent.py --data mtop --lang th --model xlm-roberta-large
    python translate_intent.py --data matis --lang hi,tr --model xlm-roberta-base --no-align    # zero-shot
    python translate_intent.py --data demo --lang de --model tiny                             # CPU, < 1 min

What this file adds to common.py: one loss, the shared intent classifier applied to the machine
translation of each English training utterance with the English intent as its label, and the loop
that adds it to the English task loss. Slots are trained on English only: the translations carry
no slot labels, so no label projection or word alignment is needed (that is the method's point).

Translate-Train, the baseline the paper compares with, trains on translated data with slot labels
projected through word alignment; we do not reimplement label projection. Compare Translate-Intent
with the zero-shot run (--no-align) and with the Target upper bound (--no-align --train_lang <lang>,
training on the target language's own labelled data) instead.

Paper and official code agree here: the intent head is shared between languages and reads the
pooler output (--cls first for the first token's state); loss weight 1.

Shapes: B batch of English examples, T subwords, d hidden size, C intents, S slot tags.
"""
import argparse
import time

import torch
import torch.nn.functional as F

import common

# the aligned configs of NLP/cross_aligner/config/*.sh (batch 10). MASSIVE is not in the paper (MTOP
# settings); demo is tuned for --model tiny.
PAPER = {
    "mtop": dict(lr=2e-5, epochs=10, max_len=70),
    "mtod": dict(lr=5e-6, epochs=5, max_len=50),
    "matis": dict(lr=2e-5, epochs=10, max_len=100),
    "massive": dict(lr=2e-5, epochs=10, max_len=100),
    "demo": dict(lr=2e-3, epochs=12, max_len=64),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False,
                                formatter_class=common.HelpFormatter)
    common.add_run_args(p)
    g = p.add_argument_group("method")
    g.add_argument("--align", action=argparse.BooleanOptionalAction, default=True,
                   help="add the Translate-Intent loss; --no-align is the zero-shot baseline, all else equal")
    g.add_argument("--cls", choices=["pooler", "first"], default="pooler",
                   help="what the intent head reads: pooler output (official code) or first token's state")
    g.add_argument("--head_lr", type=float, default=None, help="peak lr of the new heads (default: --lr, as the code)")
    args = p.parse_args(argv)
    if args.data not in PAPER:
        p.error(f"--data {args.data}: Translate-Intent is for intent and slot data ({', '.join(PAPER)})")
    for k, v in dict(PAPER[args.data], batch_size=10).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.head_lr = args.head_lr or args.lr
    args.data_dir = args.data_dir or (str(common.DEMO_DIR) if args.data == "demo" else f"data/{args.data}")
    name = "translate_intent" if args.align else "zeroshot" if args.train_lang == "en" else "target"
    args.out_dir = args.out_dir or common.default_out_dir(name, args)
    common.check_run_args(p, args)
    if args.align and args.train_lang != "en":
        p.error("Translate-Intent pairs English training data with its translations: use --no-align with --train_lang")
    return args


# ---------------------------------------------------------------------------- loss


def translate_intent_loss(intent_logits_tgt, intent_en):
    """Translate-Intent (section 3.3, Algorithm 3 lines 2-3):

        L_ti = CE( IC(cls_tar), y_ic ) = -1/N sum_i log softmax(IC(cls_tar_i))[y_ic_i]

    intent_logits_tgt (N, C): the shared intent classifier's logits on the translated utterances;
    intent_en (N,): the English utterances' gold intents, copied to their translations."""
    return F.cross_entropy(intent_logits_tgt.float(), intent_en)


# ---------------------------------------------------------------------------- main


def main(argv=None):
    args = parse_args(argv)
    device, autocast, world = common.setup(args)
    ddp = world > 1
    common.log(f"translate_intent | device {device} | bf16 autocast {isinstance(autocast, torch.autocast)} "
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
                cls, logits, slot_logits, _ = net(ids, mask, types)
            loss_task = common.task_loss(logits[:B], b["intent"], None if slot_logits is None else slot_logits[:B],
                                         b.get("slot_labels"))
            loss_align = torch.zeros((), device=device)
            if args.align and b["has_tgt"].any():  # examples without a translation are not aligned
                # a slice when every row has one: boolean indexing would sync the GPU
                has = slice(None) if b["has_tgt"].all() else b["has_tgt"].to(device)
                loss_align = translate_intent_loss(logits[B:][has], b["intent"].to(device)[has])
            loss = loss_task + loss_align  # Algorithm 3 line 4: L_ic + L_ec + L_ti
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
            model, "translate_intent" if args.align else "zeroshot" if args.train_lang == "en" else "target", epoch,
            steps=step, train_examples_seen=seen, train_examples_per_s=seen / max(t_train, 1e-9),
            wall_s=time.time() - t_start, world_size=world)
    common.barrier()
    if ddp:
        torch.distributed.destroy_process_group()
    return final


if __name__ == "__main__":
    main()
