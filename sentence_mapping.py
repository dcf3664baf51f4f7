"""Linear maps between the sentence embeddings of two languages, and zero-shot STS, on XLM-R.

Paper: Choi, Kim, Joe, Min & Gwon (2020), "Analyzing Zero-shot Cross-lingual Transfer in
       Supervised NLP Tasks", ICPR 2020, sections II.B-C, III.A and III.D (Tables I and IV).
       https://arxiv.org/abs/2101.10649   Reference code: none published.

Usage:
    python sentence_mapping.py --lang ko,de,es --model xlm-roberta-large  # STS sets in data/sts
    python sentence_mapping.py --lang ko --arch cross       # Table I's cross-encoder
    python sentence_mapping.py --lang ko --arch none        # the pretrained encoder, no training
    python sentence_mapping.py --data demo --model tiny     # the demo: CPU, < 1 min
    torchrun --nproc_per_node 4 sentence_mapping.py --lang ko          # one process per GPU

The method: embed row-parallel sentences, English S_A and translations S_B (n, d, the mean of the
last layer), and fit a d x d map between the spaces three ways (section II.C): the normal
equation, orthogonal Procrustes and a linear net. One run:
  1. STS fine-tuning on --train_lang's train set: --arch bi, a siamese bi-encoder whose cosine
     is regressed onto score/5 (Sentence-BERT); cross, `A </s></s> B` and a regression head (the
     paper's GLUE run); none, no fine-tuning.
  2. Zero-shot STS: Spearman and Pearson on dev and test of English and every --lang
     (sem17-<track>: SemEval-2017, test only; --data demo: pairs of demo utterances).
  3. The maps (bi, none), fitted on the unique sentence pairs of the row-parallel train split,
     measured on the test split's: the mean cosine of translated pairs (the paper's measure) and
     retrieval accuracy both ways (added: no map raises it by moving everything to one point).
  4. Cross-lingual STS (Table IV): English sentence1, translated sentence2, scored by the cosine
     unmapped and after each map, or by the cross-encoder.

What the paper says and what we do:
  1. Procrustes: the paper prints U V^T from SVD(S_B S_A^T), n x n; ours SVD(S_A^T S_B), d x d.
  2. Normal equation: lstsq in float64, no explicit inverse; --ridge adds lambda I (paper: 0).
  3. Centring or normalising before mapping: not stated; ours: neither.
  4. Linear net, "S_A W = S_B" with MSE: bias-free nn.Linear, SGD (momentum 0.9), its step size
     relative to the mean squared embedding norm, so one --map_lr suits any encoder.
  5. Not stated: which embeddings Table IV maps (ours: the evaluated encoder's) and which pairs
     fit the maps (ours: train; measured on test).
  6. The paper fine-tunes a cross-encoder only; --arch bi (default) is added: maps need embeddings.
  7. Optimisation: the paper's RAdam, lr 4e-5, 10% warm-up, 4 epochs, batch 32; the GLUE script's
     linear decay to 0, clipping at 1.0. Reported: the last epoch or the best dev Spearman
     (--select_on en|target).
  8. Processes: under torchrun each global batch is split over the processes (a step sees the
     pairs one process would) and DDP averages the gradients; maps and evaluation: rank 0.
  9. Precision: not stated (GLUE script: fp32). Ours: --dtype auto = bf16 autocast on GPUs that
     have it, else fp16 with a GradScaler on a GPU, fp32 on the CPU; maps fitted in fp32/fp64.
 10. Same seed, flags and --threads: every number repeats bit for bit on the CPU, except --model
     tiny on data as large as STS-B, whose unigram tokenizer (common.build_tiny) differs between
     processes (piece scores by up to 1e-3, ~1% of sentences split otherwise): the 4th digit moves.

Shapes: n sentences, d hidden size, B batch, T subwords.
"""
import argparse
import contextlib
import functools
import math
import os
import random
import re
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

import common

