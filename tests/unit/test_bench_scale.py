"""The pure helpers of bench/scale.py (the benchmark itself is run by hand, never in tests)."""

from __future__ import annotations

import ipaddress

import pytest

from bench.scale import (
    MAX_HOSTS,
    NETWORK,
    Measurement,
    flatness,
    host_address,
    marginal_ms,
    median_run,
    parse_sizes,
    process_cpu_seconds,
    slot_network,
)


def measurement(hosts: int, wall: float, cpu: float, hosts_cpu: float = 0.0) -> Measurement:
    return Measurement("plan", hosts, wall, cpu, 80.0, hosts_cpu, 0.1, 0.0, 1.0)


def test_sizes_are_parsed_and_bounded() -> None:
    assert parse_sizes("50,100,200") == [50, 100, 200]
    assert parse_sizes("7") == [7]
    for bad in ("", "0", f"{MAX_HOSTS + 1}", "50,-1"):
        with pytest.raises(ValueError):
            parse_sizes(bad)


def test_addresses_stay_in_the_bench_network_and_off_the_lab_one() -> None:
    lab = ipaddress.IPv4Network("10.213.0.0/16")
    assert not NETWORK.overlaps(lab)
    network = slot_network(3)
    assert network == ipaddress.IPv4Network("10.214.3.0/24")
    first, last = host_address(network, 0), host_address(network, MAX_HOSTS - 1)
    assert first == "10.214.3.10" and last == "10.214.3.249"
    assert ipaddress.IPv4Address(last) in network and last != str(network.broadcast_address)
    with pytest.raises(ValueError):
        host_address(network, MAX_HOSTS)


def test_process_cpu_counts_own_and_reaped_children_time() -> None:
    # pid (comm with a space and a paren) state ppid ... utime stime cutime cstime (fields 14-17)
    stat = "42 (sshd: root) x) S 1 42 42 0 -1 4194560 100 0 0 0 30 20 7 3 20 0 1 0 5 0 0"
    assert process_cpu_seconds(stat, 100) == pytest.approx(0.6)


def test_the_median_run_is_a_real_run_and_the_floor_is_the_larger_share() -> None:
    runs = [measurement(50, 9.0, 3.0), measurement(50, 5.0, 2.5), measurement(50, 6.0, 2.8)]
    assert median_run(runs) is runs[2]
    assert median_run(runs[:2]) is runs[1]  # the faster of two
    busy_hosts = measurement(50, 6.0, 2.0, hosts_cpu=5.0)
    assert busy_hosts.floor_s(2) == pytest.approx((5.0 + 0.1) / 2)
    assert measurement(50, 6.0, 4.0).floor_s(2) == pytest.approx(2.0)
    assert busy_hosts.shared_floor_s(2) == pytest.approx((2.0 + 5.0 + 0.1) / 2)
    assert busy_hosts.tsops_cpu_per_host_ms == pytest.approx(40.0)


def test_flatness_compares_the_largest_fleet_with_the_smallest() -> None:
    assert flatness({50: 50.0, 100: 52.0, 200: 55.0}) == pytest.approx(0.10)
    assert flatness({200: 45.0, 50: 50.0}) == pytest.approx(-0.10)
    assert flatness({1: 900.0, 50: 40.0, 200: 44.0}) == pytest.approx(0.10)  # 1: start-up


def test_the_cost_of_an_added_host_leaves_start_up_out() -> None:
    assert marginal_ms(measurement(50, 5.0, 2.5), measurement(200, 20.0, 8.5)) == \
        pytest.approx(40.0)
