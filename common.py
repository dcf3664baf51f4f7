"""What the xalign method files share: data loading, the task heads, the metrics, a results writer.

Data: readers for the official layouts of MTOP, MTOD, MultiATIS++, MASSIVE (and the embedded demo),
PAWS-X, XNLI, the STS sets and SQuAD/MLQA; translations of the English training set for alignment
(`translate-train/<lang>.txt` or parallel ids); label encoding, subword alignment and
dynamic-padding batches (`load_task`, `train_items`, `encode_evals`, `make_loader`); parallel
sentences and grouped batches for PPA (`load_parallel_specs`, `train_groups`, `group_batches`).
Heads: the encoder (a hub name, a local folder, or `tiny`) with a sentence head and a token head
(`TaskModel`), the joint task loss, an encoder's MLM head (`load_mlm`), the QA head, the STS bi-
and cross-encoder. Metrics: `evaluate` over a dataset, slot F1, Pearson/Spearman
(`sts_evaluate`), MLQA F1/EM. Results: `save_results` (atomic), `check_out_dir` (never replace a
run made with other settings), and the `log`/`log_metrics` lines. Arguments, seeding (nothing here
seeds a global generator: `--model tiny` draws its random weights from the run's --seed), device
and precision setup, the training loop, model selection and every loss live in the method files:
they are what each method is.

Records: an intent/slot example is `Example(id, words, intent, slots)` with BIO slot tags, one per
word; a sentence-pair example is `Pair(id, a, b, label)`. Bad input raises `DataError` naming the
file, the line and the problem. Known dataset defects that the papers also drop (MultiATIS++ rows
whose token and label counts differ) are skipped, counted and reported by `notes()`, which each run
prints and stores in its results.json.
"""
import contextlib
import json
import os
import random
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------- data records


@dataclass
class Example:
    id: str
    words: list  # list[str]
    intent: str
    slots: list  # list[str], BIO tags, one per word


@dataclass
class Pair:
    id: str
    a: str
    b: str
    label: str


class DataError(ValueError):
    """Malformed input: the message starts with `file:line:`."""


class LineId(str):
    """An id made up from a file name and line number (`train.txt:7`) for a record whose file has no
    id column. It equals the plain string, but it is a position, not a key: `load_translations`
    never pairs such ids across languages (rows of different languages are not parallel by line)."""


DATA_NOTES = []  # defects counted while loading (printed by each run, stored in results.json)

# the embedded demo, found from any working directory
DEMO_DIR = Path(__file__).resolve().parent / "data" / "demo"
INTENT_SLOT = ("mtop", "mtod", "matis", "massive", "demo")
PAIR_TASKS = ("pawsx", "xnli")
DATASETS = INTENT_SLOT + PAIR_TASKS
PAIR_LABELS = {"pawsx": ["0", "1"], "xnli": ["entailment", "neutral", "contradiction"]}
SPLIT_NAMES = {  # our split name -> the file name part each layout uses
    "mtop": {"train": "train", "dev": "eval", "test": "test"},
    "mtod": {"train": "train", "dev": "eval", "test": "test"},
    "matis": {"train": "train", "dev": "dev", "test": "test"},
    "pawsx": {"train": "train", "dev": "dev_2k", "test": "test_2k"},
    "xnli": {"train": "train", "dev": "dev", "test": "test"},
}

# Where each dataset is published and which files its loader expects (used in error messages).
PUBLISHED = {
    "mtop": ("https://dl.fbaipublicfiles.com/mtop/mtop.zip",
             "<data_dir>/<lang>/{train,eval,test}.txt"),
    "mtod": ("https://download.pytorch.org/data/multilingual_task_oriented_dialog_slotfilling.zip",
             "<data_dir>/<lang>/{train,eval,test}-<lang>.conllu "
             "(+ translate-train/<lang>.txt for alignment)"),
    "matis": ("LDC2021T04 (https://catalog.ldc.upenn.edu/LDC2021T04), "
              "licence required; not downloadable",
              "<data_dir>/{train,dev,test}_<LANG>.tsv (+ optional translate-train/<lang>.txt)"),
    "massive": ("https://amazon-massive-nlu-dataset.s3.amazonaws.com/"
                "amazon-massive-dataset-1.0.tar.gz",
                "<data_dir>/data/<locale>.jsonl, e.g. data/en-US.jsonl"),
    "demo": ("ships with xalign in data/demo", "<data_dir>/data/<locale>.jsonl"),
    "pawsx": ("https://storage.googleapis.com/paws/pawsx/x-final.tar.gz",
              "<data_dir>/x-final/<lang>/{train.tsv|translated_train.tsv,dev_2k.tsv,test_2k.tsv} "
              "or the XTREME layout <data_dir>/{train-en,dev-<lang>,test-<lang>}.tsv"),
    "xnli": ("https://dl.fbaipublicfiles.com/XNLI/XNLI-1.0.zip and .../XNLI-MT-1.0.zip",
             "<data_dir>/XNLI-1.0/xnli.{dev,test}.tsv "
             "+ <data_dir>/XNLI-MT-1.0/multinli/multinli.train.<lang>.tsv "
             "or the XTREME layout <data_dir>/{train-en,dev-<lang>,test-<lang>}.tsv"),
}


def _utf8_error(path):
    """DataError for the first byte of `path` that is not UTF-8:
    `file:line: ... (byte 0x.. at column c)`."""
    raw = Path(path).read_bytes()
    bom = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    try:
        raw[bom:].decode("utf-8")
        return DataError(f"{path}: not valid UTF-8")
    except UnicodeDecodeError as e:
        pos = bom + e.start
    # line ends as open() reads them
    start = max(raw.rfind(b"\n", 0, pos), raw.rfind(b"\r", 0, pos)) + 1
    line = len(raw[:start].splitlines()) + 1
    col = len(raw[start:pos].decode("utf-8-sig", errors="replace")) + 1
    return DataError(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[pos]:02x} at column {col})")


def _open_text(path, **kw):
    """open() for reading UTF-8 text; a byte-order mark at the start is dropped."""
    return open(path, encoding="utf-8-sig", **kw)


def _read_text(path):
    """The whole text of a UTF-8 file (byte-order mark dropped); bad bytes: DataError with
    file:line."""
    try:
        with _open_text(path) as f:
            return f.read()
    except UnicodeDecodeError:
        raise _utf8_error(path) from None


def _lines(path):
    """Yield (line_number, line without newline) of a UTF-8 text file (a byte-order mark is dropped;
    bytes that are not UTF-8 raise DataError with file:line)."""
    try:
        with _open_text(path) as f:
            for n, line in enumerate(f, 1):
                yield n, line.rstrip("\n").rstrip("\r")
    except UnicodeDecodeError:
        raise _utf8_error(path) from None


def _need(path, data):
    if not Path(path).is_file():
        url, layout = PUBLISHED[data]
        hint = f"python tools/download.py {data}" if data in DOWNLOADS else "see the README"
        raise DataError(f"{path}: file not found. The {data} loader expects {layout}. "
                        f"Published at: {url} ({hint}).")
    return Path(path)


# ----------------------------------------------------------------------------- official layouts


def read_mtop(path):
    """MTOP: [id,] intent, slots `start:end:SL:TYPE,...`, utterance, domain, locale, decoupled form,
    tokens JSON {"tokens", "tokenSpans": [{"start", "length"}]}. A token is B-TYPE if it starts
    where the slot starts, I-TYPE if it lies inside the slot (the official preprocessing rule).
    A slot must start at a token and not end inside one. Spans that overlap or repeat an earlier
    span of their row are kept and counted in DATA_NOTES: on a shared token the span listed later
    wins. Copies without the id column (7 columns) get LineIds, which never pair across
    languages."""
    out, overlaps = [], []
    for n, line in _lines(path):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) == 7 and not cols[0].isdigit():  # copies made before the id column was added
            cols = [LineId(f"{Path(path).name}:{n}")] + cols
        if len(cols) != 8:
            raise DataError(f"{path}:{n}: expected 8 tab-separated columns (7 without the id), "
                            f"found {len(cols)}")
        uid, intent, slots, utt, _, _, _, tok_json = cols
        try:
            toks = json.loads(tok_json)
            spans = [(s["start"], s["start"] + s["length"]) for s in toks["tokenSpans"]]
            words = toks["tokens"]
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path}:{n}: column 8 is not a tokens JSON with tokenSpans "
                            f"({e})") from None
        if len(words) != len(spans):
            raise DataError(f"{path}:{n}: {len(words)} tokens but {len(spans)} tokenSpans "
                            "in column 8")
        tags, seen = ["O"] * len(words), []
        for slot in filter(None, slots.split(",")):
            m = re.fullmatch(r"(\d+):(\d+):SL:(.+)", slot)
            if not m:
                raise DataError(f"{path}:{n}: slot {slot!r} is not start:end:SL:NAME")
            s, e, name = int(m[1]), int(m[2]), m[3]
            if not 0 <= s < e <= len(utt):
                raise DataError(f"{path}:{n}: slot {slot!r} lies outside the utterance "
                                f"({len(utt)} chars)")
            if all(ts != s for ts, _ in spans):
                raise DataError(f"{path}:{n}: slot {slot!r} does not start at a token "
                                f"({utt[s:e]!r} in {utt!r})")
            for i, (ts, te) in enumerate(spans):
                if ts < e < te:
                    raise DataError(f"{path}:{n}: slot {slot!r} ends inside the token "
                                    f"{words[i]!r} ({utt[s:e]!r})")
            if any(s < pe and ps < e for ps, pe in seen):
                overlaps.append(n)
            seen.append((s, e))
            for i, (ts, te) in enumerate(spans):
                if ts == s:
                    tags[i] = "B-" + name
                elif s < ts and te <= e:
                    tags[i] = "I-" + name
        out.append(Example(uid, words, intent.removeprefix("IN:"), tags))
    if overlaps:
        lines = sorted(set(overlaps))
        DATA_NOTES.append(f"{path}: {len(overlaps)} slot spans overlap or repeat an earlier span "
                          f"of their row (lines {', '.join(map(str, lines[:10]))}"
                          f"{' ...' if len(lines) > 10 else ''}); "
                          "on shared tokens the later span's tag wins")
    return out


def read_mtod(path):
    """MTOD CoNLL-U: `# text/intent/slots` comments, then idx, token, intent, BIO slot rows
    (`NoLabel` = O); a blank line ends an utterance. A comment after token rows or a second
    `# text:`/`# intent:` before them, token numbering that restarts at 1, or a token intent that
    differs from the utterance's (a missing blank line would merge two utterances) and comment
    lines without token rows are errors."""
    out, words, tags, intent, start, heads = [], [], [], None, None, set()
    for n, line in list(_lines(path)) + [(None, "")]:
        if line.startswith("#"):
            head = line.split(":", 1)[0] if line.startswith(("# text:", "# intent:")) else None
            if words or head and head in heads:
                raise DataError(f"{path}:{n}: a comment line inside the utterance that begins "
                                f"at line {start}: "
                                "a blank line must end each utterance")
            heads.add(head)
            if line.startswith("# intent:"):
                intent = line.split(":", 1)[1].strip()
            start = start or n
        elif line.strip():
            cols = line.split("\t")
            if len(cols) != 4:
                raise DataError(f"{path}:{n}: expected 4 tab-separated columns, found {len(cols)}")
            if words and cols[0] == "1":
                raise DataError(f"{path}:{n}: token number 1 inside the utterance that begins at "
                                f"line {start}: a blank line must end each utterance")
            if cols[0] != str(len(words) + 1):  # 1, 2, 3, ... within an utterance
                raise DataError(f"{path}:{n}: token number {cols[0]!r}, expected {len(words) + 1}")
            if not cols[1].strip():
                raise DataError(f"{path}:{n}: an empty token (column 2)")
            _check_tag(cols[3] if cols[3] != "NoLabel" else "O", f"{path}:{n}")
            if intent and cols[2] != intent:
                raise DataError(f"{path}:{n}: intent {cols[2]!r} differs from {intent!r} of the "
                                f"utterance that begins at line {start} (a missing blank line?)")
            words.append(cols[1])
            tags.append("O" if cols[3] == "NoLabel" else cols[3])
            intent = intent or cols[2]
            start = start or n
        elif words:
            out.append(Example(LineId(f"{Path(path).name}:{start}"), words, intent, tags))
            words, tags, intent, start, heads = [], [], None, None, set()
        elif start:
            raise DataError(f"{path}:{start}: an utterance with comment lines but no token rows")
    return out


def _matis_rows(path):
    """(line number, 4 columns) of each data row of a MultiATIS++ tsv: the header on line 1 and
    blank lines skipped, the header anywhere else an error."""
    for n, line in _lines(path):
        if n == 1 and line.startswith("id\t") or not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 4:
            raise DataError(f"{path}:{n}: expected 4 tab-separated columns, found {len(cols)}")
        if cols[0] == "id" and cols[3].strip() == "intent":
            raise DataError(f"{path}:{n}: the header row again (a file pasted into another?)")
        yield n, cols


