#!/usr/bin/env python3
"""Hit-ratio cost of "only the normal spelling fills a shared entry".

README, "Security model": in the global scope a request whose search text is
not in normal form (NFKC, lowercase, trimmed, inner whitespace collapsed) is
answered from the normalized entry but never stores its own answer there.
The alternative, forwarding the normalized text, lets every spelling fill the
entry. This replays one synthetic day of anonymous searches through both
policies (same key, same ttl) and prints the hit ratios.

No test harness, no proxy: the cache is a dict of key -> expiry, and the key is
the normalized text, exactly as the proxy keys it.

    python3 bench/spelling_hit_ratio.py [--requests N] [--queries N] [--ttl S] [--seed N]

The mix of spellings (share of searches):
  70%  as typed in normal form          "oat milk"
  14%  capitalized by a phone keyboard  "Oat milk"
   6%  trailing space (autocomplete)    "oat milk "
   4%  all caps                         "OAT MILK"
   3%  doubled inner space              "oat  milk"
   2%  fullwidth / compatibility forms  "ｏａｔ ｍｉｌｋ"
   1%  leading space                    " oat milk"
Queries are Zipf-distributed (s = 1.0), arrivals uniform over 24 hours.
"""

import argparse
import bisect
import random
import unicodedata


def normalize(q: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", q).lower().split())


def fullwidth(q: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "a" <= c <= "z" else c for c in q)


SPELLINGS = [
    (0.70, lambda q: q),
    (0.14, lambda q: q[:1].upper() + q[1:]),
    (0.06, lambda q: q + " "),
    (0.04, lambda q: q.upper()),
    (0.03, lambda q: q.replace(" ", "  ", 1) if " " in q else q + "  "),
    (0.02, fullwidth),
    (0.01, lambda q: " " + q),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--queries", type=int, default=5_000)
    ap.add_argument("--ttl", type=float, default=3600.0)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)

    words = ["milk", "oat", "bread", "cheese", "yoghurt", "butter", "eggs", "rice",
             "apple", "tomato", "pasta", "coffee", "tea", "honey", "salt", "flour"]
    queries = sorted({" ".join(rng.sample(words, rng.choice([1, 2, 2, 3])))
                      + ("" if i < 16 else f" {i}") for i in range(args.queries)})
    weights = [1.0 / (rank + 1) for rank in range(len(queries))]
    cumulative, total = [], 0.0
    for w in weights:
        total += w
        cumulative.append(total)
    spell_cum, acc = [], 0.0
    for share, _ in SPELLINGS:
        acc += share
        spell_cum.append(acc)

    day = 86_400.0
    times = sorted(rng.uniform(0, day) for _ in range(args.requests))
    stored = {"forward-normalized": {}, "normal-spelling-only": {}}
    hits = {name: 0 for name in stored}
    non_normal = 0
    for t in times:
        q = queries[bisect.bisect(cumulative, rng.uniform(0, total)) - 1]
        spelled = SPELLINGS[min(bisect.bisect(spell_cum, rng.random()), len(SPELLINGS) - 1)][1](q)
        key = normalize(spelled)
        normal = spelled == key
        non_normal += not normal
        for name, cache in stored.items():
            if cache.get(key, -1.0) > t:
                hits[name] += 1
            elif normal or name == "forward-normalized":
                cache[key] = t + args.ttl
    n = args.requests
    print(f"{n} searches, {len(queries)} queries (Zipf s=1), ttl {args.ttl:.0f}s, "
          f"{100 * non_normal / n:.1f}% not in normal form")
    for name in stored:
        print(f"  {name:22} hit ratio {100 * hits[name] / n:.2f}%")
    cost = hits["forward-normalized"] - hits["normal-spelling-only"]
    print(f"  cost of normal-spelling-only: {100 * cost / n:.2f} points")


if __name__ == "__main__":
    main()
