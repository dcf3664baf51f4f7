"""Cross-lingual mapping of sentence embeddings, and zero-shot STS, on XLM-R.

Paper: Choi, Kim, Joe, Min & Gwon (2020), "Analyzing Zero-shot Cross-lingual Transfer in Supervised
       NLP Tasks", ICPR 2020, sections II.B-C, III.A and III.D (Tables I and IV).
       https://arxiv.org/abs/2101.10649
Reference code: none published.

Usage:
    python sentence_mapping.py --lang ko,de,es --model xlm-roberta-large   # the STS sets in data/sts
    python sentence_mapping.py --lang ko --arch cross                      # Table I's cross-encoder
    python sentence_mapping.py --lang ko --arch none                       # pretrained encoder only
    python sentence_mapping.py --data demo --model tiny                    # CPU, < 1 min
    python sentence_mapping.py --lang de --model tiny --data_dir tests/fixtures/sts \\
        --pairs tests/fixtures/sts/bitext.en tests/fixtures/sts/bitext.de   # maps fitted on other bitext

What one run does:
  1. STS fine-tuning on --train_lang's train set (en: STS-B; ko: KorSTS, the paper's second row):
     --arch bi: a siamese bi-encoder (Sentence-BERT), the cosine of the two mean-pooled sentence
       embeddings regressed onto score/5 with MSE. This is what a mapping can be applied to.
     --arch cross: the paper's GLUE setting, `A </s></s> B` through the encoder and a regression
       head (dense-tanh-linear on <s>, as RobertaClassificationHead) on the raw 0-5 score, MSE.
     --arch none: no fine-tuning; the pretrained encoder's mean-pooled embeddings, as bi.
     The paper's RAdam, lr 4e-5, linear warm-up over 10% of the steps, 4 epochs, batch 32; as the
     GLUE script, linear decay to 0 and gradients clipped at 1.0. The reported model is the last
     epoch's, or with --select_on en|target the one with the best dev Spearman.
  2. Zero-shot STS: Spearman and Pearson (in percent) on the dev and test sets of English and every
     --lang (sem17-<track>: SemEval-2017, test only). --data demo pairs the demo's utterances: gold
     5 for the same intent and slot types, 3 for the same intent, 0 otherwise (common.demo_sts).
  3. Mapping (bi and none): sentence embeddings (mask-averaged last layer, the paper's choice) of
     the row-parallel train split (STS-B and its translation, checked row by row: ids and scores
     must agree) or of the --pairs bitext (e.g. Tatoeba) fit three maps from English (S_A) to the
     target language (S_B): normal_equation, procrustes, fit_linear (--direction x2en: the reverse).
     On the held-out test split: the average cosine of translated pairs before and after mapping
     (the paper's measure) and bitext retrieval accuracy, nearest neighbour by cosine in both
     directions (added: a map cannot raise it by moving everything towards one point). Pairs are
     the unique sentences of both columns (a repeated sentence would make retrieval ambiguous).
  4. Cross-lingual STS (Table IV): sentence1 in English, sentence2 in the target language (the
     same row of the parallel test sets, its gold score), scored by the cosine unmapped and with
     each mapping (bi, none), or by the cross-encoder directly (cross).

Paper vs this file:
  1. The paper's Procrustes formula, U V^T from SVD(S_B S_A^T), does not fit the shapes (S_B S_A^T
     is n x n); we use the standard U S V^T = SVD(S_A^T S_B), d x d.
  2. The normal equation is solved with lstsq in float64; --ridge adds lambda I (the paper: none).
  3. The paper does not say whether embeddings are centred or normalised before mapping: we use
     them as they are (and so the mean cosine after an orthogonal map is not higher by construction).
  4. The linear net, "SA W = SB" with MSE, is a bias-free nn.Linear trained by SGD; its step size is
     relative to the mean squared embedding norm, so one --map_lr suits encoders of any scale.
  5. Not stated in the paper: which embeddings Table IV maps (pretrained or fine-tuned; we map the
     evaluated encoder's) and which pairs fit the maps (we fit on train and measure on test).
  6. The paper fine-tunes a cross-encoder only; --arch bi (the default) is added: a map needs
     sentence embeddings.
  7. One process (STS-B is 5,749 pairs): under torchrun the script stops with a message.

Shapes: n sentences, d hidden size, B batch, T subwords.
"""
import argparse
import contextlib
import math
import os
import random
import re
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import common