def _check_tag(tag, where):
    """A slot tag is O, B-<type> or I-<type>; anything else is an error naming its line."""
    if tag != "O" and not re.fullmatch(r"[BI]-\S+", tag):
        raise DataError(f"{where}: slot tag {tag!r} is not O, B-<type> or I-<type>")


def read_matis(path):
    """MultiATIS++ tsv with header `id utterance slot_labels intent`. Rows whose token and label
    counts differ (as released, e.g. FR train 75) are skipped and reported in DATA_NOTES."""
    out, bad = [], []
    for n, cols in _matis_rows(path):
        words, tags = cols[1].split(), cols[2].split()  # split(): double spaces make no empty token
        if not cols[3].strip():
            raise DataError(f"{path}:{n}: an empty intent (column 4)")
        if len(words) != len(tags):
            bad.append(n)
            continue
        for tag in tags:
            _check_tag(tag, f"{path}:{n}")
        out.append(Example(cols[0], words, cols[3], tags))
    if bad:
        DATA_NOTES.append(f"{path}: skipped {len(bad)} rows whose token and label counts differ "
                          f"(lines {', '.join(map(str, bad[:10]))}"
                          f"{' ...' if len(bad) > 10 else ''})")
    return out


def parse_annot_utt(annot, where):
    """MASSIVE `wake me up at [time : nine am]` -> (words, BIO tags)."""
    words, tags = [], []
    for m in re.finditer(r"\[([^\[\]]*)\]|([^\[\]\s]+)|(\S)", annot):
        if m[1] is not None:
            name, sep, value = m[1].partition(" : ")
            if not sep or not value.split() or not name.strip():
                raise DataError(f"{where}: slot [{m[1]}] is not [type : words]")
            for i, w in enumerate(value.split()):
                words.append(w)
                tags.append(("B-" if i == 0 else "I-") + name.strip())
        elif m[2] is not None:
            words.append(m[2])
            tags.append("O")
        else:
            raise DataError(f"{where}: unbalanced bracket in annot_utt {annot!r}")
    return words, tags


MASSIVE_PARTITIONS = ("train", "dev", "test")


def read_massive(path, split):
    """MASSIVE 1.0 jsonl (one locale per file, `partition` train/dev/test). A row of another locale
    than the file's name, an unknown partition or an id repeated in a partition is an error; rows
    with an empty utterance (nothing to tag) are skipped and counted in DATA_NOTES."""
    out, seen, empty, stem = [], {}, [], Path(path).stem
    for n, line in _lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            loc = row.get("locale", stem)
            if loc != stem and not ("-" not in stem and str(loc).startswith(stem + "-")):
                raise DataError(f"{path}:{n}: locale {loc!r}, but the file is {stem}: each file "
                                "holds one locale")
            if row["partition"] not in MASSIVE_PARTITIONS:
                raise DataError(f"{path}:{n}: partition {row['partition']!r} is not one of "
                                f"{', '.join(MASSIVE_PARTITIONS)}")
            uid, key = str(row["id"]), (row["partition"], str(row["id"]))
            if key in seen:
                raise DataError(f"{path}:{n}: id {uid!r} repeats the id of line {seen[key]} in "
                                f"partition {row['partition']} (ids pair translations across "
                                "locales: each must be unique)")
            seen[key] = n
            if row["partition"] != split:
                continue
            if not isinstance(row["intent"], str) or not row["intent"].strip():
                raise DataError(f"{path}:{n}: intent {row['intent']!r} is not an intent name")
            words, tags = parse_annot_utt(row["annot_utt"], f"{path}:{n}")
            if not words:
                empty.append(n)
                continue
            out.append(Example(uid, words, row["intent"], tags))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            if isinstance(e, DataError):
                raise
            raise DataError(f"{path}:{n}: not a MASSIVE record ({type(e).__name__}: {e})") from None
    if empty:
        DATA_NOTES.append(f"{path}: skipped {len(empty)} rows with an empty utterance (lines "
                          f"{', '.join(map(str, empty[:10]))}{' ...' if len(empty) > 10 else ''})")
    return out


def read_pairs(path, a_col, b_col, label_col, header, data, lang=None, lang_col=None):
    """Any tab-separated sentence-pair file; columns by index, or by name when `header`. Pairs with
    an empty sentence are kept (the label still applies) and counted in DATA_NOTES."""
    out, names, empty = [], None, []
    for n, line in _lines(path):
        if not line.strip():
            continue
        cols = line.split("\t")
        if header and names is None:
            names = {c: i for i, c in enumerate(cols)}
            try:
                a_col, b_col, label_col = (names[c] for c in (a_col, b_col, label_col))
                lang_col = names[lang_col] if lang_col else None
            except KeyError as e:
                raise DataError(f"{path}:{n}: header has no column {e}") from None
            continue
        if len(cols) <= max(a_col, b_col, label_col):
            hint = " (XTREME's test files hide their labels: use the official release's layout)" \
                if len(cols) == 2 and not header and Path(path).name.startswith("test-") else ""
            raise DataError(f"{path}:{n}: expected at least {max(a_col, b_col, label_col) + 1} "
                            f"tab-separated columns, found {len(cols)}{hint}")
        if lang_col is not None and cols[lang_col] != lang:
            continue
        label = "contradiction" if cols[label_col] == "contradictory" else cols[label_col]
        if label not in PAIR_LABELS[data]:
            raise DataError(f"{path}:{n}: label {label!r} is not one of {PAIR_LABELS[data]}")
        uid = cols[0] if header and "id" in names else LineId(f"{Path(path).name}:{n}")
        if not cols[a_col].strip() or not cols[b_col].strip():
            empty.append(n)
        out.append(Pair(uid, cols[a_col], cols[b_col], label))
    if empty:
        more = " ..." if len(empty) > 10 else ""
        DATA_NOTES.append(f"{path}: {len(empty)} pairs with an empty sentence (lines "
                          f"{', '.join(map(str, empty[:10]))}{more}), kept")
    return out


def massive_file(data_dir, lang, data="massive"):
    """Find `<data_dir>/data/<locale>.jsonl` for a short code (`de`) or a full locale (`de-DE`)."""
    folder = Path(data_dir) / "data"
    hits = sorted(folder.glob(f"{lang}.jsonl")) or sorted(folder.glob(f"{lang}-*.jsonl"))
    if len(hits) > 1:
        raise DataError(f"{folder}: --lang {lang} matches {[h.stem for h in hits]}; "
                        "name the locale")
    return hits[0] if hits else _need(folder / f"{lang}.jsonl", data)


def _xtreme_layout(d, lang, split):
    return (d / f"{split}-{lang}.tsv").is_file() or not (d / "x-final").is_dir() \
        and not (d / "XNLI-1.0").is_dir()


def split_file(data, data_dir, lang, split):
    """The file of one language's split ('train', 'dev', 'test') in the official layout; DataError
    naming the expected layout and the download if it is not there."""
    d = Path(data_dir)
    if data == "mtop":
        return _need(d / lang / f"{SPLIT_NAMES[data][split]}.txt", data)
    if data == "mtod":  # <lang>/train-<lang>.conllu; some copies name Thai train-th_TH.conllu
        name = f"{SPLIT_NAMES[data][split]}-{lang}"
        hits = sorted((d / lang).glob(f"{name}_*.conllu")) \
            if not (d / lang / f"{name}.conllu").is_file() else []
        return _need(hits[0] if hits else d / lang / f"{name}.conllu", data)
    if data == "matis":
        return _need(d / f"{split}_{lang.upper()}.tsv", data)
    if data in ("massive", "demo"):
        return massive_file(d, lang, data)
    if _xtreme_layout(d, lang, split):
        return _need(d / f"{split}-{lang}.tsv", data)
    if data == "pawsx":
        name = "train" if lang == "en" else "translated_train"
        name = name if split == "train" else SPLIT_NAMES[data][split]
        return _need(d / "x-final" / lang / f"{name}.tsv", data)
    if split == "train":
        return _need(d / "XNLI-MT-1.0" / "multinli" / f"multinli.train.{lang}.tsv", data)
    return _need(d / "XNLI-1.0" / f"xnli.{split}.tsv", data)


def load_split(data, data_dir, lang, split):
    """Examples of one language and split ('train', 'dev', 'test') from the official layout. A split
    without examples (an empty file, a header only, no MASSIVE row of that partition) is an
    error."""
    d, f = Path(data_dir), split_file(data, data_dir, lang, split)
    if data == "mtop":
        out = read_mtop(f)
    elif data == "mtod":
        out = read_mtod(f)
    elif data == "matis":
        out = read_matis(f)
    elif data in ("massive", "demo"):
        out = read_massive(f, split)
    elif _xtreme_layout(d, lang, split):
        out = read_pairs(f, 0, 1, 2, False, data)
    elif data == "pawsx":
        out = read_pairs(f, "sentence1", "sentence2", "label", True, data)
    elif split == "train":
        out = read_pairs(f, "premise", "hypo", "label", True, data)
    else:
        out = read_pairs(f, "sentence1", "sentence2", "gold_label", True, data,
                         lang=lang, lang_col="language")
    if not out:
        raise DataError(f"{f}: no examples" + _why_empty(data, f, lang, split))
    return out


def _why_empty(data, f, lang, split):
    """What an empty split's file holds instead, for the error message."""
    skipped = [n[len(f"{f}: "):] for n in DATA_NOTES if n.startswith(f"{f}: ")]
    if data in ("massive", "demo") and skipped:  # every row of the split was skipped
        return f" with partition {split!r} that can be used ({skipped[-1]})"
    if data in ("massive", "demo"):
        parts = set()
        for _, line in _lines(f):
            with contextlib.suppress(ValueError, TypeError, KeyError):
                parts.add(str(json.loads(line)["partition"]))
        return f" with partition {split!r} (partitions found: {', '.join(sorted(parts)) or 'none'})"
    if f.name.startswith("xnli."):
        return (f" for language {lang!r} "
                f"(languages found: {', '.join(_xnli_languages(f.parent)) or 'none'})")
    return f" ({skipped[-1]})" if skipped else \
        f" (the {lang} {split} split is empty or only a header)"


def _xnli_languages(folder):
    """The `language` column of XNLI-1.0's xnli.dev.tsv and xnli.test.tsv (those that exist)."""
    found = set()
    for f in (folder / "xnli.dev.tsv", folder / "xnli.test.tsv"):
        if f.is_file():
            found |= {line.split("\t")[0] for n, line in _lines(f) if n > 1 and line.strip()}
    return sorted(found)


def _found_languages(data, data_dir):
    """Every language the dataset folder holds (English included), from whichever splits exist."""
    d = Path(data_dir)
    if data in ("mtop", "mtod"):
        found = [p.name for p in d.iterdir() if p.is_dir() and p.name != "translate-train"]
    elif data == "matis":
        found = [p.stem.split("_")[1].lower() for s in ("train", "dev", "test")
                 for p in d.glob(f"{s}_*.tsv")]
    elif data in ("massive", "demo"):
        found = [p.stem.split("-")[0] for p in (d / "data").glob("*.jsonl")]
    elif (d / "x-final").is_dir():
        found = [p.name for p in (d / "x-final").iterdir() if p.is_dir()]
    elif (d / "XNLI-1.0").is_dir():
        found = _xnli_languages(d / "XNLI-1.0")
    else:
        found = [p.stem.split("-", 1)[1] for s in ("train", "dev", "test")
                 for p in d.glob(f"{s}-*.tsv")]
    return sorted(set(found))


def languages(data, data_dir):
    """Every language (other than English) the dataset folder holds, for `--lang all`."""
    return [x for x in _found_languages(data, data_dir) if x != "en"]


def resolve_langs(spec, data, data_dir):
    """`--lang de,es` or `all` -> ['de', 'es']. Each language named must be in the folder."""
    if not Path(data_dir).is_dir():
        url, layout = PUBLISHED[data]
        raise DataError(f"{data_dir}: dataset folder not found. "
                        f"The {data} loader expects {layout}. "
                        f"Published at: {url}"
                        + (f" (python tools/download.py {data})" if data in DOWNLOADS else ""))
    if spec == "all":
        langs = languages(data, data_dir)
    else:
        langs = [x.strip() for x in spec.split(",")]
        if not all(langs):
            raise DataError(f"{data_dir}: --lang {spec}: an empty item in the list "
                            "(a doubled or trailing comma?)")
        found, missing = _missing(langs, data, data_dir)
        if missing:
            searched = Path(data_dir) / "data" if data in ("massive", "demo") else Path(data_dir)
            raise DataError(f"{data_dir}: --lang {','.join(missing)}: "
                            f"no {', '.join(missing)} data here "
                            f"(found: {', '.join(found) or f'none in {searched}'})"
                            + _parent_hint(spec, data, data_dir))
    if not langs:
        raise DataError(f"{data_dir}: no target languages found for --lang {spec}"
                        + _parent_hint(spec, data, data_dir))
    return langs


