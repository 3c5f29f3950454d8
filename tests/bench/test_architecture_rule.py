"""The architecture benchmark's rule: a variant joins the selection grid only when it ranks rows better than the
shipped model on both ROC-AUC and PR-AUC by more than two standard errors over seeds."""

from benchmarks.quality.architecture import judge, summarise


def rows(variant: dict, roc: list[float], pr: list[float]) -> list[dict]:
    return [{"detector": "ae-lstm", "aelstm": variant, "f1": 0.5, "fpr": 0.1, "roc_auc": r, "pr_auc": p,
             "median_fit_seconds": 1.0} for r, p in zip(roc, pr, strict=True)]


def test_only_a_variant_ahead_on_both_rankings_beyond_the_seeds_spread_joins():
    shipped = rows({}, [0.80, 0.81, 0.79], [0.82, 0.83, 0.81])
    clear = rows({"patch": 4}, [0.86, 0.87, 0.85], [0.88, 0.89, 0.87])
    one_only = rows({"latent": 4}, [0.86, 0.87, 0.85], [0.82, 0.83, 0.81])
    noisy = rows({"patch": 8}, [0.95, 0.80, 0.70], [0.95, 0.85, 0.75])
    baseline = [{**row, "detector": "pca", "aelstm": {}} for row in clear]
    summary = judge(summarise(shipped + clear + one_only + noisy + baseline))
    verdicts = {str(s["aelstm"]): s.get("joins_grid") for s in summary if s["detector"] == "ae-lstm"}
    assert verdicts == {"{}": False, "{'patch': 4}": True, "{'latent': 4}": False, "{'patch': 8}": False}
    assert all("joins_grid" not in s for s in summary if s["detector"] == "pca")


def test_one_seed_never_lets_a_variant_in():
    summary = judge(summarise(rows({}, [0.80], [0.80]) + rows({"patch": 4}, [0.99], [0.99])))
    assert not any(s.get("joins_grid") for s in summary)
