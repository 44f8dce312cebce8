from benchmarks.fuzz import run_cases, seed_payloads


def test_seed_payloads_decode():
    for name, (payload, reader) in seed_payloads().items():
        reader(payload)


def test_malformed_payloads_are_refused_cleanly():
    result = run_cases(400, seed=1)
    assert result["failed"] == 0, result["failures"]
    assert result["refused"] > 300  # almost every mutation must be caught, not silently accepted
    assert result["slowest_case_s"] < 5.0