MAPPINGS = ("normal_equation", "procrustes", "fit_linear")  # the maps fitted (a new one: add it)
PAPER = {k: dict(lr=4e-5, epochs=4, max_len=128, batch_size=32) for k in ("sts", "demo")}  # III.A


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
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"defaults per --data (the paper's, section III.A):\n{table}")
    add, per_data = p.add_argument, "(default: per --data, below)"
    # --- run (the same flags in every method file)
    add("--data", choices=list(PAPER), default="sts", help="sts, or demo: STS pairs of the "
        "embedded demo's utterances (default: sts)")
    add("--lang", default="de", help="target language(s): ko,de,es or sem17-<track> (default: de)")
    add("--model", default="xlm-roberta-large", help="HF hub name or local folder; tiny builds a "
        "small random encoder and tokenizer on the data, offline (default: xlm-roberta-large)")
    add("--data_dir", help="dataset folder in its official layout (default: data/<data>)")
    add("--train_lang", default="en", help="language of the labelled training data; a target "
        "language gives the 'Target' upper bound (default: en)")
    add("--epochs", type=at_least(1), help=f"training epochs {per_data}")
    add("--batch_size", type=at_least(1), help=f"STS pairs per step, all processes {per_data}")
    add("--lr", type=positive, help=f"peak learning rate {per_data}")
    add("--max_len", type=at_least(8), help=f"max subwords per input {per_data}")
    add("--seed", type=int, default=123456789, help="random seed (default: 123456789)")
    add("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    add("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
        help="autocast precision; auto: bfloat16 on GPUs that have it, else float16 with a "
        "GradScaler on a GPU, float32 on the CPU (default: auto)")
    add("--threads", type=at_least(0), default=0, help="CPU threads of torch (default: 0, torch's)")
    add("--out_dir", help="where results.json goes (default: runs/sentence_mapping/<arch>/<data>-"
        "<lang>-<train_lang>-<model>-s<seed>[-steps<N>][-n<limit_train>])")
    add("--overwrite", action="store_true", help="replace a results.json of other code or settings")
    add("--max_steps", type=at_least(0), default=0, help="stop after N steps (default: 0, no cap)")
    add("--limit_train", type=at_least(0), default=0, help="train on a fixed random subset of N "
        "pairs, the same for every seed and method (default: 0, all)")
    add("--max_eval", type=at_least(0), default=0, help="evaluate on a fixed subset of N pairs of "
        "each dev and test set, for smoke runs (default: 0, all)")
    add("--select_on", choices=["last", "en", "target"], default="last", help="the epoch "
        "reported: the final one, best --train_lang or target dev Spearman (default: last)")
    add("--log_every", type=at_least(1), default=50, help="log every N steps (default: 50)")
    # --- method
    add("--arch", choices=["bi", "cross", "none"], default="bi", help="STS model: bi-encoder, "
        "cross-encoder (the paper's) or none, the pretrained encoder (default: bi)")
    add("--ridge", type=at_least(0.0, float), default=0.0, help="normal equation: ridge lambda "
        "(default: 0.0, the paper's least squares)")
    add("--map_epochs", type=at_least(1), default=100, help="linear net: SGD epochs (default: 100)")
    add("--map_lr", type=positive, default=0.5, help="linear net: SGD step size relative to the "
        "mean squared embedding norm (default: 0.5)")
    first = p.parse_known_args(argv)[0]
    p.set_defaults(**PAPER[first.data])  # the paper's values for --data; flags given win
    args = p.parse_args(argv)
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", args.device):
        p.error(f"--device {args.device}: expected auto, cpu, cuda or cuda:N")
    if any(not x.strip() for x in args.lang.split(",")):
        p.error(f"--lang {args.lang!r}: an empty language code; give codes separated by commas")
    return args


# ---------------------------------------------------------------------------- STS loss, three maps

def sts_loss(pred, score, arch):
    """MSE regression, L = 1/B sum_i (pred_i - y_i)^2: the cross-encoder predicts y = the 0-5 score
    (GLUE STS-B), the bi-encoder's cosine y = score / 5 (Sentence-BERT's CosineSimilarityLoss)."""
    return F.mse_loss(pred, score if arch == "cross" else score / 5.0)


def normal_equation(S_A, S_B, ridge=0.0):
    """Least-squares map Phi with S_A Phi ~ S_B (section II.C, the normal equation):

        Phi* = (S_A^T S_A + lambda I)^-1 S_A^T S_B,      lambda = ridge (the paper: 0)

    S_A, S_B (n, d), row i of S_B translating row i of S_A. Returns Phi (d, d). Solved by lstsq in
    float64 on [S_A; sqrt(lambda) I] Phi = [S_B; 0]: the same solution without the inverse, badly
    conditioned for sentence embeddings (they share a large common component) (dev. 2)."""
    A, B = S_A.double(), S_B.double()
    if ridge > 0:
        d = A.shape[1]
        A = torch.cat([A, math.sqrt(ridge) * torch.eye(d, dtype=A.dtype, device=A.device)])
        B = torch.cat([B, torch.zeros(d, B.shape[1], dtype=B.dtype, device=B.device)])
    driver = "gelsd" if A.device.type == "cpu" else None
    return torch.linalg.lstsq(A, B, driver=driver).solution.to(S_A.dtype)