MAPPINGS = ("normal_equation", "procrustes", "fit_linear")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    # --- run (the same flags in every method file)
    p.add_argument("--data", choices=["sts", "demo"], default="sts",
                   help="dataset: sts, or STS pairs made from the embedded demo (default: sts)")
    p.add_argument("--lang", default="de", help="target language(s): ko, ko,de,es or sem17-<track> (default: de)")
    p.add_argument("--model", default="xlm-roberta-large", help="HF hub name or local folder; tiny builds a small "
                   "random encoder and tokenizer on the data, offline (default: xlm-roberta-large)")
    p.add_argument("--data_dir", help="dataset folder in its official layout (default: data/<data>)")
    p.add_argument("--train_lang", default="en", help="language of the labelled training data; a target "
                   "language gives the 'Target' upper bound (default: en)")
    p.add_argument("--epochs", type=int, default=4, help="training epochs (default: 4, the paper's)")
    p.add_argument("--batch_size", type=int, default=32, help="batch size of STS pairs (default: 32, the paper's)")
    p.add_argument("--lr", type=float, default=4e-5, help="peak learning rate (default: 4e-5, the paper's)")
    p.add_argument("--max_len", type=int, default=128, help="max subwords per input (default: 128)")
    p.add_argument("--seed", type=int, default=123456789, help="random seed (default: 123456789)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, help="bf16 autocast (default: on CUDA only; "
                   "--amp also on CPU, --no-amp never)")
    p.add_argument("--out_dir", help="where results.json goes (default: runs/sentence_mapping/<arch>/"
                   "<data>-<lang>-<train_lang>-<model>-s<seed>[-steps<N>][-n<limit_train>])")
    p.add_argument("--overwrite", action="store_true", help="replace a results.json made with other settings")
    p.add_argument("--max_steps", type=int, default=0, help="stop after N optimizer steps (default: 0, no cap)")
    p.add_argument("--limit_train", type=int, default=0, help="train on a fixed random subset of N examples, "
                   "the same for every seed and method (default: 0, all)")
    p.add_argument("--select_on", choices=["last", "en", "target"], default="last", help="the epoch reported: "
                   "the final one, best --train_lang dev or best target dev Spearman (default: last)")
    p.add_argument("--log_every", type=int, default=50, help="progress line every N steps (default: 50)")
    p.add_argument("--dev_halves", action="store_true", help="pawsx/xnli only; refused here (STS has train sets)")
    # --- method
    p.add_argument("--arch", choices=["bi", "cross", "none"], default="bi", help="STS model: siamese bi-encoder, "
                   "cross-encoder (the paper's GLUE run) or none, the pretrained encoder (default: bi)")
    p.add_argument("--direction", choices=["en2x", "x2en"], default="en2x", help="map English embeddings into "
                   "the target language's space (the paper) or the reverse (default: en2x)")
    p.add_argument("--ridge", type=float, default=0.0,
                   help="normal equation ridge term lambda (default: 0.0, the paper's plain least squares)")
    p.add_argument("--map_epochs", type=int, default=100, help="fit_linear: SGD epochs (default: 100)")
    p.add_argument("--map_lr", type=float, default=0.5, help="fit_linear: SGD step size relative to the mean "
                   "squared embedding norm (default: 0.5)")
    p.add_argument("--pairs", nargs="+", metavar="FILE", help="fit the mappings on this bitext instead of the STS "
                   "train split: SRC TGT line-aligned files or one src<TAB>tgt file (English first; one --lang)")
    p.add_argument("--warmup", type=float, default=0.1, help="fraction of the steps with linear lr warm-up "
                   "(default: 0.1)")
    args = p.parse_args(argv)
    for k in ("epochs", "batch_size", "max_len", "log_every"):
        if getattr(args, k) < 1:
            p.error(f"--{k} must be at least 1, got {getattr(args, k)}")
    if args.lr <= 0 or args.max_steps < 0 or args.limit_train < 0:
        p.error("--lr must be positive, --max_steps and --limit_train 0 or positive")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", args.device):
        p.error(f"--device {args.device}: expected auto, cpu, cuda or cuda:N")
    if any(not x.strip() for x in args.lang.split(",")):
        p.error(f"--lang {args.lang!r}: an empty language code; give codes separated by commas, e.g. de,es")
    if args.dev_halves:
        p.error("--dev_halves is for pawsx/xnli; STS has train sets")
    if args.pairs and (len(args.pairs) > 2 or "," in args.lang):
        p.error("--pairs takes one tab-separated file or two line-aligned files, for a single --lang")
    return args


# ---------------------------------------------------------------------------- embeddings and mappings


def mean_pool(h_tok, attention_mask):
    """Sentence embedding: the average of the last layer's token states over real tokens (the
    paper's pooling): (B, T, d), (B, T) -> (B, d). Padding positions do not count."""
    m = attention_mask.unsqueeze(-1).to(h_tok.dtype)
    return (h_tok * m).sum(1) / m.sum(1).clamp(min=1)


def normal_equation(S_A, S_B, ridge=0.0):
    """Least-squares map Phi with S_A Phi ~ S_B (section II.C, the normal equation):

        Phi* = (S_A^T S_A + lambda I)^-1 S_A^T S_B,      lambda = ridge (the paper: 0)

    S_A, S_B (n, d): row i of S_B translates row i of S_A. Returns Phi (d, d). Solved in float64
    with lstsq on the stacked system [S_A; sqrt(lambda) I] Phi = [S_B; 0], which is the same
    solution without forming (S_A^T S_A)^-1 (badly conditioned for sentence embeddings, which
    share a large common component)."""
    A, B = S_A.double(), S_B.double()
    if ridge > 0:
        d = A.shape[1]
        A = torch.cat([A, math.sqrt(ridge) * torch.eye(d, dtype=A.dtype, device=A.device)])
        B = torch.cat([B, torch.zeros(d, B.shape[1], dtype=B.dtype, device=B.device)])
    return torch.linalg.lstsq(A, B, driver="gelsd" if A.device.type == "cpu" else None).solution.to(S_A.dtype)


def procrustes(S_A, S_B):
    """Orthogonal map Psi minimising ||S_A Psi - S_B||_F subject to Psi^T Psi = I (Eq. 2):

        U Sigma V^T = SVD(S_A^T S_B),      Psi* = U V^T

    (the paper prints SVD(S_B S_A^T), an n x n matrix: the factors are in the wrong order).
    S_A, S_B (n, d). Returns Psi (d, d), orthogonal."""
    U, _, Vh = torch.linalg.svd(S_A.double().T @ S_B.double())
    return (U @ Vh).to(S_A.dtype)


def fit_linear(S_A, S_B, epochs=100, lr=0.5, batch_size=256, seed=0):
    """A single linear layer without bias or activation, S_A W ~ S_B, trained by SGD (momentum
    0.9) on the mean squared error of d linear regressors (Eq. 3):

        L(W) = 1/n sum_i ||s_B^(i) - s_A^(i) W||^2

    The step size is lr / mean ||s_A||^2, so one lr suits encoders whose embeddings differ in scale
    (the largest curvature of L is at most 2 mean ||s_A||^2). Returns W (d, d). With enough epochs
    it approaches normal_equation(S_A, S_B); directions in which the embeddings hardly vary are
    learnt slowly, as with any gradient descent on this problem."""
    g = torch.Generator().manual_seed(seed)
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
    translated pairs (the paper's measure), and bitext retrieval accuracy in percent, each source
    picking its nearest target by cosine (src2tgt) and each target its nearest source (tgt2src)."""
    sim = F.normalize(M.float(), dim=-1) @ F.normalize(T.float(), dim=-1).T
    gold = torch.arange(len(M))
    return {"cosine": sim.diagonal().mean().item(),
            "retrieval_src2tgt": 100.0 * (sim.argmax(1) == gold).float().mean().item(),
            "retrieval_tgt2src": 100.0 * (sim.argmax(0) == gold).float().mean().item(), "n": len(M)}


@torch.no_grad()
def embed(encoder, tok, texts, max_len, device, autocast, batch_size=128):
    """Mean-pooled embeddings (n, d) in float32 on the CPU, batched by length, bf16 autocast on GPU."""
    was_training = encoder.training
    encoder.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(len(texts), encoder.config.hidden_size)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        b = tok([texts[i] for i in idx], truncation=True, max_length=max_len, padding=True,
                return_tensors="pt").to(device)
        with autocast:
            h = encoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
        out[idx] = mean_pool(h.float(), b["attention_mask"]).cpu()
    encoder.train(was_training)
    return out


def cached_embedder(encoder, tok, max_len, device, autocast):
    """texts -> embeddings (n, d) as `embed`, each distinct sentence embedded once (the encoder must
    not change while it is used)."""
    cache = {}

    def emb(texts):
        new = list(dict.fromkeys(t for t in texts if t not in cache))
        if new:
            cache.update(zip(new, embed(encoder, tok, new, max_len, device, autocast)))
        return torch.stack([cache[t] for t in texts])
    return emb


# ---------------------------------------------------------------------------- STS models


class CrossEncoder(nn.Module):
    """`<s> A </s></s> B </s>` -> one score: RobertaClassificationHead with one output (dense, tanh,
    dropout, linear) on the <s> state, what the GLUE code fine-tunes for STS-B."""

    def __init__(self, encoder):
        super().__init__()
        h = encoder.config.hidden_size
        self.encoder = encoder
        self.head = nn.Sequential(nn.Dropout(0.1), nn.Linear(h, h), nn.Tanh(), nn.Dropout(0.1), nn.Linear(h, 1))
        self.train()

    def forward(self, a, b):
        h = self.encoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
        return self.head(h[:, 0]).squeeze(-1).float()


class BiEncoder(nn.Module):
    """Sentence-BERT: both sentences through the same encoder, mean pooling, cosine similarity."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        self.train()

    def forward(self, a, b):
        e = [mean_pool(self.encoder(input_ids=x["input_ids"], attention_mask=x["attention_mask"])
                       .last_hidden_state, x["attention_mask"]) for x in (a, b)]
        return F.cosine_similarity(e[0].float(), e[1].float(), dim=-1)


def sts_loss(pred, score, arch):
    """MSE regression: the cross-encoder predicts the 0-5 score (GLUE STS-B); the bi-encoder's
    cosine is regressed onto score / 5 (Sentence-BERT's CosineSimilarityLoss)."""
    return F.mse_loss(pred, score if arch == "cross" else score / 5.0)


def batches(tok, pairs, arch, max_len, batch_size, shuffle=False, seed=0):
    """(indices, a, b, score) batches, shuffled or (for evaluation) by length; for the
    cross-encoder `a` holds the joint `A </s></s> B` input."""
    order = np.random.default_rng(seed).permutation(len(pairs)) if shuffle else \
        np.argsort([len(p.a) + len(p.b) for p in pairs], kind="stable")
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        A, B = [pairs[i].a for i in idx], [pairs[i].b for i in idx]
        score = torch.tensor([pairs[i].score for i in idx])
        if arch == "cross":
            joint = tok(A, B, truncation="longest_first", max_length=max_len, padding=True, return_tensors="pt")
            yield idx, joint, joint, score
        else:
            yield (idx, tok(A, truncation=True, max_length=max_len, padding=True, return_tensors="pt"),
                   tok(B, truncation=True, max_length=max_len, padding=True, return_tensors="pt"), score)


def correlations(pred, gold):
    """Spearman and Pearson (percent) of predicted against gold similarity scores."""
    return {"spearman": common.spearman(pred, gold), "pearson": common.pearson(pred, gold), "n": len(gold)}


@torch.no_grad()
def sts_eval(model, tok, pairs, arch, max_len, device, autocast, emb=None):
    """Spearman and Pearson (percent) of the model's scores against the gold scores. `emb` (texts ->
    embeddings), for a bi-encoder after training, gives the same cosines from cached embeddings."""
    if emb is not None:
        pred = F.cosine_similarity(emb([p.a for p in pairs]), emb([p.b for p in pairs]), dim=-1).numpy()
    else:
        was_training = model.training
        model.eval()
        pred = np.empty(len(pairs))
        for idx, a, b, _ in batches(tok, pairs, arch, max_len, 64):
            with autocast:
                pred[idx] = model(a.to(device), b.to(device)).float().cpu().numpy()
        model.train(was_training)
    return correlations(pred, [p.score for p in pairs])


# ---------------------------------------------------------------------------- data


def load_sts_sets(data, data_dir, langs, train_lang="en", limit_train=0, pairs=None):
    """(train pairs, {lang: {split: pairs}} for English and every target, {target: {"train"|"test":
    (English set, its row-parallel translation, checked row by row), "fit": the --pairs bitext}});
    SemEval-2017 (sem17-<track>) has a test set only and no parallel splits. Raises DataError."""
    train = common.load_sts(data_dir, train_lang, "train", data)
    if limit_train and limit_train < len(train):  # a fixed subset, the same for every seed
        keep = sorted(np.random.default_rng(0).permutation(len(train))[:limit_train])
        train = [train[i] for i in keep]
    splits = {x: ["test"] if x.startswith("sem17-") else ["dev", "test"] for x in ["en", *langs]}
    evals = {x: {s: common.load_sts(data_dir, x, s, data) for s in ss} for x, ss in splits.items()}
    parallel = {}
    for x in (x for x in langs if not x.startswith("sem17-")):
        parallel[x] = {}
        for s in ("train", "test"):
            en, tgt = common.load_sts(data_dir, "en", s, data), common.load_sts(data_dir, x, s, data)
            common.check_parallel(en, tgt)
            parallel[x][s] = (en, tgt)
        if pairs:
            parallel[x]["fit"] = common.read_parallel(pairs)
    return train, evals, parallel


def sentence_pairs(en, tgt):
    """Unique (English, target) sentences of two row-parallel STS sets: both columns, duplicates
    dropped (a repeated sentence would make retrieval ambiguous)."""
    seen, out = set(), []
    for e, t in zip(en, tgt):
        for pair in ((e.a, t.a), (e.b, t.b)):
            if pair[0] not in seen and pair[1] not in seen:
                seen.update(pair)
                out.append(pair)
    return out


def cross_lingual_pairs(en, tgt):
    """Table IV's pairs: sentence1 of each English row, sentence2 of the same translated row, the gold score."""
    return [common.StsPair(e.a, t.b, e.score, (), e.where) for e, t in zip(en, tgt)]


# ---------------------------------------------------------------------------- training and mapping


def train_sts(model, tok, train, evals, watch, arch, args, device, autocast):
    """Fine-tune `model` on the STS pairs `train`, loss sts_loss: RAdam, linear warm-up over --warmup
    of the steps then linear decay to 0, gradients clipped at 1.0. After each epoch, dev Spearman of
    --train_lang and of the `watch` languages, whose mean picks the reported epoch (--select_on;
    none: the last). Returns (history, selected epoch, steps, training seconds); `model` ends with
    the selected epoch's weights."""
    opt = torch.optim.RAdam(model.parameters(), lr=args.lr, weight_decay=0.0)
    total = args.epochs * math.ceil(len(train) / args.batch_size)
    total = min(total, args.max_steps) if args.max_steps else total
    warm = max(1, int(args.warmup * total))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: s / warm if s < warm else
                                              max(0.0, (total - s) / max(1, total - warm)))
    history, best, step, t_train = [], None, 0, 0.0  # best: (dev score, epoch, weights on the CPU)
    for epoch in range(1, args.epochs + 1):
        t0, losses = time.time(), []
        for _, a, b, score in batches(tok, train, arch, args.max_len, args.batch_size, True, args.seed + epoch):
            with autocast:
                pred = model(a.to(device), b.to(device))
            loss = sts_loss(pred, score.to(device), arch)
            if not torch.isfinite(loss):  # stop before a NaN reaches the weights
                raise SystemExit(f"error: step {step + 1}: the loss is {loss.item()}; stopping")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
            if step % args.log_every == 0 or step == total:
                el = t_train + time.time() - t0
                common.log(f"step {step}/{total} epoch {epoch} | loss {loss.item():.4f} | lr "
                           f"{sched.get_last_lr()[0]:.2e} | {step * args.batch_size / el:.1f} pairs/s | eta "
                           f"{el / step * (total - step) / 60:.1f} min")
            if step >= total:
                break
        t_train += time.time() - t0
        dev = {x: sts_eval(model, tok, evals[x]["dev"], arch, args.max_len, device, autocast)
               for x in dict.fromkeys([args.train_lang, *watch])}
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "dev": dev})
        common.log_metrics(f"epoch {epoch} dev", dev)
        if watch:
            dev_score = np.mean([dev[x]["spearman"] for x in watch])
            if best is None or dev_score > best[0]:
                weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                best = (dev_score, epoch, weights)
        if step >= total:
            break
    if best is not None:
        common.log(f"restoring epoch {best[1]} (best {args.select_on} dev spearman {best[0]:.2f})")
        model.load_state_dict(best[2])
    return history, best[1] if best else len(history), step, t_train


