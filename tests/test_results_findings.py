from sepvae.results.findings import FINDINGS, family_of, judge_finding, split_label
from tests.results_fixtures import sweep_rows


def test_judge_finding_on_a_large_difference():
    finding = next(f for f in FINDINGS if f.name == "64/32 gives better SAR than 64/16")
    better = sweep_rows("w", {"A": (0, 0, 0), "B": (0, 0, 3.0)})
    worse = sweep_rows("w", {"A": (0, 0, 0), "B": (0, 0, -3.0)})
    assert judge_finding(finding, better, "w").verdict == "agree"
    assert judge_finding(finding, worse, "w").verdict == "disagree"
    # Equal within a few hundredths of a dB: the claimed difference is absent.
    assert judge_finding(finding, sweep_rows("w", {"A": (0, 0, 0), "B": (0, 0, 0)}), "w").verdict == "disagree"
    noisy = sweep_rows("w", {"A": (0, 0, 0), "B": (0, 0, 0)}, n_mixtures=3, noise_db=3.0)
    result = judge_finding(finding, noisy, "w")
    assert result.verdict == "inconclusive" and "sweep-window-large.toml" in result.reason
    assert judge_finding(finding, noisy, "w", large=True).reason.count("large.toml") == 0


def test_batch_one_needs_time_evidence():
    finding = next(f for f in FINDINGS if f.slower)
    rows = sweep_rows("b", {"1": (0, 0, 0), "70": (0, 0, 0)})
    fast = {"seconds_per_epoch": 2.0, "seconds": 60.0, "epochs": 30}
    slow = {"seconds_per_epoch": 100.0, "seconds": 300.0, "epochs": 3}
    assert judge_finding(finding, rows, "b", {"1": slow, "70": fast}).verdict == "agree"
    assert judge_finding(finding, rows, "b", {"1": fast, "70": fast}).verdict == "disagree"
    assert judge_finding(finding, rows, "b", {}).verdict == "inconclusive"


def test_family_and_labels():
    assert family_of("sweep-beta-large") == "sweep-beta" and family_of("compare-models") == "compare-models"
    assert split_label("A hop irm") == ("A", "hop irm") and split_label("vae") == ("vae", "")


def test_the_fitting_findings_follow_known_differences():
    above_nmf = next(f for f in FINDINGS if f.name == "vae-fit above NMF")
    as_good = next(f for f in FINDINGS if f.name == "vae-fit as good as the mixture-trained VAE")
    rows = sweep_rows("compare-fit", {"vae-fit": (2.0, 2.0, 2.0), "vae": (2.0, 2.0, 2.0), "nmf": (0, 0, 0)})
    assert judge_finding(above_nmf, rows, "compare-fit").verdict == "agree"
    assert judge_finding(as_good, rows, "compare-fit").verdict == "agree"
    worse = sweep_rows("compare-fit", {"vae-fit": (-2.0, 0, 0), "vae": (2.0, 0, 0), "nmf": (0, 0, 0)})
    assert judge_finding(above_nmf, worse, "compare-fit").verdict == "disagree"
    assert judge_finding(as_good, worse, "compare-fit").verdict == "disagree"


def test_every_finding_compares_methods_its_experiment_has():
    from tests.results_fixtures import experiment

    for finding in FINDINGS:
        labels = {m.label for m in experiment(finding.family).methods}
        for comparison in finding.comparisons:
            assert {comparison.a, comparison.b} <= labels, (finding.name, comparison)
