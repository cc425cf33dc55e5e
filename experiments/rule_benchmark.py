"""Every strategy on one rule, chosen on validation seeds, reported on test seeds: see `rewrite.bench.benchmark`.

    python experiments/rule_benchmark.py toy_dome_to_spire --out results/toy_dome_to_spire
"""

from rewrite.bench.benchmark import main

if __name__ == "__main__":
    main()
