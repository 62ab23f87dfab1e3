"""Rules benchmark: evaluating 200 sorting rules against parsing the same letters.

Run by hand (it is not a test)::

    .venv/bin/python bench/rules.py [--letters 10000] [--rules 200]

It builds N realistic letters (deterministic seed, median about 10 KB, up to 1 MB), parses
each once with mail-parser alone (``mailparser.parse_from_bytes``, one core: the peer), compiles
a rule set of R rules mixing header, address, regex, body and attachment conditions, and times
``maild.rules.engine.evaluate`` on every letter, on one core, exactly as the daemon calls it.
Rule evaluation is held to >= 20 x the parse rate, so it never shows in the ingest rate.
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import mailparser  # noqa: E402
from common import add_common_options, figure, finish  # noqa: E402

from maild.core.decision import LetterFacts  # noqa: E402
from maild.ingest.parse import parse_letter  # noqa: E402
from maild.rules.engine import evaluate  # noqa: E402
from maild.settings import Config  # noqa: E402
from maild.testing.configs import unreached_account  # noqa: E402
from maild.testing.samples import random_letter  # noqa: E402

SEED = 20261123
TARGET = 20.0
WORDS = ["invoice", "quote", "urgent", "delivery", "order", "pallet", "contract", "refund"]


def sizes(rng: random.Random, count: int) -> list[int]:
    """Draw letter sizes: log-normal around 10 KB, 1 KB to 1 MB."""
    return [int(min(max(rng.lognormvariate(9.2, 1.0), 1_000), 1_000_000)) for _ in range(count)]


def rule(index: int, rng: random.Random) -> dict[str, Any]:
    """Make one rule of a realistic kind; the kinds rotate so every condition family is in."""
    word = rng.choice(WORDS) + str(index)
    kind = index % 6
    match: dict[str, Any]
    if kind == 0:
        match = {"header": "subject", "contains": word}
    elif kind == 1:
        match = {"address": "from", "is": f"user{index}@client.example"}
    elif kind == 2:
        match = {"header": "subject", "matches": rf"^(re|fwd):\s*{word}\b"}
    elif kind == 3:
        match = {"body": "text", "contains": f"reference {word}"}
    elif kind == 4:
        match = {"all": [{"domain": "from", "is": f"d{index}.example"}, {"has_attachment": True}]}
    else:
        match = {
            "any": [
                {"attachment": "name", "matches": rf"{word}\.(xlsx?|csv)$"},
                {"header": "x-priority", "is": "1"},
                {"body": "text", "matches": rf"order\s+#?{index}\d{{4}}"},
            ]
        }
    return {"name": f"rule {index}", "match": match, "actions": [{"add_flag": f"$R{index}"}]}


def config(rules: int) -> Config:
    """A config with one account and the generated rules."""
    rng = random.Random(SEED)
    return Config.model_validate(
        {
            "accounts": [unreached_account()],
            "rules": [rule(i, rng) for i in range(rules)],
        }
    )


def measure(letters: int, rules: int) -> tuple[float, float, int]:
    """Build, parse and evaluate once; give the parse and evaluation rates and the hits."""
    rng = random.Random(SEED)
    raws = [random_letter(rng, i, size) for i, size in enumerate(sizes(rng, letters))]
    megabytes = sum(map(len, raws)) / 2**20
    gc.freeze()  # see below
    started = time.perf_counter()
    for raw in raws:
        mailparser.parse_from_bytes(raw)
    parse_seconds = time.perf_counter() - started
    parsed = [parse_letter(raw) for raw in raws]
    ruleset = config(rules).ruleset
    facts = [
        LetterFacts(letter, account="sales", folder="INBOX", size=len(raw))
        for letter, raw in zip(parsed, raws, strict=True)
    ]
    # The daemon holds a few letters at a time; this holds all N. Frozen, they are not walked
    # by every garbage collection the evaluation triggers: a cost of the bench, not of rules.
    gc.freeze()
    started = time.perf_counter()
    hits = sum(len(evaluate(ruleset, item).hits) for item in facts)
    eval_seconds = time.perf_counter() - started
    gc.unfreeze()
    parse_rate = len(raws) / parse_seconds
    eval_rate = len(raws) / eval_seconds
    ratio = eval_rate / parse_rate
    print(f"letters: {len(raws)} ({megabytes:.1f} MB), rules: {len(ruleset)}, hits: {hits}")
    print(f"peer  mail-parser parse, 1 core:     {parse_rate:>9.0f} letters/s")
    print(f"maild rules evaluation, 1 core:      {eval_rate:>9.0f} letters/s")
    print(
        f"ratio evaluation / parse:            {ratio:>9.1f} x  (target >= {TARGET:.0f} x: "
        f"{'met' if ratio >= TARGET else 'MISSED'})"
    )
    print(f"per letter: evaluation {1e6 / eval_rate:.0f} us, parse {1e6 / parse_rate:.0f} us")
    return parse_rate, eval_rate, hits


def main() -> None:
    """Build, parse, evaluate, and print the figures beside the parse rate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--letters", type=int, help="letters (10000; --quick 500)")
    parser.add_argument("--rules", type=int, default=200)
    add_common_options(parser, postgres=False)
    args = parser.parse_args()
    args.letters = args.letters or (500 if args.quick else 10_000)
    rounds = [measure(args.letters, args.rules) for _ in range(args.repeat)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak:.0f} MB")
    row = figure(
        "rules",
        f"{args.rules} rules evaluated, {args.letters:,} letters, 1 core",
        "letters/s",
        [eval_rate for _, eval_rate, _ in rounds],
        peer="mail-parser parsing them, 1 core",
        peer_values=[parse_rate for parse_rate, _, _ in rounds],
        target=("ratio_min", TARGET),
    )
    finish([row], args)


if __name__ == "__main__":
    main()