def evaluate_mappings(parallel, emb, direction="en2x", ridge=0.0, map_epochs=100, map_lr=0.5, seed=0):
    """For each target language of `parallel` (load_sts_sets): the three maps fitted on the unique
    sentence pairs of the train split (or the bitext), measured on the test split's
    (alignment_quality), and Table IV's cross-lingual STS scored by the cosine, unmapped and with each
    map. emb: texts -> embeddings (n, d). Returns ({lang: measures}, {lang: {map: correlations}})."""
    mapping, cross_lingual = {}, {}
    s, t = (0, 1) if direction == "en2x" else (1, 0)  # mapped side (0 English, 1 target), other side
    for x, split in parallel.items():
        fit, held = split.get("fit") or sentence_pairs(*split["train"]), sentence_pairs(*split["test"])
        fit_s, fit_t = emb([p[s] for p in fit]), emb([p[t] for p in fit])
        held_s, held_t = emb([p[s] for p in held]), emb([p[t] for p in held])
        W = {"normal_equation": normal_equation(fit_s, fit_t, ridge), "procrustes": procrustes(fit_s, fit_t),
             "fit_linear": fit_linear(fit_s, fit_t, map_epochs, map_lr, seed=seed)}
        mapping[x] = {"unmapped": alignment_quality(held_s, held_t), "fit_pairs": len(fit)}
        mapping[x].update({k: alignment_quality(held_s @ w, held_t) for k, w in W.items()})
        common.log(f"mapping {direction} {x} | fitted on {len(fit)} pairs, evaluated on {len(held)} held-out | " +
                   " | ".join(f"{k} cos {m['cosine']:.4f} R@1 {m['retrieval_src2tgt']:.1f}/"
                              f"{m['retrieval_tgt2src']:.1f}" for k, m in mapping[x].items() if k != "fit_pairs"))
        xl = cross_lingual_pairs(*split["test"])  # cos(sentence1 in English, sentence2 in x), mapped per direction
        ea, eb = emb([p.a for p in xl]), emb([p.b for p in xl])
        scored = {"unmapped": (ea, eb), **{k: (ea @ w, eb) if s == 0 else (ea, eb @ w) for k, w in W.items()}}
        cross_lingual[x] = {k: correlations(F.cosine_similarity(a, b, dim=-1).numpy(), [p.score for p in xl])
                            for k, (a, b) in scored.items()}
    return mapping, cross_lingual


