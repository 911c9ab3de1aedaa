"""METEOR, ROUGE-L and CIDEr as the official E2E scorer gets them from the COCO caption toolkit.

e2e-metrics hands references and outputs to ``COCOEvalCap``, which first runs Stanford's
PTBTokenizer (Java, lowercasing, then dropping a fixed list of punctuation tokens) over the
references and over the outputs, and scores the tokenised text with METEOR 1.5 (Java jar,
``-l en -norm``, corpus score from the jar's aggregated statistics), ROUGE-L (beta 1.2, best
precision and recall over references, averaged over MRs) and CIDEr-D (the toolkit's "CIDEr",
document frequencies from the scored references). pycocoevalcap ships the same jars and the
ROUGE-L / CIDEr code, so this module only drives them, without the toolkit's habit of writing
temporary files into its own package folder.

Without Java, ``ptb_tokenize_python`` approximates the PTB tokeniser so ROUGE-L and CIDEr can still
be computed (``superlora score --skip-meteor``); on E2E text it agrees with the jar almost always.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from superlora.errors import SuperloraError

# Tokens COCOEvalCap removes after tokenisation. The bracket names are upper case while the
# tokeniser lowercases its output, so "-lrb-" etc. survive: that is the official behaviour.
PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
PTB_JAR = "tokenizer/stanford-corenlp-3.4.1.jar"
METEOR_JAR = "meteor/meteor-1.5.jar"
# Line breaks Java or Python may treat as a new line: each text must stay on one line.
_LINE_BREAKS = re.compile(r"[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")


def java_executable() -> str | None:
    """Path of ``java`` on PATH, or None."""
    return shutil.which("java")


def require_java(purpose: str) -> str:
    java = java_executable()
    if java is None:
        raise SuperloraError(
            f"{purpose} needs Java, and no 'java' is on PATH; install a Java runtime "
            "(e.g. apt-get install default-jre-headless) or pass --skip-meteor to get the other four metrics"
        )
    return java


def _jar(relative: str) -> Path:
    import pycocoevalcap

    path = Path(next(iter(pycocoevalcap.__path__))) / relative
    if not path.is_file():
        raise SuperloraError(f"pycocoevalcap is missing {relative}; reinstall it (pip install --force pycocoevalcap)")
    return path


def _java_error(what: str, detail: str) -> SuperloraError:
    lines = [ln for ln in detail.strip().splitlines() if ln.strip()]
    return SuperloraError(f"{what} failed: {lines[-1] if lines else 'no output'}")


# -----------------------------------------------------------------------------
# Tokenisation


def _start_ptb(java: str, texts: Sequence[str], folder: str) -> tuple[subprocess.Popen, int]:
    path = Path(folder) / f"ptb-{len(os.listdir(folder))}.txt"
    path.write_text("\n".join(_LINE_BREAKS.sub(" ", t) for t in texts), encoding="utf-8")
    cmd = [java, "-Dfile.encoding=UTF-8", "-cp", str(_jar(PTB_JAR)), "edu.stanford.nlp.process.PTBTokenizer"]
    cmd += ["-preserveLines", "-lowerCase", "-encoding", "UTF-8", str(path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc, len(texts)


def _finish_ptb(proc: subprocess.Popen, count: int) -> list[str]:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise _java_error("the PTB tokenizer (Java)", err.decode("utf-8", "replace"))
    lines = out.decode("utf-8").split("\n")[:count]
    lines += [""] * (count - len(lines))  # empty trailing texts may produce no line at all
    return [" ".join(w for w in line.rstrip().split(" ") if w and w not in PUNCTUATION) for line in lines]


def ptb_tokenize_java(*batches: Sequence[str]) -> list[list[str]]:
    """Tokenise each batch with the Stanford jar, one JVM per batch as COCOEvalCap does.

    Separate runs matter: the jar treats the first token of a file slightly differently.
    """
    java = require_java("the COCO PTB tokenizer")
    with tempfile.TemporaryDirectory(prefix="superlora-ptb-") as folder:
        running = [_start_ptb(java, batch, folder) for batch in batches]
        return [_finish_ptb(proc, count) for proc, count in running]


_CONTRACTION = re.compile(r"^(.+?)(n't|'s|'m|'re|'ve|'d|'ll)$")
_SPLIT_WORDS = {"cannot": ["can", "not"], "gonna": ["gon", "na"], "wanna": ["wan", "na"], "gotta": ["got", "ta"]}
_ABBREVIATION = re.compile(
    r"^(?:[a-z]\.(?:[a-z]\.)+|mr|mrs|ms|dr|st|rd|ave|jr|sr|vs|etc|inc|ltd|co|approx|min|max)\.?$"
)
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_CHAR_MAP = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'", "…": "...", "–": "--", "—": "--", "£": "#"})
_KEPT_PERIOD = "\x00"  # a period the jar keeps on its word (before a comma), protected from peeling
_PRE = [
    (re.compile(r"--+"), " -- "),
    (re.compile(r"\.\.+"), " ... "),
    (re.compile(r"\.(?=,)"), _KEPT_PERIOD),
    (re.compile(r"(?<!\d),|,(?!\d)"), " , "),  # commas split unless inside a number
    (re.compile(r"(?<=\w\w)\.(?=[a-z]{2})"), " . "),  # "boat.the", "25.yes", but not "u.s.a" or "3.5"
]
# Characters always split off as their own token, and runs that stay together.
_PIECES = re.compile(r"\.\.\.|[()\[\]{}\"`!?;&%*+=|#$~]|[^\s()\[\]{}\"`!?;&%*+=|#$~]+")


def _split_edges(piece: str) -> list[str]:
    """Peel quotes, colons, periods and hyphens off a word's ends (keeping 3.5, -25, u.s.)."""
    head: list[str] = []
    tail: list[str] = []
    while piece and (piece[0] in "'.:" or (piece[0] == "-" and not piece[1:2].isdigit())):
        head.append(piece[0])
        piece = piece[1:]
    while piece and piece[-1] in "'-:.":
        if piece[-1] == "." and _ABBREVIATION.match(piece):
            break
        if piece[-1] == "'" and _CONTRACTION.match(piece):
            break
        tail.insert(0, piece[-1])
        piece = piece[:-1]
    middle: list[str] = []
    if piece:
        if piece in _SPLIT_WORDS:
            middle = list(_SPLIT_WORDS[piece])
        elif m := _CONTRACTION.match(piece):
            middle = [m.group(1), m.group(2)]
        else:
            middle = [piece]
    return head + middle + tail