def _missing(langs, data, data_dir):
    """(languages found in the folder, those of `langs` not among them)."""
    found = _found_languages(data, data_dir)
    folder = Path(data_dir) / "data"  # MASSIVE also takes a full locale: de-DE
    return found, [x for x in langs if not (x in found or data == "matis" and x.lower() in found
                                            or data in ("massive", "demo")
                                            and (folder / f"{x}.jsonl").is_file())]


def _parent_hint(spec, data, data_dir):
    """`; <parent> has the <data> layout ...` when --data_dir names a folder one level too deep."""
    d = Path(data_dir)
    parent = d.parent if d.parent != d else d.resolve().parent
    if parent == d.resolve():
        return ""
    try:
        found = languages(data, parent) if spec == "all" else \
            not _missing(spec.split(","), data, parent)[1]
    except (OSError, DataError):
        return ""
    return f"; {parent} has the {data} layout: pass --data_dir {parent}" if found else ""


def load_translations(data, data_dir, lang, english, train_lang="en"):
    """Translations of the English training examples into `lang`, index-aligned with `english`
    (None where one is missing). Text only: the target labels are never trained on. A line-aligned
    `translate-train/<lang>.txt` (or .tsv for pairs) beside the dataset wins (machine translation,
    as in the papers); blank lines there are missing translations (counted in DATA_NOTES). Otherwise
    parallel datasets are paired by id (never by LineIds, made up from line numbers); for
    intent/slot data the share of pairs whose intents agree is noted, and an implausibly low one is
    an error."""
    _check_target(lang, train_lang)
    d = Path(data_dir)
    mt = d / "translate-train" / f"{lang}.{'tsv' if data in PAIR_TASKS else 'txt'}"
    if mt.is_file() or data == "mtod":
        rows = list(_lines(_need_translations(mt, data, d)))
        if data == "matis" and train_lang == "en" and len(rows) != len(english):
            rows = _drop_skipped(mt, rows, _train_file(data, d))
        lines = [line for _, line in rows]
        if len(lines) != len(english):
            raise DataError(f"{mt}: {len(lines)} lines, but the English train set has "
                            f"{len(english)} examples; the file must be line-aligned with it "
                            f"({_train_file(data, d)})")
        blank = [n for n, line in rows if not line.strip()]
        if blank:
            DATA_NOTES.append(f"{mt}: {len(blank)} blank lines (missing translations; lines "
                              f"{', '.join(map(str, blank[:10]))}"
                              f"{' ...' if len(blank) > 10 else ''})")
        if data in PAIR_TASKS:
            for n, line in enumerate(lines, 1):
                if line.strip() and line.count("\t") < 1:
                    raise DataError(f"{mt}:{n}: expected sentence1<TAB>sentence2")
            return [tuple(line.split("\t")[:2]) if line.strip() else None for line in lines]
        return [line if line.strip() else None for line in lines]
    if data == "xnli" and (d / "XNLI-MT-1.0").is_dir():  # XNLI-MT is line-aligned, not keyed by id
        target = load_split(data, data_dir, lang, "train")
        if len(target) != len(english):
            raise DataError(f"{d}/XNLI-MT-1.0/multinli/multinli.train.{lang}.tsv: "
                            f"{len(target)} pairs, "
                            f"but the English file has {len(english)}; they must be line-aligned")
        return [(t.a, t.b) for t in target]
    try:
        split_file(data, data_dir, lang, "train")
    except DataError as e:  # no target train file: nothing to pair with
        raise DataError(f"{_no_translations(data, data_dir, lang, len(english))} ({e})") from None
    by_id = {t.id: t for t in load_split(data, data_dir, lang, "train")
             if not isinstance(t.id, LineId)}
    out = [None if isinstance(e.id, LineId) else by_id.get(e.id) for e in english]
    pairs = [(e, t) for e, t in zip(english, out) if t is not None]
    if data in INTENT_SLOT and pairs:
        share = sum(e.intent == t.intent for e, t in pairs) / len(pairs)
        tgt = split_file(data, data_dir, lang, "train")
        if share < 0.5 and len(pairs) >= 20:
            raise DataError(f"{split_file(data, data_dir, train_lang, 'train')}, {tgt}: "
                            f"paired by id, the intent agrees on only {share:.1%} of {len(pairs)} "
                            "pairs: the same ids do not name translations of the same utterance "
                            f"here (give line-aligned translations in {mt} instead)")
        DATA_NOTES.append(f"{data}/{lang}: paired {len(pairs)} of {len(english)} English "
                          "training examples by id "
                          f"with {tgt}; the intent agrees on {share:.1%} of the pairs")
    return [None if t is None else (t.a, t.b) if data in PAIR_TASKS else " ".join(t.words)
            for t in out]


def _check_target(lang, train_lang):
    """Alignment pairs training examples with their translations: the target is another language."""
    if lang.split("-")[0].lower() == train_lang.split("-")[0].lower():
        raise DataError(f"--lang {lang}: alignment needs a target language other than the training "
                        f"language ({train_lang}); name another language, or run without alignment")


def _need_translations(mt, data, d):
    """A translate-train file is this project's convention, not in a release: say what it is."""
    if not mt.is_file():
        raise DataError(f"{mt}: file not found: alignment reads line-aligned translations of the "
                        f"English train set ({_train_file(data, d)}) from it, one per line (not "
                        f"part of the {data} release: make it with a translation system)")
    return mt


def _drop_skipped(mt, rows, train):
    """The lines of a translate-train file without those of the English rows that read_matis
    skipped (token and label counts differ): line i translates data row i of `train`."""
    kept = [len(cols[1].split()) == len(cols[2].split()) for _, cols in _matis_rows(train)]
    if len(rows) != len(kept) or all(kept):
        return rows
    where = [(r[0], n) for r, (n, _), k in zip(rows, _matis_rows(train), kept) if not k]
    pairs = ", ".join(f"line {a} = line {b} of {train}" for a, b in where[:10])
    DATA_NOTES.append(f"{mt}: {len(where)} lines dropped, translations of English rows skipped "
                      f"above ({pairs}"
                      f"{' ...' if len(where) > 10 else ''})")
    return [r for r, k in zip(rows, kept) if k]


def _train_file(data, d):
    return {"mtod": d / "en" / "train-en.conllu", "matis": d / "train_EN.tsv"}.get(data, d)


# ---------------------------------------------------------------------------- STS and parallel text


@dataclass
class StsPair:
    a: str
    b: str
    score: float  # gold similarity, 0-5
    # what must agree between row-parallel files: (genre, file, year, id, score) or (score,)
    key: tuple
    where: str  # file:line


STS_LAYOUT = ("<data_dir>/stsbenchmark/sts-{train,dev,test}.csv (STS-B, en), "
              "<data_dir>/korsts/sts-{train,dev,test}.tsv (KorSTS, ko), "
              "<data_dir>/stsb-multi-mt/stsb-<lang>-{train,dev,test}.csv (any other language), "
              "<data_dir>/semeval2017/**/STS.{input,gs}.<track>.*.txt "
              "(--lang sem17-<track>, test only)")
PUBLISHED["sts"] = ("STS-B: https://ixa2.si.ehu.eus/stswiki, "
                    "KorSTS: github.com/kakaobrain/KorNLUDatasets, "
                    "stsb-multi-mt: github.com/PhilipMay/stsb-multi-mt, "
                    "SemEval-2017: https://alt.qcri.org/semeval2017/task1/",
                    STS_LAYOUT)


def _score(text, where):
    try:
        score = float(text)
    except ValueError:
        raise DataError(f"{where}: similarity score {text!r} is not a number") from None
    if not 0.0 <= score <= 5.0:
        raise DataError(f"{where}: similarity score {score} is outside 0-5")
    return score


def read_sts(path):
    """One STS file in its official layout, by name: STS-B `sts-*.csv` (tab-separated despite the
    name: genre, file, year, id, score, sentence1, sentence2; some rows carry extra trailing
    columns), KorSTS `sts-*.tsv` (the same columns under a header line), stsb-multi-mt
    `stsb-<lang>-*.csv` (comma-separated sentence1,sentence2,score with csv quoting)."""
    import csv
    path, out = Path(path), []
    if path.name.startswith("stsb-"):
        try:
            with _open_text(path, newline="") as f:
                rows = list(enumerate(csv.reader(f), 1))
        except UnicodeDecodeError:
            raise _utf8_error(path) from None
        for n, row in rows:
            # a blank line: skipped, as by every loader
            if not row or len(row) == 1 and not row[0].strip():
                continue
            if len(row) != 3:
                raise DataError(f"{path}:{n}: expected 3 comma-separated fields "
                                f"sentence1,sentence2,score, found {len(row)}")
            out.append(StsPair(row[0], row[1], _score(row[2], f"{path}:{n}"),
                               (round(float(row[2]), 3),), f"{path}:{n}"))
        return out
    for n, line in _lines(path):
        cols = line.split("\t")
        if n == 1 and path.suffix == ".tsv" \
                and cols[:5] == ["genre", "filename", "year", "id", "score"]:
            continue  # KorSTS header
        if not line.strip():
            continue
        if len(cols) < 7:
            raise DataError(f"{path}:{n}: expected 7 tab-separated columns (genre, file, year, "
                            f"id, score, sentence1, sentence2), found {len(cols)}")
        score = _score(cols[4], f"{path}:{n}")
        out.append(StsPair(cols[5], cols[6], score, (*cols[:4], round(score, 3)), f"{path}:{n}"))
    return out


def read_semeval_sts(input_path, gs_path):
    """SemEval STS test files: `STS.input.<track>.txt` (sentence1<TAB>sentence2 per line) and
    `STS.gs.<track>.txt` (one gold score per line, line-aligned). Pairs with an empty gold line
    are not scored by the official evaluation; they are skipped and counted in DATA_NOTES."""
    pairs, gold = list(_lines(input_path)), list(_lines(gs_path))
    if len(pairs) != len(gold):
        raise DataError(f"{gs_path}: {len(gold)} lines, but {input_path} has {len(pairs)}; "
                        "they must be line-aligned")
    out, unscored = [], 0
    for (n, line), (_, g) in zip(pairs, gold):
        cols = line.split("\t")
        if len(cols) < 2:
            raise DataError(f"{input_path}:{n}: expected sentence1<TAB>sentence2")
        if not g.strip():
            unscored += 1
            continue
        out.append(StsPair(cols[0], cols[1], _score(g.strip(), f"{gs_path}:{n}"), (n,),
                           f"{input_path}:{n}"))
    if unscored:
        DATA_NOTES.append(f"{input_path}: {unscored} pairs without a gold score skipped "
                          "(as the official evaluation)")
    return out


def sts_file(data_dir, lang, split):
    d = Path(data_dir)
    if lang == "en":
        return _need(d / "stsbenchmark" / f"sts-{split}.csv", "sts")
    if lang == "ko":
        return _need(d / "korsts" / f"sts-{split}.tsv", "sts")
    return _need(d / "stsb-multi-mt" / f"stsb-{lang}-{split}.csv", "sts")