def procrustes(S_A, S_B):
    """Orthogonal map Psi minimising ||S_A Psi - S_B||_F subject to Psi^T Psi = I (Eq. 2):

        U Sigma V^T = SVD(S_A^T S_B),      Psi* = U V^T                          (dev. 1)

    S_A, S_B (n, d). Returns Psi (d, d), orthogonal."""
    U, _, Vh = torch.linalg.svd(S_A.double().T @ S_B.double())
    return (U @ Vh).to(S_A.dtype)


def fit_linear(S_A, S_B, epochs=100, lr=0.5, batch_size=256, seed=0):
    """A linear layer without bias or activation, S_A W ~ S_B, trained by SGD (momentum 0.9) on the
    mean squared error of d linear regressors (Eq. 3):

        L(W) = 1/n sum_i ||s_B^(i) - s_A^(i) W||^2

    Step size lr / mean ||s_A||^2 (the largest curvature of L is at most 2 mean ||s_A||^2) (dev. 4).
    Returns W (d, d); with enough epochs it approaches normal_equation(S_A, S_B)."""
    g = torch.Generator().manual_seed(seed)  # its own generator: the init and the order are seed's
    lr = lr / S_A.pow(2).sum(1).mean().item()
    layer = nn.Linear(S_A.shape[1], S_B.shape[1], bias=False).to(S_A.device)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) / math.sqrt(S_A.shape[1]))
    opt = torch.optim.SGD(layer.parameters(), lr=lr, momentum=0.9)
    for _ in range(epochs):
        for idx in torch.randperm(len(S_A), generator=g).split(batch_size):
            loss = ((layer(S_A[idx]) - S_B[idx]) ** 2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return layer.weight.detach().T.clone()


def alignment_quality(M, T):
    """Mapped source rows M (n, d) against their translations T (n, d): the mean cosine of the
    translated pairs (the paper's measure), and retrieval accuracy in percent, each source picking
    its nearest target by cosine (src2tgt) and each target its nearest source (tgt2src)."""
    sim = F.normalize(M.float(), dim=-1) @ F.normalize(T.float(), dim=-1).T
    gold = torch.arange(len(M))
    return {"cosine": sim.diagonal().mean().item(),
            "retrieval_src2tgt": 100.0 * (sim.argmax(1) == gold).float().mean().item(),
            "retrieval_tgt2src": 100.0 * (sim.argmax(0) == gold).float().mean().item(), "n": len(M)}


def evaluate_mappings(parallel, emb, ridge=0.0, map_epochs=100, map_lr=0.5, seed=0):
    """Per target of `parallel` (common.load_sts_sets): the three maps English -> target, fitted
    on the train split's sentence pairs and measured on the test split's (alignment_quality); Table
    IV's STS unmapped and mapped. emb: texts -> (n, d). Returns (mapping, cross_lingual) by lang."""
    mapping, cross_lingual = {}, {}
    for x, split in parallel.items():
        fit, held = common.sentence_pairs(*split["train"]), common.sentence_pairs(*split["test"])
        fit_s, fit_t = emb([p[0] for p in fit]), emb([p[1] for p in fit])
        held_s, held_t = emb([p[0] for p in held]), emb([p[1] for p in held])
        W = {"normal_equation": normal_equation(fit_s, fit_t, ridge),
             "procrustes": procrustes(fit_s, fit_t),
             "fit_linear": fit_linear(fit_s, fit_t, map_epochs, map_lr, seed=seed)}
        m = mapping[x] = {"unmapped": alignment_quality(held_s, held_t), "fit_pairs": len(fit)}
        m.update({k: alignment_quality(held_s @ w, held_t) for k, w in W.items()})
        common.log(f"mapping {x} | fitted on {len(fit)} pairs, measured on {len(held)} | " +
                   " | ".join(f"{k} cos {v['cosine']:.4f} R@1 {v['retrieval_src2tgt']:.1f}/"
                              f"{v['retrieval_tgt2src']:.1f}" for k, v in m.items()
                              if k != "fit_pairs"))
        xl = common.cross_lingual_pairs(*split["test"])  # cos(sentence1 English, sentence2 x)
        ea, eb = emb([p.a for p in xl]), emb([p.b for p in xl])
        mapped = {"unmapped": ea, **{k: ea @ w for k, w in W.items()}}  # English side mapped
        cross_lingual[x] = {k: common.correlations(F.cosine_similarity(a, eb, dim=-1).numpy(),
                                                   [p.score for p in xl])
                            for k, a in mapped.items()}
    return mapping, cross_lingual


# ---------------------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    method = f"sentence_mapping-{args.arch}"
    data_dir = args.data_dir or (str(common.DEMO_DIR) if args.data == "demo" else
                                 f"data/{args.data}")
    out_dir = args.out_dir or common.default_out_dir(f"sentence_mapping/{args.arch}", args)
    settings = {**vars(args), "data_dir": data_dir, "out_dir": out_dir}  # as used
    langs = [x.strip() for x in args.lang.split(",") if x.strip() != "en"]
    arch = "bi" if args.arch == "none" else args.arch  # none: the pretrained encoder as bi
    watch = [] if args.select_on == "last" else [args.train_lang] if args.select_on == "en" else \
        [x for x in langs if not x.startswith("sem17-")] or ["en"]  # whose dev picks the epoch
    # setup: one process per GPU under torchrun (WORLD_SIZE set), else one process
    world = int(os.environ.get("WORLD_SIZE", "1"))
    ddp = world > 1
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {args.device}: this torch sees no CUDA GPU")
    if args.batch_size % world:
        raise SystemExit(f"error: --batch_size {args.batch_size}: not divisible by {world} "
                         "processes")
    if ddp:
        if not dist.is_initialized():  # (already started when a test runs several mains at once)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
    main_rank = not ddp or dist.get_rank() == 0  # only rank 0 evaluates, maps and writes results
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    # precision (dev. 9): bf16 has fp32's range, so it needs no loss scaling; fp16 does (GradScaler)
    dtype = args.dtype if args.dtype != "auto" else "float32" if device.type != "cuda" else \
        "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    autocast = contextlib.nullcontext() if dtype == "float32" else \
        torch.autocast(device.type, dtype=getattr(torch, dtype))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == "float16")  # off: a no-op
    common.check_out_dir(settings, __file__)  # before loading: a bad --out_dir fails now, not later
    common.log(f"{method} | device {device} | dtype {dtype} | processes {world}\nargs {settings}")
    t_start = time.time()
    # data: STS train/dev/test sets, each target's row-parallel train/test with English, the encoder
    try:
        train, evals, parallel = common.load_sts_sets(args.data, data_dir, langs, args.train_lang,
                                                      args.limit_train, args.max_eval)
        texts = [s for ps in [train, *(ps for d in evals.values() for ps in d.values())]
                 for p in ps for s in (p.a, p.b)]
        enc, tok = common.load_encoder(args.model, texts, out_dir, args.max_len)
    except common.DataError as e:  # bad input: one line naming the file and line
        raise SystemExit(f"error: {e}") from None
    for note in common.notes():
        common.log(f"data note: {note}")
    common.log(f"train {len(train)} {args.train_lang} STS pairs | eval " + ", ".join(
        f"{x} {'/'.join(str(len(v)) for v in d.values())}" for x, d in evals.items()))
    # the STS model; RAdam, linear warm-up over 10% of the steps, decay to 0 (dev. 7)
    model = (common.CrossEncoder(enc) if arch == "cross" else common.BiEncoder(enc)).to(device)
    net = model if not ddp else torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device] if device.type == "cuda" else None)  # averages the gradients
    opt = torch.optim.RAdam(model.parameters(), lr=args.lr, weight_decay=0.0)
    epochs = 0 if args.arch == "none" else args.epochs  # none: the pretrained encoder as it is
    total = epochs * math.ceil(math.ceil(len(train) / world) / (args.batch_size // world))
    total = min(total, args.max_steps) if args.max_steps else total
    warm = max(1, int(0.1 * total))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: s / warm if s < warm else
                                              max(0.0, (total - s) / max(1, total - warm)))
    sts_eval = functools.partial(common.sts_evaluate, model, tok, arch=arch, max_len=args.max_len,
                                 device=device, autocast=autocast)  # pairs -> Spearman, Pearson, n
    # 1. STS fine-tuning. A batch (idx: row numbers, a, b, score): bi: a and b hold sentence1 and
    # sentence2 tokenized on their own (BatchEncodings: input_ids, attention_mask (B, T), padded
    # to the batch's longest); cross: a is b, `<s> A </s></s> B </s>`. score (B,): gold 0-5. Each
    # process reads batch_size/world pairs of every global batch (dev. 8). net(a, b): (B,) fp32
    # cosines of embeddings mean-pooled over non-pad tokens (bi), or the head's scores (cross).
    history, best = [], None  # best: (dev score, epoch, weights on the CPU)
    step, skipped, t_train = 0, 0, 0.0
    shard = (dist.get_rank(), world) if ddp else None  # each process reads its own 1/world
    for epoch in range(1, epochs + 1):
        t0, losses = time.time(), []
        for _, a, b, score in common.sts_batches(tok, train, arch, args.max_len,
                                                 args.batch_size // world, shuffle=True,
                                                 seed=args.seed + epoch, shard=shard):
            # ---- Sentence mapping: the STS regression (Table I) that shapes the embeddings
            with autocast:
                pred = net(a.to(device), b.to(device))
            loss = sts_loss(pred, score.to(device), arch)
            # ---- end Sentence mapping
            if not torch.isfinite(loss) and not scaler.is_enabled():  # fp16: the scaler skips it
                raise SystemExit(f"error: step {step + 1}: the loss is {loss.item()}; stopping")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # fp16: a scaled loss keeps small gradients from 0
            scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scale = scaler.get_scale()
            scaler.step(opt)  # fp16: skipped when a gradient overflowed
            scaler.update()
            skipped += scaler.is_enabled() and scaler.get_scale() < scale  # the scale fell: skipped
            sched.step()  # also after a skipped fp16 step: the schedule keeps its length
            step += 1
            losses.append(loss.item())
            if step % args.log_every == 0 or step == total:
                el = t_train + time.time() - t0
                common.log(f"step {step}/{total} epoch {epoch} | loss {loss.item():.4f} | lr "
                           f"{sched.get_last_lr()[0]:.2e} | {step * args.batch_size / el:.1f} "
                           f"pairs/s | eta {el / step * (total - step) / 60:.1f} min"
                           + (f" | skipped {skipped}" if scaler.is_enabled() else ""))
            if step >= total:
                break
        t_train += time.time() - t0
        sums = torch.tensor([np.sum(losses), len(losses)], dtype=torch.float64, device=device)
        if ddp:  # the epoch's loss over every process's pairs, not rank 0's alone
            dist.all_reduce(sums)
        if main_rank:
            dev = {x: sts_eval(evals[x]["dev"]) for x in dict.fromkeys([args.train_lang, *watch])}
            history.append({"epoch": epoch, "train_loss": (sums[0] / sums[1]).item(), "dev": dev})
            common.log_metrics(f"epoch {epoch} dev", dev)
            score = np.mean([dev[x]["spearman"] for x in watch]) if watch else None
            if watch and (best is None or score > best[0]):
                best = (score, epoch, {k: v.detach().to("cpu", copy=True)
                                       for k, v in model.state_dict().items()})
        if ddp:
            dist.barrier()
        if step >= total:
            break
    # the reported model: zero-shot STS, the maps, cross-lingual STS, results.json
    res = None
    if main_rank:
        if best is not None:
            common.log(f"restoring epoch {best[1]} (best {args.select_on} dev {best[0]:.2f})")
            model.load_state_dict(best[2])
        # 2. zero-shot STS; the encoder is fixed now: a bi-encoder embeds each sentence once
        emb = None if arch == "cross" else common.cached_embedder(enc, tok, args.max_len, device,
                                                                  autocast)
        metrics = {x: {s: sts_eval(ps, emb=emb) for s, ps in d.items()} for x, d in evals.items()}
        common.log_metrics("final sts", metrics)
        # ---- Sentence mapping: 3-4. the maps and cross-lingual STS (Table IV)
        if arch == "cross":  # the cross-encoder scores the mixed-language pairs itself
            mapping, cross_lingual = {}, {x: {"cross_encoder": sts_eval(
                common.cross_lingual_pairs(*sp["test"]))} for x, sp in parallel.items()}
        else:
            mapping, cross_lingual = evaluate_mappings(parallel, emb, args.ridge, args.map_epochs,
                                                       args.map_lr, args.seed)
        # ---- end Sentence mapping
        common.log_metrics("cross-lingual STS (sentence1 en)",
                           {f"en-{x}": m for x, m in cross_lingual.items()})
        path = common.save_results(
            out_dir, method, settings, metrics, __file__, mapping=mapping,
            cross_lingual=cross_lingual, history=history, steps=step, world_size=world, dtype=dtype,
            skipped_steps=int(skipped), selected_epoch=best[1] if best else len(history),
            train_pairs_per_s=step * args.batch_size / max(t_train, 1e-9),
            wall_s=time.time() - t_start, peak_memory_mb=common.peak_memory_mb(device))
        common.log(f"wrote {path}")
        res = dict(metrics=metrics, mapping=mapping, cross_lingual=cross_lingual, history=history)
    if ddp:
        dist.barrier()
        dist.destroy_process_group()
    return res


if __name__ == "__main__":
    main()
