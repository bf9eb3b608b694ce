"""A freshly started three-node group settles and then stays idle."""
from conftest import Cluster, START_ATTEMPTS

# Fresh groups this test starts on its own when the session's start was clean, to catch a
# start-up race that only shows some of the time.
EXTRA_STARTS = 3


def describe(attempts):
    out = []
    for a in attempts:
        out.append(
            f"start in {a['root']}: leader last_log_index {a['last_log_index'][0]} -> {a['last_log_index'][1]} "
            f"over an idle window, {a['rejoin_lines']} rejoin log lines"
        )
        out += [f"    {l}" for l in a["first_rejoin_lines"]]
    noisy = [a for a in attempts if not a["quiet"]]
    if noisy:
        out.append(noisy[0]["log_tails"])
    return "\n".join(out)


def test_fresh_group_stays_quiet(cluster, tmp_path):
    """A fresh group (empty data dirs, all three nodes started together) settles without any node taking the data-loss rejoin path, and its idle leader log stops growing."""
    attempts = list(cluster.start_attempts)
    extra = 0
    while all(a["quiet"] for a in attempts) and extra < EXTRA_STARTS:
        extra += 1
        c = Cluster(tmp_path / f"extra-{extra}")
        c.start()
        try:
            c.wait_settled()
            detail = c.quiet_check()
        finally:
            c.stop()
        attempts.append(detail)
    noisy = [a for a in attempts if not a["quiet"]]
    assert not noisy, f"{len(noisy)} of {len(attempts)} fresh starts did not stay quiet:\n{describe(attempts)}"