def demo_sts(data_dir, lang, split):
    """STS pairs made from the embedded demo's parallel utterances, for `sentence_mapping.py --data
    demo`: the split's utterances ordered by (intent, id), each paired with the next one (mostly the
    same intent) and with the one half the list away (mostly another intent); gold similarity 5 for
    the same intent and the same slot types, 3 for the same intent, 0 otherwise. The demo's files
    are translations of each other with equal ids, so every language gets the same pairs in the same
    order (row-parallel, as STS-B and its translations)."""
    xs = sorted(load_split("demo", data_dir, lang, split), key=lambda e: (e.intent, e.id))
    n, out = len(xs), []
    for i, a in enumerate(xs):
        for b in (xs[(i + 1) % n], xs[(i + n // 2) % n]):
            same_slots = {strip_bio(t) for t in a.slots} == {strip_bio(t) for t in b.slots}
            score = 0.0 if a.intent != b.intent else 5.0 if same_slots else 3.0
            out.append(StsPair(" ".join(a.words), " ".join(b.words), score, (a.id, b.id, score),
                               f"{massive_file(data_dir, lang, 'demo')}: ids {a.id}, {b.id}"))
    return out


def load_sts(data_dir, lang, split, data="sts"):
    """STS pairs of one language and split; `sem17-<track>` (e.g. sem17-track3) reads SemEval-2017's
    test files found anywhere under <data_dir>/semeval2017; data='demo' makes them from the demo."""
    if data == "demo":
        return demo_sts(data_dir, lang, split)
    if lang.startswith("sem17-"):
        track, root = lang[len("sem17-"):], Path(data_dir) / "semeval2017"
        if split != "test":
            raise DataError(f"{root}: SemEval-2017 has test files only (asked for {split})")
        inputs = sorted(root.glob(f"**/STS.input.{track}.*txt"))
        golds = sorted(root.glob(f"**/STS.gs.{track}.*txt"))
        if len(inputs) != 1 or len(golds) != 1:
            raise DataError(f"{root}: expected one STS.input.{track}.*.txt "
                            f"and one STS.gs.{track}.*.txt, "
                            f"found {len(inputs)} and {len(golds)}. Layout: {STS_LAYOUT}")
        return read_semeval_sts(inputs[0], golds[0])
    f = sts_file(data_dir, lang, split)
    out = read_sts(f)
    if not out:
        raise DataError(f"{f}: no sentence pairs (the file is empty or holds only a header)")
    return out


def check_parallel(src, tgt):
    """Row-parallel STS files (STS-B and a translation of it) must agree row by row on what a
    translation keeps: the ids and score (KorSTS) or the score (stsb-multi-mt)."""
    if len(src) != len(tgt):
        raise DataError(f"{tgt[0].where.rsplit(':', 1)[0] if tgt else '?'}: {len(tgt)} rows, but "
                        f"{src[0].where.rsplit(':', 1)[0] if src else '?'} has {len(src)}; "
                        "they must be row-parallel")
    for s, t in zip(src, tgt):
        k = min(len(s.key), len(t.key))
        if s.key[-k:] != t.key[-k:]:
            raise DataError(f"{t.where}: not parallel with {s.where} ({t.key} vs {s.key}): "
                            "the files are not row-aligned translations of each other")


def load_sts_sets(data, data_dir, langs, train_lang="en", limit_train=0, max_eval=0):
    """(train pairs, {lang: {split: pairs}} for English and every target (sem17-<track>: test
    only), {target: {"train"|"test": (English set, its row-parallel translation)}}). limit_train: a
    fixed random subset, the same for every seed; max_eval: a fixed subset of each dev and test set
    (of parallel sets: the same rows of both)."""
    DATA_NOTES.clear()  # notes belong to one run
    train = load_sts(data_dir, train_lang, "train", data)
    if limit_train and limit_train < len(train):
        train = [train[i] for i in sorted(np.random.default_rng(0).permutation(len(train))
                                          [:limit_train])]
    evals = {x: {s: eval_subset(load_sts(data_dir, x, s, data), max_eval)
                 for s in (["test"] if x.startswith("sem17-") else ["dev", "test"])}
             for x in ["en", *langs]}
    parallel = {x: {} for x in langs if not x.startswith("sem17-")}
    for x, s in ((x, s) for x in parallel for s in ("train", "test")):
        en, tgt = load_sts(data_dir, "en", s, data), load_sts(data_dir, x, s, data)
        check_parallel(en, tgt)  # row by row: ids and scores agree
        n = max_eval if s == "test" else 0
        parallel[x][s] = (eval_subset(en, n), eval_subset(tgt, n))
    return train, evals, parallel


def sentence_pairs(en, tgt):
    """Unique (English, target) sentence pairs of two row-parallel STS sets, both columns (a
    repeated sentence would make retrieval ambiguous)."""
    seen, out = set(), []  # a set for membership only: the order is the rows'
    for e, t in zip(en, tgt):
        for pair in ((e.a, t.a), (e.b, t.b)):
            if pair[0] not in seen and pair[1] not in seen:
                seen.update(pair)
                out.append(pair)
    return out


def cross_lingual_pairs(en, tgt):
    """Cross-lingual STS pairs of two row-parallel sets: each English row's sentence1, its
    translated row's sentence2, the English score."""
    return [StsPair(e.a, t.b, e.score, (), e.where) for e, t in zip(en, tgt)]


def sts_batches(tok, pairs, arch, max_len, batch_size, shuffle=False, seed=0, shard=None):
    """(indices, a, b, score) batches of STS pairs, shuffled (numpy, `seed`) or, for evaluation,
    sorted by length. arch "bi": a and b tokenized on their own; "cross": a is b, the joint
    `<s> A </s></s> B </s>`. shard=(rank, world): every world-th pair of the order, as
    DistributedSampler (equal shares, padded), so a step of batch_size/world each covers one
    global batch."""
    order = np.random.default_rng(seed).permutation(len(pairs)) if shuffle else \
        np.argsort([len(p.a) + len(p.b) for p in pairs], kind="stable")
    if shard:
        order = order[list(torch.utils.data.DistributedSampler(
            range(len(order)), num_replicas=shard[1], rank=shard[0], shuffle=False))]
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        A, B = [pairs[i].a for i in idx], [pairs[i].b for i in idx]
        score = torch.tensor([pairs[i].score for i in idx])
        if arch == "cross":
            joint = tok(A, B, truncation="longest_first", max_length=max_len, padding=True,
                        return_tensors="pt")
            yield idx, joint, joint, score
        else:
            yield idx, *(tok(x, truncation=True, max_length=max_len, padding=True,
                             return_tensors="pt") for x in (A, B)), score


def correlations(pred, gold):
    """Spearman and Pearson (percent) of predicted against gold similarity scores, and n."""
    return {"spearman": spearman(pred, gold), "pearson": pearson(pred, gold), "n": len(gold)}


def mean_pool(h_tok, attention_mask):
    """Sentence embedding: the mean of the states of real tokens, (B, T, d), (B, T) -> (B, d)."""
    m = attention_mask.unsqueeze(-1).to(h_tok.dtype)
    return (h_tok * m).sum(1) / m.sum(1).clamp(min=1)


class CrossEncoder(nn.Module):
    """STS head on `<s> A </s></s> B </s>` -> one score: RobertaClassificationHead with one output
    (dropout, dense, tanh, dropout, linear) on the <s> state, what the GLUE code fine-tunes for
    STS-B. forward(a, b): a is b, the joint input (sts_batches); returns (B,) scores."""

    def __init__(self, encoder):
        super().__init__()
        h = encoder.config.hidden_size
        self.encoder = encoder
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None  # unused (a head on <s>); DDP would wait for its gradients
        self.head = nn.Sequential(nn.Dropout(0.1), nn.Linear(h, h), nn.Tanh(), nn.Dropout(0.1),
                                  nn.Linear(h, 1))
        self.train()

    def forward(self, a, b):
        h = self.encoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
        return self.head(h.last_hidden_state[:, 0]).squeeze(-1).float()


class BiEncoder(nn.Module):
    """Sentence-BERT: both sentences through the same encoder, mean pooling, cosine similarity.
    forward(a, b): each sentence's input_ids and attention_mask (B, T); returns (B,) cosines."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None  # unused (mean pooling); DDP would wait for its gradients
        self.train()

    def forward(self, a, b):
        e = [mean_pool(self.encoder(input_ids=x["input_ids"], attention_mask=x["attention_mask"])
                       .last_hidden_state, x["attention_mask"]) for x in (a, b)]
        return F.cosine_similarity(e[0].float(), e[1].float(), dim=-1)


@torch.no_grad()
def embed(encoder, tok, texts, max_len, device, autocast, batch_size=128):
    """Mean-pooled sentence embeddings (n, d), float32 on the CPU: the texts in batches of similar
    length through the encoder in eval mode."""
    was_training = encoder.training
    encoder.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # stable: ties in text order
    out = torch.empty(len(texts), encoder.config.hidden_size)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        b = tok([texts[i] for i in idx], truncation=True, max_length=max_len, padding=True,
                return_tensors="pt").to(device)
        with autocast:
            h = encoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
        out[idx] = mean_pool(h.last_hidden_state.float(), b["attention_mask"]).cpu()
    encoder.train(was_training)
    return out


def cached_embedder(encoder, tok, max_len, device, autocast):
    """texts -> embeddings as `embed`, each distinct sentence embedded once (a fixed encoder)."""
    cache = {}

    def emb(texts):
        new = list(dict.fromkeys(t for t in texts if t not in cache))  # first-seen order
        if new:
            cache.update(zip(new, embed(encoder, tok, new, max_len, device, autocast)))
        return torch.stack([cache[t] for t in texts])
    return emb


@torch.no_grad()
def sts_evaluate(model, tok, pairs, arch, max_len, device, autocast, emb=None):
    """correlations() of model(a, b)'s scores on STS pairs (batches as sts_batches, eval mode);
    with `emb` (texts -> embeddings of a fixed bi-encoder) the same cosines from embeddings."""
    if emb is not None:
        pred = F.cosine_similarity(emb([p.a for p in pairs]), emb([p.b for p in pairs]), dim=-1)
        return correlations(pred.numpy(), [p.score for p in pairs])
    was_training = model.training
    model.eval()
    pred = np.empty(len(pairs))
    for idx, a, b, _ in sts_batches(tok, pairs, arch, max_len, 64):
        with autocast:
            pred[idx] = model(a.to(device), b.to(device)).float().cpu().numpy()
    model.train(was_training)
    return correlations(pred, [p.score for p in pairs])


def read_parallel(paths):
    """Parallel sentences [(source, target)]: two line-aligned text files (the OPUS/Moses layout,
    e.g. train.en / train.de) or one tab-separated file of pairs."""
    if len(paths) > 2:
        raise DataError(f"{','.join(paths)}: {len(paths)} files; give two line-aligned files "
                        "(english,other) or one tab-separated file of pairs")
    if len(paths) == 2 and Path(paths[0]).resolve() == Path(paths[1]).resolve():
        raise DataError(f"{paths[0]}: named twice; the second file holds the translations")
    if len(paths) == 2:
        a, b = ([line for _, line in _lines(_need_file(p))] for p in paths)
        if len(a) != len(b):
            raise DataError(f"{paths[1]}: {len(b)} lines, but {paths[0]} has {len(a)}; "
                            "they must be line-aligned")
        pairs = list(zip(a, b))
        where = [(f"{paths[0]}:{n}", f"{paths[1]}:{n}") for n in range(1, len(a) + 1)]
    else:
        pairs, where = [], []
        for n, line in _lines(_need_file(paths[0])):
            cols = line.split("\t")
            if len(cols) != 2:
                raise DataError(f"{paths[0]}:{n}: expected source<TAB>target, "
                                f"found {len(cols)} columns")
            pairs.append(tuple(cols))
            where.append((f"{paths[0]}:{n}",) * 2)
    for (x, y), w in zip(pairs, where):
        if not x.strip() or not y.strip():
            raise DataError(f"{w[0] if not x.strip() else w[1]}: empty sentence in a parallel pair")
    return pairs


def _need_file(path):
    if not Path(path).is_file():
        raise DataError(f"{path}: file not found")
    return path


def load_parallel_specs(specs, dev_halves=False):
    """[(english, other)] from every --parallel spec of ppa_moco_tlm.py, with a count per spec:
    SRC,TGT (two line-aligned files), PAIRS.tsv, or <data>:<data_dir>:<langs> (a dataset's English
    train with its translations). A sentence-pair dataset (pawsx, xnli) gives both sides of each
    pair; with `dev_halves`, those of --dev_halves's training half (rows no run evaluates)."""
    pairs, counts = [], {}
    for spec in specs:
        data, folder, langs = spec.split(":") if spec.count(":") == 2 else (None, None, None)
        if data in PAIR_TASKS:
            _, english, trans, _ = load_task(data, folder, langs, align=True,
                                             dev_halves=dev_halves)
            for lang, tr in trans.items():
                counts[f"{data}/{lang}"] = len(got := [(s, t) for e, both in zip(english, tr)
                                                       if both for s, t in zip((e.a, e.b), both)])
                pairs += got
        elif data in INTENT_SLOT:
            english = load_split(data, folder, "en", "train")
            for lang in resolve_langs(langs, data, folder):  # de,es or all
                tr = load_translations(data, folder, lang, english)
                counts[f"{data}/{lang}"] = len(got := [(" ".join(e.words), t)
                                                       for e, t in zip(english, tr) if t])
                pairs += got
        else:
            counts[spec] = len(got := read_parallel(spec.split(",")))
            pairs += got
    return pairs, counts


# ----------------------------------------------------------------- extractive QA (SQuAD v1.1, MLQA)


@dataclass
class QAExample:
    id: str
    question: str
    context: str
    answers: list  # [(text, character start in context)]


QA_LAYOUT = ("<data_dir>/train-v1.1.json (SQuAD v1.1 train, English), "
             "<data_dir>/dev-v1.1.json (SQuAD dev), "
             "<data_dir>/MLQA_V1/{dev,test}/{dev,test}-context-<lang>-question-<lang>.json (MLQA)")
PUBLISHED["squad"] = ("https://rajpurkar.github.io/SQuAD-explorer/dataset/train-v1.1.json "
                      "(and dev-v1.1.json)", QA_LAYOUT)
PUBLISHED["mlqa"] = ("https://dl.fbaipublicfiles.com/MLQA/MLQA_V1.zip "
                     "(+ SQuAD v1.1 train for English)", QA_LAYOUT)


def read_squad(path):
    """SQuAD-format JSON (SQuAD v1.1, MLQA): {"data": [{"paragraphs": [{"context", "qas": [{"id",
    "question", "answers": [{"text", "answer_start"}]}]}]}]}. An answer whose text is not found at
    its answer_start cannot be a training span: it is dropped and counted in DATA_NOTES."""
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    out, bad = [], 0
    for i, article in enumerate(data.get("data", []) if isinstance(data, dict) else []):
        for j, para in enumerate(article.get("paragraphs", [])):
            for k, qa in enumerate(para.get("qas", [])):
                where = f"{path}: data[{i}].paragraphs[{j}].qas[{k}]"
                try:
                    context, answers = para["context"], []
                    for a in qa["answers"]:
                        if context[a["answer_start"]:a["answer_start"] + len(a["text"])] \
                                == a["text"]:
                            answers.append((a["text"], a["answer_start"]))
                        else:
                            bad += 1
                    out.append(QAExample(str(qa["id"]), qa["question"], context, answers))
                except (KeyError, TypeError) as e:
                    raise DataError(f"{where}: missing or malformed field {e}") from None
    if not out:
        raise DataError(f"{path}: no questions found; "
                        f"expected the SQuAD format {{\"data\": [{{\"paragraphs\": ...}}]}}")
    if bad:
        DATA_NOTES.append(f"{path}: {bad} answers not found at their answer_start (dropped)")
    return out


def load_qa(data_dir, lang, split):
    """English train: SQuAD v1.1 train; dev/test: MLQA's
    `<split>-context-<lang>-question-<lang>.json` (SQuAD's dev-v1.1.json stands in for English
    when MLQA is absent)."""
    d = Path(data_dir)
    if split == "train":
        if lang != "en":
            raise DataError(f"{d}: QA trains on English SQuAD only (--train_lang {lang})")
        return read_squad(_need(d / "train-v1.1.json", "mlqa"))
    mlqa = d / "MLQA_V1" / split / f"{split}-context-{lang}-question-{lang}.json"
    if lang == "en" and not mlqa.is_file() and (d / "dev-v1.1.json").is_file():
        return read_squad(d / "dev-v1.1.json")
    return read_squad(_need(mlqa, "mlqa"))


def load_qa_task(data_dir, lang, train_lang="en", limit_train=0, max_eval=0):
    """load_task for QA: (target languages, SQuAD train examples (limit_train: a fixed random
    subset), {lang: {"dev"|"test": examples}} for English and each target (max_eval: a fixed
    subset of each), every question and context for the tiny model's tokenizer)."""
    langs = [x for x in lang.split(",") if x and x != "en"]
    train = eval_subset(load_qa(data_dir, train_lang, "train"), limit_train)  # the same rule
    evals = {x: {s: eval_subset(load_qa(data_dir, x, s), max_eval) for s in ("dev", "test")}
             for x in ["en", *langs]}
    return langs, train, evals, [t for ex in train for t in (ex.question, ex.context)]


def qa_items(tok, train, evals, max_len):
    """(training windows: each window that holds its answer, and every window of a question without
    one; {lang: {split: (examples, windows)}}), windows as `qa_features` makes them."""
    feats = [f for f in qa_features(tok, train, max_len)
             if f["start"] or train[f["example"]].answers]
    return feats, {x: {s: (exs, qa_features(tok, exs, max_len)) for s, exs in d.items()}
                   for x, d in evals.items()}


def qa_batch(feats, pad_id):
    """Windows -> (input_ids (B, T) padded with pad_id, gold (B, 2): answer start and end)."""
    T = max(len(f["input_ids"]) for f in feats)
    ids = torch.tensor([f["input_ids"] + [pad_id] * (T - len(f["input_ids"])) for f in feats])
    return ids, torch.tensor([[f["start"], f["end"]] for f in feats])


_QA_PUNCT = None
_QA_ARTICLES = {"en": r"\b(a|an|the)\b", "es": r"\b(un|una|unos|unas|el|la|los|las)\b",
                "de": r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b",
                "vi": r"\b(của|là|cái|chiếc|những)\b", "ar": r"\sال^|ال"}


def qa_normalize(text, lang="en"):
    """Answer normalisation of the official MLQA evaluation (SQuAD's, per language): lower case,
    drop Unicode punctuation, drop the language's articles (en, es, de, vi, ar; none for hi, zh),
    split on whitespace, or for zh also around every CJK character and punctuation mark."""
    global _QA_PUNCT
    if _QA_PUNCT is None:
        import string
        import sys
        import unicodedata
        _QA_PUNCT = {chr(i) for i in range(sys.maxunicode + 1)
                     if unicodedata.category(chr(i)).startswith("P")}
        _QA_PUNCT |= set(string.punctuation)
    text = "".join(ch for ch in text.lower() if ch not in _QA_PUNCT)
    if lang in _QA_ARTICLES:
        text = re.sub(_QA_ARTICLES[lang], " ", text)
    if lang == "zh":
        text = re.sub(r"([\u4e00-\u9fa5])", r" \1 ", text)
    return " ".join(text.split())


def qa_scores(prediction, answers, lang="en"):
    """(F1, exact match) in percent of one prediction against its gold answer texts: the maximum
    over the answers of token-level F1 and of exact match after `qa_normalize`."""
    from collections import Counter
    pred = qa_normalize(prediction, lang).split()
    best_f1 = best_em = 0.0
    for gold in answers:
        g = qa_normalize(gold, lang).split()
        best_em = max(best_em, float(pred == g))
        common_ = sum((Counter(pred) & Counter(g)).values())
        if common_:
            p, r = common_ / len(pred), common_ / len(g)
            best_f1 = max(best_f1, 2 * p * r / (p + r))
    return 100.0 * best_f1, 100.0 * best_em


def qa_features(tok, examples, max_len, stride=128):
    """Question-context windows (`<s> question </s></s> context window </s>`), several per long
    context, overlapping by `stride` tokens. Each feature: input_ids, example (index), offsets
    (character span of each context token, None elsewhere), start/end (token positions of the
    first answer, 0 = <s> when the window does not contain it, as SQuAD training does)."""
    feats = []
    for n, ex in enumerate(examples):
        room = max_len - len(tok(ex.question, add_special_tokens=False)["input_ids"]) \
            - tok.num_special_tokens_to_add(pair=True)
        if room < 8:
            raise DataError(f"question {ex.id}: too long for --max_len {max_len} "
                            f"(leaves {room} subwords of context)")
        enc = tok(ex.question, ex.context, truncation="only_second", max_length=max_len,
                  stride=min(stride, room // 2), return_overflowing_tokens=True,
                  return_offsets_mapping=True)
        for w in range(len(enc["input_ids"])):
            seq = enc.sequence_ids(w)
            offsets = [tuple(o) if sid == 1 else None
                       for o, sid in zip(enc["offset_mapping"][w], seq)]
            start = end = 0
            if ex.answers:
                a_s = ex.answers[0][1]
                a_e = a_s + len(ex.answers[0][0])
                inside = [i for i, o in enumerate(offsets)
                          if o is not None and o[0] < a_e and o[1] > a_s]
                ctx = [i for i, o in enumerate(offsets) if o is not None]
                if inside and offsets[ctx[0]][0] <= a_s and offsets[ctx[-1]][1] >= a_e:
                    start, end = inside[0], inside[-1]
            feats.append({"input_ids": enc["input_ids"][w], "example": n, "offsets": offsets,
                          "start": start, "end": end})
    return feats


def best_span(start_logits, end_logits, offsets, max_answer_len=30, top=20):
    """(score, char_start, char_end) of the best context span: start <= end, at most max_answer_len
    tokens, both ends on context tokens; score = start logit + end logit. None if no valid span."""
    best = None
    cand_s = sorted(range(len(offsets)), key=lambda i: -start_logits[i])[:top]
    cand_e = sorted(range(len(offsets)), key=lambda i: -end_logits[i])[:top]
    for i in cand_s:
        for j in cand_e:
            if offsets[i] is None or offsets[j] is None or j < i or j - i + 1 > max_answer_len:
                continue
            score = start_logits[i] + end_logits[j]
            if best is None or score > best[0]:
                best = (score, offsets[i][0], offsets[j][1])
    return best


class QAModel(nn.Module):
    """An encoder with a start/end head (one linear layer to 2 logits per token), as BERT's SQuAD
    model."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        self.qa_head = nn.Linear(encoder.config.hidden_size, 2)
        self.train()

    def forward(self, input_ids, attention_mask):
        """Returns (start logits (B, T), end logits (B, T)), padding positions at -inf."""
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = self.qa_head(h).float().masked_fill(~attention_mask.bool().unsqueeze(-1),
                                                     float("-inf"))
        return logits[..., 0], logits[..., 1]


@torch.no_grad()
def qa_evaluate(model, examples, feats, lang, pad_id, device, autocast, batch_size=64):
    """F1 and exact match (percent, MLQA's per-language normalisation), best span over the
    windows."""
    was_training = model.training
    model.eval()
    best = {}
    for s in range(0, len(feats), batch_size):
        chunk = feats[s:s + batch_size]
        ids = qa_batch(chunk, pad_id)[0].to(device)
        T = ids.shape[1]
        with autocast:
            st, en = model(ids, (ids != pad_id).long())
        for f, a, b in zip(chunk, st.tolist(), en.tolist()):
            span = best_span(a, b, f["offsets"] + [None] * (T - len(f["offsets"])))
            if span and (f["example"] not in best or span[0] > best[f["example"]][0]):
                best[f["example"]] = span
    model.train(was_training)
    f1 = em = 0.0
    for n, ex in enumerate(examples):
        pred = ex.context[best[n][1]:best[n][2]] if n in best else ""
        a, b = qa_scores(pred, [t for t, _ in ex.answers] or [""], lang)
        f1, em = f1 + a, em + b
    return {"f1": f1 / max(len(examples), 1), "exact_match": em / max(len(examples), 1),
            "n": len(examples)}


# ----------------------------------------------------------------------------- labels and batches


def strip_bio(tag):
    """B-x / I-x -> x; O stays O (the official code trains on these IO labels)."""
    return tag[2:] if tag[:2] in ("B-", "I-") else tag


def io_to_bio(tags):
    """Restore BIO from IO: a type after O or after a different type begins a span (B-), the same
    type continues it (I-). As in the official evaluation, applied to gold and predictions alike,
    so adjacent spans of one type merge into one."""
    out, prev = [], "O"
    for t in tags:
        t = strip_bio(t)
        out.append("O" if t == "O" else ("I-" if t == prev else "B-") + t)
        prev = t
    return out


@dataclass
class Labels:
    intents: list
    slots: list  # slot tags as trained: IO types (or BIO tags with tagging='bio'); 'O' first
    tagging: str = "io"

    @classmethod
    def from_train(cls, data, train, tagging="io"):
        if data in PAIR_TASKS:
            return cls(list(PAIR_LABELS[data]), [], tagging)
        conv = strip_bio if tagging == "io" else (lambda t: t)
        slots = sorted({conv(t) for e in train for t in e.slots} - {"O"})
        return cls(sorted({e.intent for e in train}), ["O"] + slots, tagging)

    def tag(self, t):
        return strip_bio(t) if self.tagging == "io" else t


def encode(tok, ex, labels, max_len, where=""):
    """Tokenize one example. Intent/slot: words are tokenized as pre-split words and only the first
    subword of each word carries its slot label (-100 elsewhere); `starts` lists those positions.
    A word split into a lone '▁' piece and the rest (XLM-R does this to most Thai words: '▁',
    'ตั้ง') is labelled on its second piece, since the lone '▁' is the same token for
    every word. Pair: `<s> a </s></s> b </s>`. Unknown labels (only possible in eval sets) get
    -1 / -100. Inputs longer than max_len are cut (counted in DATA_NOTES); words past the cut get
    no position, and evaluation predicts O for them."""
    if isinstance(ex, Pair):
        enc = tok(ex.a, ex.b)
        if len(enc["input_ids"]) > max_len:
            _count_cut(where)
            enc = tok(ex.a, ex.b, truncation="longest_first", max_length=max_len)
        item = {"input_ids": enc["input_ids"], "intent": _index(labels.intents, ex.label)}
        if "token_type_ids" in enc:  # BERT-style tokenizers: segment 0 for a, 1 for b
            item["token_type_ids"] = enc["token_type_ids"]
        return item
    enc = tok(ex.words, is_split_into_words=True)
    ids, wids = enc["input_ids"], enc.word_ids()
    if len(ids) > max_len:
        _count_cut(where)
        ids, wids = ids[:max_len - 1] + ids[-1:], wids[:max_len - 1] + wids[-1:]
    bare = tok.convert_tokens_to_ids("▁")  # the lone word-boundary piece: no word content
    bare = None if bare == tok.unk_token_id else bare
    slot_ids, starts, prev = [-100] * len(ids), [], None
    for pos, w in enumerate(wids):
        if w is not None and w != prev:
            if ids[pos] == bare and pos + 1 < len(wids) and wids[pos + 1] == w:
                pos += 1
            starts.append(pos)
            slot_ids[pos] = _index(labels.slots, labels.tag(ex.slots[w]), -100)
        prev = w
    return {"input_ids": ids, "intent": _index(labels.intents, ex.intent), "slot_labels": slot_ids,
            "starts": starts}


CUT = {}  # where -> number of inputs cut at max_len


def _count_cut(where):
    CUT[where] = CUT.get(where, 0) + 1


def notes():
    """DATA_NOTES plus one line per data set in which inputs were cut at --max_len."""
    return DATA_NOTES + [f"{w}: {n} inputs longer than --max_len were cut" for w, n in CUT.items()]


def encode_text(tok, text, max_len, with_types=False):
    """A translation for alignment: the whole sentence (or sentence pair), truncated to max_len.
    Returns its input ids, or with_types (input ids, token type ids or None) where a BERT-style
    tokenizer gives a sentence pair segment ids."""
    enc = tok(*text, truncation="longest_first", max_length=max_len) if isinstance(text, tuple) \
        else tok(text, truncation=True, max_length=max_len)
    if with_types:
        return enc["input_ids"], enc["token_type_ids"] \
            if isinstance(text, tuple) and "token_type_ids" in enc else None
    return enc["input_ids"]


def _index(vocab, item, unknown=-1):
    try:
        return vocab.index(item)
    except ValueError:
        return unknown


def collate(items, pad_id):
    """Pad a list of encoded items to the longest sequence in the batch (English and, if present,
    one translation per item, chosen at random among its languages, padded to the same length)."""
    pick = [random.randrange(len(it["tgt"])) if it.get("tgt") else None for it in items] \
        if "tgt" in items[0] else None
    tgt = [it["tgt"][k] if k is not None else [] for it, k in zip(items, pick)] if pick else None
    T = max(len(it["input_ids"]) for it in items)
    if tgt is not None:
        T = max(T, max(map(len, tgt)))

    def pad(seqs, value):
        return torch.tensor([s + [value] * (T - len(s)) for s in seqs])

    ids = pad([it["input_ids"] for it in items], pad_id)
    batch = {"input_ids": ids, "attention_mask": (ids != pad_id).long(),
             "intent": torch.tensor([it["intent"] for it in items])}
    if "token_type_ids" in items[0]:  # BERT-style segment ids of sentence pairs
        batch["token_type_ids"] = pad([it["token_type_ids"] for it in items], 0)
    if "slot_labels" in items[0]:
        batch["slot_labels"] = pad([it["slot_labels"] for it in items], -100)
        batch["starts"] = [it["starts"] for it in items]
    if tgt is not None:
        batch["tgt_input_ids"] = pad(tgt, pad_id)
        batch["tgt_attention_mask"] = (batch["tgt_input_ids"] != pad_id).long()
        batch["has_tgt"] = torch.tensor([len(t) > 0 for t in tgt])
        if "tgt_types" in items[0]:
            batch["tgt_token_type_ids"] = pad([it["tgt_types"][k] if k is not None else []
                                               for it, k in zip(items, pick)], 0)
    return batch


def make_loader(items, batch_size, pad_id, generator=None, shard=None):
    """DataLoader over encoded items, shuffled by `generator` (the caller's seeded torch.Generator;
    None: in order). shard=(rank, world) under torchrun: each rank reads its own disjoint 1/world
    of the data (DistributedSampler, seeded with the generator's seed), reshuffled by
    `loader.sampler.set_epoch`."""
    shuffle, sampler = generator is not None, None
    if shard:
        sampler = torch.utils.data.distributed.DistributedSampler(
            items, num_replicas=shard[1], rank=shard[0], shuffle=shuffle,
            seed=generator.initial_seed() if shuffle else 0)
    # in order: a generator of its own all the same, or each pass would draw its base seed from
    # the global generator and shift the caller's random numbers
    return torch.utils.data.DataLoader(items, batch_size=batch_size, sampler=sampler,
                                       generator=generator or torch.Generator(),
                                       shuffle=shuffle and sampler is None, drop_last=False,
                                       collate_fn=lambda b: collate(b, pad_id))


def load_data(args, langs, align):
    """Raw data of one run: (train examples, {lang: translations of them} if align, and
    {lang: {split: examples}} for English and each target language)."""
    DATA_NOTES.clear()  # notes belong to one run
    CUT.clear()
    for lang in langs if align else ():
        _check_target(lang, args.train_lang)
    if getattr(args, "dev_halves", False):
        return dev_halves(args, langs, align)
    full = load_split(args.data, args.data_dir, args.train_lang, "train")
    # --limit_train: one fixed random subset, the same for every seed and method
    keep = range(len(full))
    if 0 < args.limit_train < len(full):
        keep = sorted(random.Random(0).sample(keep, args.limit_train))
    train = [full[i] for i in keep]
    found = {lang: load_translations(args.data, args.data_dir, lang, full, args.train_lang)
             for lang in langs} if align else {}
    trans = {lang: [t[i] for i in keep] for lang, t in found.items()}
    for lang, t in trans.items():
        if t.count(None) == len(t):
            in_full = len(found[lang]) - found[lang].count(None)
            raise DataError(_no_translations(args.data, args.data_dir, lang, len(t), in_full))
        if None in t:
            DATA_NOTES.append(f"{args.data}/{lang}: {t.count(None)} of {len(t)} English training "
                              "examples have no translation; they get no alignment loss")
    for lang, t in found.items():
        mt = Path(args.data_dir) / "translate-train" / f"{lang}.txt"  # .tsv: pairs
        mt = mt.with_suffix(".tsv") if args.data in PAIR_TASKS else mt
        _not_english(mt if mt.is_file() else f"{args.data}/{lang} translations", lang,
                     [(_text(e), x) for e, x in zip(full, t) if x is not None])
    evals = {lang: {s: load_split(args.data, args.data_dir, lang, s) for s in ("dev", "test")}
             for lang in dict.fromkeys(["en", *langs])}
    for lang in langs if args.data in PAIR_TASKS else ():  # row-parallel in every language
        for s, xs in evals[lang].items():
            if lang != "en" and len(xs) == len(evals["en"][s]):
                _not_english(split_file(args.data, args.data_dir, lang, s), lang,
                             [(_text(e), _text(x)) for e, x in zip(evals["en"][s], xs)])
    return train, trans, evals


def _text(e):
    """An example's text as translations hold it: the words joined, or the pair's two sentences."""
    return " ".join(e.words) if isinstance(e, Example) else (e.a, e.b)


def _not_english(where, lang, pairs):
    """(English, `lang`) texts that are mostly identical are English given as `lang`: an error at
    half or more, a note from 5% (names and numbers are the same in any language: real
    translations repeat their English under 1%). Fewer than half holding `lang`'s letters
    (SCRIPTS) is a file of another language: an error."""
    def norm(x):  # spacing and case aside
        if isinstance(x, (tuple, list)):
            return tuple(map(norm, x))
        return " ".join(x.lower().split())
    same = sum(norm(a) == norm(b) for a, b in pairs)
    if pairs and same >= 0.5 * len(pairs):
        raise DataError(f"{where}: {same} of {len(pairs)} {lang} texts are identical to their "
                        "English source: English text given as the translation?")
    if pairs and same >= 0.05 * len(pairs):
        DATA_NOTES.append(f"{where}: {same} of {len(pairs)} {lang} texts are identical to their "
                          "English source")
    base = lang.split("-")[0].split("_")[0].lower()
    if base in SCRIPTS and pairs:  # a file of another language: Thai given as Spanish, say
        name, pattern = SCRIPTS[base]
        texts = [" ".join(b) if isinstance(b, (tuple, list)) else b for _, b in pairs]
        found = sum(bool(re.search(pattern, t)) for t in texts)
        if found < 0.5 * len(texts):
            raise DataError(f"{where}: only {found} of {len(texts)} {lang} texts hold {name} "
                            f"letters: a file of another language?")


# Each language's letters, to catch a file of another language given as `lang` (the Latin ones
# can only be told from non-Latin scripts: French given as German passes).
_LATIN = ("Latin", r"[A-Za-z\u00c0-\u024f]")
SCRIPTS = {**dict.fromkeys(("en", "de", "es", "fr", "pt", "it", "nl", "tr", "vi", "sw", "pl", "id"),
                           _LATIN),
           "th": ("Thai", r"[\u0e00-\u0e7f]"), "hi": ("Devanagari", r"[\u0900-\u097f]"),
           "zh": ("Han", r"[\u4e00-\u9fff]"), "ja": ("Japanese", r"[\u3040-\u30ff\u4e00-\u9fff]"),
           "ko": ("Hangul", r"[\uac00-\ud7af\u1100-\u11ff]"),
           "ru": ("Cyrillic", r"[\u0400-\u04ff]"), "bg": ("Cyrillic", r"[\u0400-\u04ff]"),
           "ar": ("Arabic", r"[\u0600-\u06ff]"), "ur": ("Arabic", r"[\u0600-\u06ff]"),
           "el": ("Greek", r"[\u0370-\u03ff]")}


def _no_translations(data, data_dir, lang, n, in_full=0):
    """The message for alignment without a single translation: where they are looked for."""
    d = Path(data_dir)
    mt = d / "translate-train" / f"{lang}.{'tsv' if data in PAIR_TASKS else 'txt'}"
    if in_full:
        where = (f"the full training set has {in_full} (from {mt} or by id), but none is among "
                 "those --limit_train keeps")
    elif mt.is_file() or data == "mtod":
        where = f"{mt} has only blank lines"
    else:
        try:
            target = split_file(data, data_dir, lang, "train")
        except DataError:
            target = f"the {lang} train file"
        where = (f"found neither {mt} (line-aligned translations) nor training examples with the "
                 f"same ids in {target}")
    return (f"{d}: --lang {lang}: no translations of the {n} training examples for alignment: "
            f"{where}")


def dev_halves(args, langs, align):
    """--dev_halves, for pair tasks whose train sets are not at hand (PAWS-X, XNLI dev sets only):
    the dev rows, parallel across languages, are split once (seed 0) into a training half (the
    --train_lang rows, with the other languages' rows of the same pairs as translations) and two
    quarters used as dev and test in every language, so no evaluated pair was trained on in any
    language. Same layout as load_data's result."""
    if args.data not in PAIR_TASKS:
        raise DataError(f"--dev_halves splits the parallel dev sets of {PAIR_TASKS}, "
                        f"not {args.data}")
    rows = {lang: load_split(args.data, args.data_dir, lang, "dev")
            for lang in dict.fromkeys([args.train_lang, "en", *langs])}
    n = len(rows[args.train_lang])
    for lang, r in rows.items():
        if len(r) != n:
            raise DataError(f"{args.data_dir}: the {lang} dev set has {len(r)} pairs and the "
                            f"{args.train_lang} one {n}; "
                            "--dev_halves needs row-parallel dev sets")
    for lang in rows if args.train_lang == "en" else ():
        if lang != "en":
            _not_english(split_file(args.data, args.data_dir, lang, "dev"), lang,
                         [(_text(e), _text(x)) for e, x in zip(rows["en"], rows[lang])])
    if n < 4:  # the dev and test quarters would be empty
        raise DataError(f"{args.data_dir}: the {args.train_lang} dev set has {n} pairs; "
                        "--dev_halves needs at least 4")
    order = random.Random(0).sample(range(n), n)
    train_idx, dev_idx, test_idx = sorted(order[:n // 2]), sorted(order[n // 2:3 * n // 4]), \
        sorted(order[3 * n // 4:])
    if 0 < args.limit_train < len(train_idx):
        train_idx = sorted(random.Random(0).sample(train_idx, args.limit_train))
    train = [rows[args.train_lang][i] for i in train_idx]
    trans = {lang: [(rows[lang][i].a, rows[lang][i].b) for i in train_idx]
             for lang in langs} if align else {}
    evals = {lang: {"dev": [rows[lang][i] for i in dev_idx],
                    "test": [rows[lang][i] for i in test_idx]}
             for lang in dict.fromkeys(["en", *langs])}
    DATA_NOTES.append(f"{args.data}: --dev_halves: train on {len(train)} {args.train_lang} dev "
                      f"pairs, dev/test on {len(dev_idx)}/{len(test_idx)} other dev pairs per "
                      "language (split with seed 0)")
    return train, trans, evals


def texts_of(train, trans, evals):
    """Every sentence of a run (for training the tiny model's tokenizer)."""
    def text(e):
        return " ".join(e.words) if isinstance(e, Example) else e.a + " " + e.b
    out = [text(e) for e in train] \
        + [text(e) for d in evals.values() for xs in d.values() for e in xs]
    return out + [t if isinstance(t, str) else " ".join(t)
                  for ts in trans.values() for t in ts if t]


def train_items(tok, train, labels, trans, max_len, where):
    """Encoded training items; with translations, each item also carries the encodings of its
    translations ('tgt', one per language that has one), from which `collate` draws one."""
    items = [encode(tok, e, labels, max_len, where) for e in train]
    if trans:
        for i, it in enumerate(items):
            enc = [encode_text(tok, t[i], max_len, with_types=True) for t in trans.values() if t[i]]
            it["tgt"] = [ids for ids, _ in enc]
            if "token_type_ids" in it:  # sentence pairs with segment ids: their translations too
                it["tgt_types"] = [types for _, types in enc]
    return items


def train_groups(tok, train, labels, trans, max_len, where, code_switch=False):
    """Sentence-level training items in groups, one group per English example: the example, then
    each of its translations (with the English label), then with `code_switch` (pairs only) the
    mixed pairs (a_x, b_en) and (a_en, b_x) of a translated pair (a_x, b_x). No slot labels."""
    groups = []
    for i, ex in enumerate(train):
        group = [encode(tok, ex, labels, max_len, where)]
        for t in trans.values():
            if not t[i]:
                continue
            if isinstance(ex, Pair):
                variants = [t[i]] + ([(t[i][0], ex.b), (ex.a, t[i][1])] if code_switch else [])
                group += [encode(tok, Pair(ex.id, a, b, ex.label), labels, max_len, where)
                          for a, b in variants]
            else:  # an utterance: its translation with the English intent
                x = Example(ex.id, t[i].split(), ex.intent, ["O"] * len(t[i].split()))
                group.append(encode(tok, x, labels, max_len, where))
        for it in group:  # sentence-level training only: no slot labels
            it.pop("slot_labels", None)
            it.pop("starts", None)
        groups.append(group)
    return groups


def group_batches(groups, batch_size, rng):
    """Shuffle the groups (rng: a random.Random), keep each group's items together, and cut them
    into batches of about batch_size (a batch closes once it holds batch_size items or more)."""
    order = list(range(len(groups)))
    rng.shuffle(order)
    out, cur = [], []
    for g in order:
        cur += groups[g]
        if len(cur) >= batch_size:
            out.append(cur)
            cur = []
    return out + ([cur] if cur else [])


def encode_evals(tok, evals, labels, max_len, data=""):
    """{lang: {split: examples}} -> {lang: {split: (examples, encoded items)}}. Intents and slot
    types that the training set lacks (the model cannot predict them) are counted in DATA_NOTES."""
    for lang, d in evals.items():
        for s, xs in d.items():
            _count_unseen(f"{data}/{lang}/{s}", xs, labels)
    return {lang: {s: (xs, [encode(tok, e, labels, max_len, f"{data}/{lang}/{s}") for e in xs])
                   for s, xs in d.items()} for lang, d in evals.items()}


def load_task(data, data_dir, lang, train_lang="en", limit_train=0, align=False, dev_halves=False,
              max_eval=0):
    """The examples of one run, as its flags name them: (target languages, training examples,
    {lang: their translations} when `align`, {lang: {"dev"|"test": examples}} for English and each
    target). `lang` is `de`, `de,es` or `all`; `limit_train` keeps one fixed random subset (the same
    for every seed and method); `dev_halves` splits the row-parallel dev sets of PAWS-X/XNLI;
    `max_eval` keeps a fixed subset of each dev and test set (eval_subset). Bad input raises
    DataError naming the file and line; defects are counted in notes()."""
    import types
    langs = resolve_langs(lang, data, data_dir)
    flags = types.SimpleNamespace(data=data, data_dir=data_dir, train_lang=train_lang,
                                  limit_train=limit_train, dev_halves=dev_halves)
    train, trans, evals = load_data(flags, langs, align)
    evals = {x: {s: eval_subset(xs, max_eval) for s, xs in d.items()} for x, d in evals.items()}
    return langs, train, trans, evals


def eval_subset(examples, n):
    """--max_eval: a fixed random subset of n examples (seed 0, in file order: the same for every
    seed, method and language), for smoke runs; all of them when n is 0. Runs that use it record
    max_eval in their settings, and tools/make_table.py leaves them out of tables."""
    if not 0 < n < len(examples):
        return examples
    return [examples[i] for i in sorted(random.Random(0).sample(range(len(examples)), n))]


def _count_unseen(where, examples, labels):
    def names(xs):
        xs = sorted(set(xs))
        return f" ({', '.join(xs[:10])}{' ...' if len(xs) > 10 else ''})"
    exs = [e for e in examples if isinstance(e, Example)]
    intents = [e.intent for e in exs if e.intent not in labels.intents]
    words = sum(len(e.slots) for e in exs)
    slots = [labels.tag(t) for e in exs for t in e.slots if labels.tag(t) not in labels.slots]
    parts = []
    if intents:
        parts.append(f"{len(intents)} of {len(exs)} examples have an intent never seen in training"
                     + names(intents))
    if slots:
        parts.append(f"{len(slots)} of {words} words have a slot type never seen in training"
                     + names(map(strip_bio, slots)))
    if parts:
        DATA_NOTES.append(f"{where}: {'; '.join(parts)}")


# ----------------------------------------------------------------------------- model


class TaskModel(nn.Module):
    """A pretrained encoder with a sentence head (intents or pair classes) on the "CLS" vector and,
    for intent/slot data, a token head. Heads are single linear layers, as in the official code.

    cls='pooler' uses the encoder's pooler output tanh(W h_<s> + b), which is what the official
    XeroAlign/CrossAligner code calls CLS; cls='first' uses the raw first-token
    state, which is what the papers' text describes."""

    def __init__(self, encoder, n_classes, n_slots=0, cls="pooler"):
        super().__init__()
        if cls == "pooler" and getattr(encoder, "pooler", None) is None:
            raise ValueError("--cls pooler: this encoder has no pooler; use --cls first")
        if cls == "first" and getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None  # not computed when unused (an unused parameter also breaks DDP)
        self.encoder, self.cls = encoder, cls
        h = encoder.config.hidden_size
        self.intent_head = nn.Linear(h, n_classes)
        self.slot_head = nn.Linear(h, n_slots) if n_slots else None
        # from_pretrained returns the encoder in eval mode: dropout on from the first step
        self.train()

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        """Returns (cls (B, d), class logits (B, C), slot logits (B, T, S) or None,
        token states (B, T, d)).
        token_type_ids: segment ids of a BERT-style tokenizer (None: every token in segment 0)."""
        if getattr(self.encoder.config, "type_vocab_size", 1) < 2:
            token_type_ids = None  # one segment embedding (XLM-R): nothing to pass
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids)
        h_tok = out.last_hidden_state
        h_cls = out.pooler_output if self.cls == "pooler" else h_tok[:, 0]
        slot_logits = self.slot_head(h_tok) if self.slot_head is not None else None
        return h_cls, self.intent_head(h_cls), slot_logits, h_tok

    def head_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("encoder.")]

    def param_groups(self, lr, head_lr):
        """Optimizer groups: the encoder at lr, every head (including ones added later) at
        head_lr."""
        return [{"params": list(self.encoder.parameters()), "lr": lr},
                {"params": self.head_parameters(), "lr": head_lr}]


def task_loss(intent_logits, intent, slot_logits=None, slot_labels=None):
    """The joint task loss of the official code: CE(intent) + CE(slots, ignoring -100), equal
    weights. Labels may still be on the CPU; slot_logits=None for sentence(-pair) classification."""
    loss = F.cross_entropy(intent_logits.float(), intent.to(intent_logits.device))
    if slot_logits is not None:
        loss = loss + F.cross_entropy(slot_logits.flatten(0, 1).float(),
                                      slot_labels.to(slot_logits.device).flatten(),
                                      ignore_index=-100)
    return loss


def mlm_head(mlm):
    """The prediction head of a *ForMaskedLM model (BERT: .cls, RoBERTa/XLM-R: .lm_head)."""
    for name in ("lm_head", "cls"):
        if isinstance(getattr(mlm, name, None), nn.Module):
            return getattr(mlm, name)
    raise SystemExit(f"error: {type(mlm).__name__} has neither .lm_head nor .cls; "
                     "its MLM head is not known")


def load_mlm(path):
    """(the *ForMaskedLM model of the encoder at `path`, the number of MLM head tensors the
    checkpoint lacked and that start fresh), without transformers' load report."""
    from transformers import AutoModelForMaskedLM
    with quiet_transformers():
        mlm, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
    mlm_head(mlm)  # a model whose head is not known stops here, not at the first step
    return mlm, len(info["missing_keys"])


@contextlib.contextmanager
def quiet_transformers():
    """Without transformers' load report (a table of tensors in terminal colour codes) when an MLM
    head is loaded into an encoder checkpoint or left out of one: the run says it in one line."""
    from transformers.utils import logging as hf_logging
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


MIN_LEN = 8  # the smallest --max_len: <s>, </s> and room for a few words


def load_encoder(name, texts=(), out_dir=None, max_len=None):
    """(encoder, tokenizer). `tiny` builds a small random XLM-R-shaped encoder and a SentencePiece
    unigram tokenizer trained on `texts`, saves both to `<out_dir>/tiny_model` and loads them back
    like any checkpoint; anything else is a hub name or a local folder for from_pretrained.
    max_len (the run's --max_len; the tiny model's size, 128 if None) must fit the encoder."""
    from safetensors import SafetensorError
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    if max_len is not None and max_len < MIN_LEN:
        raise SystemExit(f"error: --max_len {max_len}: too small; at least {MIN_LEN} subwords are "
                         "needed (<s>, </s> and the words of an input)")
    if name == "tiny":
        name = build_tiny(texts, Path(out_dir) / "tiny_model", max_len or 128)
    path = Path(name).expanduser()
    if path.is_dir():
        name = str(path)
        check_model_folder(path)
    elif name.startswith((".", "/", "~")) or name.count("/") > 1:  # a path, not an org/name hub id
        raise SystemExit(f"error: --model {name}: no such folder")
    elif not _cached(name) and not _hub_reachable():
        raise SystemExit(f"error: --model {name}: not in the local Hugging Face cache and the hub "
                         "cannot be reached; pass a local folder holding config.json, the weights "
                         "and the tokenizer files")
    try:
        tok = AutoTokenizer.from_pretrained(name)
        enc = AutoModel.from_pretrained(name)
    except SafetensorError as e:
        raise SystemExit(f"error: --model {name}: a weights file is damaged or truncated "
                         f"({e})") from None
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: --model {name}: could not load it ({str(e).splitlines()[0]}). "
                         "Without network access pass a local folder holding config.json, "
                         "the weights and the tokenizer files "
                         "(see README: 'Running on real data').") from None
    vocab = enc.get_input_embeddings().num_embeddings
    if len(tok) > vocab or len(tok) < 0.9 * vocab:
        raise SystemExit(f"error: --model {name}: the tokenizer has {len(tok)} tokens but the "
                         f"model's vocabulary {vocab}: they do not belong together "
                         "(a folder with missing or foreign tokenizer files?)")
    limit = max_positions(enc.config)
    if max_len is not None and limit is not None and max_len > limit:
        raise SystemExit(f"error: --max_len {max_len}: the encoder {name} takes at most {limit} "
                         f"subwords per input (max_position_embeddings "
                         f"{enc.config.max_position_embeddings}); pass --max_len {limit} or less")
    return enc, tok


def max_positions(config):
    """The longest input an encoder takes, or None if its config does not say. RoBERTa-style
    encoders (XLM-R) number positions from pad_token_id + 1, so two of theirs are never used."""
    n = getattr(config, "max_position_embeddings", None)
    relative = getattr(config, "position_embedding_type", None) not in (None, "absolute")
    if not isinstance(n, int) or relative:
        return None
    roberta = "roberta" in config.model_type or config.model_type in ("camembert", "longformer")
    return n - (config.pad_token_id + 1) if roberta and config.pad_token_id is not None else n


TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model", "spiece.model", "vocab.txt",
                   "vocab.json")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def check_model_folder(path):
    """A local model folder must hold what from_pretrained needs: config, weights, tokenizer
    files."""
    have = {p.name for p in path.iterdir()}
    for what, names in (("config.json", ("config.json",)), ("weights", WEIGHT_FILES),
                        ("tokenizer files", TOKENIZER_FILES)):
        if not have & set(names):
            raise SystemExit(f"error: --model {path}: the folder has no {what} "
                             f"({' or '.join(names)}); "
                             "save both the model and its tokenizer there (save_pretrained)")
    from safetensors import SafetensorError, safe_open
    for f in sorted(path.glob("*.safetensors")):  # a header that does not cover the file: truncated
        try:
            with safe_open(str(f), "pt"):
                pass
        except SafetensorError as e:
            raise SystemExit(f"error: --model {path}: {f} is damaged or truncated ({e}); "
                             "copy or save the model again") from None


def _cached(name):
    """Whether the hub model `name` is in the local Hugging Face cache (config.json there)."""
    try:
        from huggingface_hub import try_to_load_from_cache
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # an old huggingface_hub or an odd name: let from_pretrained decide
        return True


def _hub_reachable(timeout=3.0):
    """One quick connection to the hub (HF_ENDPOINT or huggingface.co:443); HF_HUB_OFFLINE=1
    means no."""
    import socket
    from urllib.parse import urlparse
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def build_tiny(texts, folder, max_len, vocab_size=2000):
    """Train the tokenizer and write the tiny random model once (rank 0); other ranks wait."""
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast
    if is_main():
        sp = SentencePieceUnigramTokenizer()
        sp.train_from_iterator(list(texts), vocab_size=vocab_size, show_progress=False,
                               unk_token="<unk>",
                               special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        tok = XLMRobertaTokenizerFast(tokenizer_object=sp._tokenizer, bos_token="<s>",
                                      eos_token="</s>", sep_token="</s>", cls_token="<s>",
                                      unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
        cfg = XLMRobertaConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=128,
                               max_position_embeddings=max_len + 4, pad_token_id=1)
        XLMRobertaModel(cfg).save_pretrained(folder)  # random weights from the run's own --seed
        tok.save_pretrained(folder)
    barrier()
    return str(folder)


# ----------------------------------------------------------------------------- metrics


@torch.no_grad()
def evaluate(model, examples, items, labels, pad_id, device, autocast, batch_size=64):
    """Intent/slot: intent_acc, slot_f1 (seqeval micro-F1, word level: the first subword's
    prediction per word), exact_match (intent and every tag right). Pair: accuracy. In percent."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(items)), key=lambda i: len(items[i]["input_ids"]))  # less padding
    pred_int, pred_tags = [None] * len(items), [None] * len(items)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        b = collate([items[i] for i in idx], pad_id)
        with autocast:
            types = b["token_type_ids"].to(device) if "token_type_ids" in b else None
            _, logits, slot_logits, _ = model(b["input_ids"].to(device),
                                              b["attention_mask"].to(device), types)
        for j, i in enumerate(idx):
            pred_int[i] = logits[j].argmax().item()
            if slot_logits is not None:  # one tag per word; O for words cut off at max_len
                tags = [labels.slots[k] for k in slot_logits[j, b["starts"][j]].argmax(-1).tolist()]
                pred_tags[i] = tags + ["O"] * (len(examples[i].words) - len(tags))
    model.train(was_training)
    int_ok = [p == it["intent"] for p, it in zip(pred_int, items)]
    if slot_logits is None:
        return {"accuracy": 100.0 * np.mean(int_ok), "n": len(items)}
    return slot_metrics(int_ok, [e.slots for e in examples], pred_tags, labels.tagging)


def slot_metrics(int_ok, gold, pred, tagging="io"):
    """Metrics from intent correctness and gold and predicted tag lists. With IO training, BIO is
    restored on gold and prediction alike (official evaluation); with BIO both are used as they
    are."""
    from seqeval.metrics import f1_score
    if tagging == "io":
        gold, pred = [io_to_bio(g) for g in gold], [io_to_bio(p) for p in pred]
    exact = [ok and p == g for ok, p, g in zip(int_ok, pred, gold)]
    return {"intent_acc": 100.0 * np.mean(int_ok), "slot_f1": 100.0 * f1_score(gold, pred),
            "exact_match": 100.0 * np.mean(exact), "n": len(int_ok)}


def pearson(x, y):
    """Pearson correlation of two equal-length sequences, in percent."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    return 100.0 * float((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum()))


def ranks(x):
    """1-based ranks, ties given the average of the ranks they span (as scipy.stats.rankdata)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.r_[True, xs[1:] != xs[:-1]]  # where each run of equal values begins
    first = np.flatnonzero(starts)
    count = np.diff(np.r_[first, len(x)])
    r = np.empty(len(x))
    # mean of ranks first+1 .. first+count
    r[order] = (first + (count + 1) / 2)[np.cumsum(starts) - 1]
    return r


def spearman(x, y):
    """Spearman rank correlation (Pearson of the tie-averaged ranks), in percent."""
    return pearson(ranks(x), ranks(y))


# ----------------------------------------------------------------------------- run utilities


def default_out_dir(method, args):
    """runs/<method>/<data>-<lang>-<train_lang>-<model>-s<seed>[-steps<N>][-n<limit_train>]: the
    flags that most often differ between runs of one method; any other difference is caught by
    check_out_dir before a run starts."""
    model = Path(str(args.model).rstrip("/")).name
    return (f"runs/{method}/{args.data}-{args.lang}-{args.train_lang}-{model}-s{args.seed}"
            + (f"-steps{args.max_steps}" if args.max_steps else "")
            + (f"-n{args.limit_train}" if args.limit_train else ""))


# where/how, not what
UNSTORED = {"out_dir", "overwrite", "log_every", "device", "save_dir", "threads"}


def check_out_dir(args, script, name="results.json"):
    """Check the output folder before any data or model is loaded, so no run is lost at its end:
    it must be a folder (made here if missing) that this process can write. An existing
    <out_dir>/<name> is replaced only when the same script, the same code (sha256 of the script and
    of common.py) and the same settings (flags in UNSTORED aside) made it, or with --overwrite; an
    unreadable one only with --overwrite. args: the run's settings, out_dir resolved; script: the
    method file's __file__."""
    args = args if isinstance(args, dict) else vars(args)
    # read now, for save_results: the code this run starts from, whatever changes while it trains
    run = STARTED[str(script)] = provenance(script)
    out = Path(args["out_dir"])
    if out.exists() and not out.is_dir():
        raise SystemExit(f"error: --out_dir {out}: a file, not a folder; name a folder")
    # make it and write a probe file: a read-only or impossible place fails here, not at the end
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test.{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise SystemExit(f"error: --out_dir {out}: cannot write there "
                         f"({e.strerror or e})") from None
    path = out / name
    if path.is_dir() or path.is_symlink() and not path.exists():  # nothing could replace it
        raise SystemExit(f"error: {path}: a folder or a broken link, not a results file; "
                         "move it away or pass another --out_dir")
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(old, dict)
    except (OSError, UnicodeDecodeError, ValueError, AssertionError):
        if not args.get("overwrite"):
            raise SystemExit(f"error: {path}: not a readable results file; pass --overwrite to "
                             "replace it, or delete it") from None
        return log(f"{path} is unreadable and will be replaced (--overwrite)")
    new = json.loads(json.dumps(args, default=str))
    had = old.get("args", {}) if isinstance(old.get("args"), dict) else {}
    diff = [f"--{k}" for k in sorted(new) if k not in UNSTORED and had.get(k) != new[k]]
    if old.get("script") != run["script"]:  # another method file, or a fork, wrote it
        diff.insert(0, f"made by {old.get('script') or 'an unrecorded script'}, "
                       f"not {run['script']}")
    elif (old.get("script_sha256"), old.get("common_sha256")) != (run["script_sha256"],
                                                                   run["common_sha256"]):
        diff.insert(0, f"{run['script']} or common.py changed since")
    if diff and not args.get("overwrite"):
        raise SystemExit(f"error: {path} holds another run ({', '.join(diff[:6])}"
                         f"{' ...' if len(diff) > 6 else ''}); pass --overwrite to replace it, "
                         "or another --out_dir")
    log(f"{path} exists and will be replaced "
        f"({'--overwrite' if diff else 'same script and settings'})")


def read_results(path):
    """A results.json as a dict; a broken or truncated one is an error naming the file."""
    try:
        res = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SystemExit(f"error: {path}: not a readable results file ({e})") from None
    if not isinstance(res, dict):
        raise SystemExit(f"error: {path}: not a results file (a JSON object is expected)")
    return res


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier():
    if dist.is_initialized():
        dist.barrier()


def log(*a):
    """print on one process only (rank 0 under torchrun), flushed."""
    if is_main():
        print(*a, flush=True)


def log_metrics(prefix, metrics):
    """One line per evaluation: `prefix | en intent_acc 97.0 slot_f1 80.1 ... | de ...`, where
    metrics is {lang: {name: value}} or {lang: {split: {name: value}}}."""
    def fmt(m, nd):
        return " ".join(f"{k} {v:.{nd}f}" for k, v in m.items() if k != "n")
    for_lang = {lang: (" | ".join(f"{s} {fmt(r, 2)}" for s, r in m.items())
                       if isinstance(next(iter(m.values())), dict) else fmt(m, 1))
                for lang, m in metrics.items()}
    if prefix.startswith("final"):
        for lang, line in for_lang.items():
            log(f"{prefix} {lang:>5} | {line}")
    else:
        log(f"{prefix} | " + " | ".join(f"{lang} {line}" for lang, line in for_lang.items()))


def peak_memory_mb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource  # CPU: peak resident set size of this process
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def git_commit():
    """(sha, dirty) of the checkout this code runs from, dirty meaning tracked files changed;
    (None, None) outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=here, capture_output=True, text=True).stdout.strip())
    except OSError:
        return None, None
    return sha or None, dirty if sha else None


def _sha256(path):
    import hashlib
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


STARTED = {}  # method file -> its provenance, read by check_out_dir when its run starts


def provenance(script):
    """Where a run's code comes from: the method file's name and sha256, common.py's sha256, the
    commit, and `dirty`: tracked files changed, or the run imports files of this folder that git
    does not track (`untracked`: a fork beside the method files, say)."""
    here = Path(__file__).resolve().parent
    sha, dirty = git_commit()
    mine = {Path(script).resolve()} | {Path(m.__file__).resolve()
                                       for m in list(sys.modules.values())
                                       if getattr(m, "__file__", None)}
    mine = sorted(str(f.relative_to(here)) for f in mine if f.is_file() and f.is_relative_to(here))
    # a fork elsewhere
    untracked = [] if Path(script).resolve().is_relative_to(here) else [str(script)]
    if sha:
        listed = subprocess.run(["git", "ls-files", "--", *mine], cwd=here, capture_output=True,
                                text=True).stdout.split("\n")
        untracked += [f for f in mine if f not in listed]
    return {"script": Path(script).name, "script_sha256": _sha256(script),
            "common_sha256": _sha256(__file__), "commit": sha,
            "dirty": None if sha is None else bool(dirty or untracked), "untracked": untracked}


def save_results(out_dir, method, args, metrics, script, **extra):
    """Write <out_dir>/results.json: method, data, model, args (the run's settings as used: a dict
    or a namespace of parsed flags), where the code came from (provenance of `script`, the method
    file's __file__), metrics[lang][split], extras. Atomic: written, then renamed."""
    import transformers
    args = args if isinstance(args, dict) else vars(args)
    res = {"method": method, "data": args["data"], "model": args["model"], "args": args,
           **STARTED.get(str(script), provenance(script)), "torch": torch.__version__,
           "transformers": transformers.__version__, "metrics": metrics, "data_notes": notes(),
           **extra}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    path = Path(out_dir) / "results.json"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # write, then rename: never truncated
    tmp.write_text(json.dumps(res, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------- download

DOWNLOADS = {  # name -> [(url, file that marks the dataset's root folder inside the archive)]
    "mtop": [("https://dl.fbaipublicfiles.com/mtop/mtop.zip", "en/train.txt")],
    "mtod": [("https://download.pytorch.org/data/multilingual_task_oriented_dialog_slotfilling.zip",
              "en/train-en.conllu")],
    "massive": [("https://amazon-massive-nlu-dataset.s3.amazonaws.com/"
                 "amazon-massive-dataset-1.0.tar.gz",
                 "data/en-US.jsonl")],
    "pawsx": [("https://storage.googleapis.com/paws/pawsx/x-final.tar.gz", "x-final/en/train.tsv")],
    "xnli": [("https://dl.fbaipublicfiles.com/XNLI/XNLI-1.0.zip", "XNLI-1.0/xnli.dev.tsv"),
             ("https://dl.fbaipublicfiles.com/XNLI/XNLI-MT-1.0.zip",
              "XNLI-MT-1.0/multinli/multinli.train.en.tsv")],
}