def ptb_tokenize_python(texts: Sequence[str]) -> list[str]:
    """A pure-Python stand-in for the PTB tokenizer + punctuation removal, used only without Java."""
    out = []
    for text in texts:
        text = text.lower().translate(_CHAR_MAP)
        for pattern, replacement in _PRE:
            text = pattern.sub(replacement, text)
        tokens: list[str] = []
        for piece in _PIECES.findall(text):
            if piece in _BRACKETS:
                tokens.append(_BRACKETS[piece])
            else:
                tokens.extend(t.replace(_KEPT_PERIOD, ".") for t in _split_edges(piece))
        out.append(" ".join(t for t in tokens if t and t not in PUNCTUATION and t != '"'))
    return out


# -----------------------------------------------------------------------------
# Metrics


def _as_coco(refs: Sequence[Sequence[str]], hyps: Sequence[str]) -> tuple[dict, dict]:
    return {i: list(group) for i, group in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)}


def rouge_l(refs: Sequence[Sequence[str]], hyps: Sequence[str]) -> float:
    """Mean sentence ROUGE-L F (beta 1.2) on tokenised text."""
    from pycocoevalcap.rouge.rouge import Rouge

    return float(Rouge().compute_score(*_as_coco(refs, hyps))[0])


def cider(refs: Sequence[Sequence[str]], hyps: Sequence[str]) -> float:
    """CIDEr-D (sigma 6, clipped, x10) on tokenised text, IDF from these references."""
    from pycocoevalcap.cider.cider import Cider

    return float(Cider().compute_score(*_as_coco(refs, hyps))[0])


def meteor(refs: Sequence[Sequence[str]], hyps: Sequence[str]) -> float:
    """Corpus METEOR 1.5 from the jar: per-output statistics, then one aggregated EVAL line."""
    java = require_java("METEOR")
    jar = _jar(METEOR_JAR)
    cmd = [java, "-Xmx2G", "-Dfile.encoding=UTF-8", "-jar", str(jar), "-", "-", "-stdio", "-l", "en", "-norm"]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=jar.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdin is not None and proc.stdout is not None

        def ask(line: str) -> str:
            try:
                proc.stdin.write((line + "\n").encode("utf-8"))
                proc.stdin.flush()
                answer = proc.stdout.readline().decode("utf-8").strip()
            except BrokenPipeError:
                answer = ""
            if not answer:
                proc.kill()
                proc.wait()
                err.seek(0)
                raise _java_error("METEOR (Java)", err.read().decode("utf-8", "replace"))
            return answer

        try:
            stats = []
            for group, hyp in zip(refs, hyps, strict=True):
                # The COCO wrapper's cleaning: "|||" separates fields, double spaces collapse once.
                hyp = hyp.replace("|||", "").replace("  ", " ")
                stats.append(ask(" ||| ".join(["SCORE", " ||| ".join(group), hyp])))
            ask(" ||| ".join(["EVAL", *stats]))  # first answer line: score of the first output
            for _ in range(len(stats) - 1):
                proc.stdout.readline()
            score = float(proc.stdout.readline().decode("utf-8").strip())
        finally:
            if proc.poll() is None:
                proc.stdin.close()
                proc.kill()
                proc.wait()
    return score