# ---------------------------------------------------------------------------- main


def main(argv=None):
    args = parse_args(argv)
    method = f"sentence_mapping-{args.arch}"
    data_dir = args.data_dir or (str(common.DEMO_DIR) if args.data == "demo" else f"data/{args.data}")
    out_dir = args.out_dir or common.default_out_dir(f"sentence_mapping/{args.arch}", args)
    settings = {**vars(args), "data_dir": data_dir, "out_dir": out_dir}  # as used
    langs = [x.strip() for x in args.lang.split(",") if x.strip() != "en"]
    arch = "bi" if args.arch == "none" else args.arch  # none: the pretrained encoder as a bi-encoder
    watch = [] if args.select_on == "last" else [args.train_lang] if args.select_on == "en" else \
        [x for x in langs if not x.startswith("sem17-")] or ["en"]  # whose dev Spearman picks the epoch

    # setup: the commit, seeds, device, bf16 autocast; one process (STS-B is 5,749 pairs)
    common.git_commit()  # the commit this run starts from, for results.json
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SystemExit("error: sentence_mapping.py runs on one process (STS-B is 5,749 pairs); drop torchrun")
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
    common.log(f"{method} | device {device} | bf16 autocast {bf16}\nargs {settings}")
    t_start = time.time()

    # data: STS train/dev/test sets, each target's row-parallel splits with English, the encoder
    common.DATA_NOTES.clear()  # notes belong to one run
    try:
        train, evals, parallel = load_sts_sets(args.data, data_dir, langs, args.train_lang, args.limit_train,
                                               args.pairs)
        sets = [train, *(ps for d in evals.values() for ps in d.values())]
        texts = [s for ps in sets for p in ps for s in (p.a, p.b)]
        enc, tok = common.load_encoder(args.model, texts, out_dir, args.max_len)
    except common.DataError as e:  # bad input: one line naming the file and line
        raise SystemExit(f"error: {e}") from None
    for note in common.notes():
        common.log(f"data note: {note}")
    common.log(f"train {len(train)} {args.train_lang} STS pairs | eval " +
               ", ".join(f"{x} {'/'.join(str(len(v)) for v in d.values())}" for x, d in evals.items()))

    # 1. the STS model, fine-tuned unless --arch none
    model = (CrossEncoder(enc) if arch == "cross" else BiEncoder(enc)).to(device)
    history, selected, steps, t_train = [], 0, 0, 0.0
    if args.arch != "none":
        history, selected, steps, t_train = train_sts(model, tok, train, evals, watch, arch, args, device,
                                                      autocast)

    # 2. zero-shot STS in every language; the encoder is fixed now: a bi-encoder's cosines come from
    # embeddings computed once per distinct sentence
    emb = None if arch == "cross" else cached_embedder(enc, tok, args.max_len, device, autocast)
    metrics = {x: {s: sts_eval(model, tok, ps, arch, args.max_len, device, autocast, emb) for s, ps in d.items()}
               for x, d in evals.items()}
    common.log_metrics("final sts", metrics)

    # 3-4. mappings and cross-lingual STS; the cross-encoder scores mixed-language pairs directly
    if arch == "cross":
        mapping, cross_lingual = {}, {}
        for x, split in parallel.items():
            xl = cross_lingual_pairs(*split["test"])
            cross_lingual[x] = {"cross_encoder": sts_eval(model, tok, xl, arch, args.max_len, device, autocast)}
    else:
        mapping, cross_lingual = evaluate_mappings(parallel, emb, args.direction, args.ridge, args.map_epochs,
                                                   args.map_lr, args.seed)
    common.log_metrics("cross-lingual STS (sentence1 en)", {f"en-{x}": m for x, m in cross_lingual.items()})

    path = common.save_results(out_dir, method, settings, metrics, mapping=mapping, cross_lingual=cross_lingual,
                               history=history, selected_epoch=selected, steps=steps,
                               train_pairs_per_s=steps * args.batch_size / max(t_train, 1e-9),
                               wall_s=time.time() - t_start, peak_memory_mb=common.peak_memory_mb(device),
                               world_size=1)
    common.log(f"wrote {path}")
    return {"metrics": metrics, "mapping": mapping, "cross_lingual": cross_lingual, "history": history}


if __name__ == "__main__":
    main()
