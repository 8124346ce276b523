"""A simulated loop-detector network: road corridors, 5-minute speeds, spreading incidents.

Sensors sit along corridors (chains of detectors 0.5-2 miles apart; traffic flows from
one to the next) that feed into each other at junctions. Speeds follow each sensor's free
flow (55-70 mph) with a daily and weekly rhythm: weekday morning and evening rush hours,
deeper near the centre of the network, lighter weekends. Incidents cut the speed at one
sensor for 30-120 minutes, and the queue spreads **upstream along the graph**: a sensor
h hops and d miles upstream slows d / wave_speed later, less deeply. That delayed, graph-
shaped spread is what a graph model can learn and a per-sensor model cannot. Readings
are noisy, and some are missing (zeros, as in METR-LA), singly and in outages.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import pandas as pd

STEP_MIN = 5
STEPS_PER_DAY = 24 * 60 // STEP_MIN


@dataclass
class Network:
    sensors: list[str]
    edges: list[tuple[int, int, float]]  # (from, to, miles): traffic flows from -> to
    position: np.ndarray  # (N, 2), miles, for maps

    def upstream(self) -> list[list[tuple[int, float]]]:
        """For each sensor, the sensors that feed it and how far away they are."""
        feeds: list[list[tuple[int, float]]] = [[] for _ in self.sensors]
        for a, b, miles in self.edges:
            feeds[b].append((a, miles))
        return feeds

    def distances(self, reach_miles: float = 6.0) -> pd.DataFrame:
        """The `from, to, cost` table, as DCRNN's distances file: road distance (miles,
        along the direction of traffic) between every pair of sensors within reach."""
        n = len(self.sensors)
        road = np.full((n, n), np.inf)
        np.fill_diagonal(road, 0.0)
        for a, b, miles in self.edges:
            road[a, b] = min(road[a, b], miles)
        for k in range(n):  # Floyd-Warshall: shortest road distances
            road = np.minimum(road, road[:, k : k + 1] + road[k : k + 1, :])
        pairs = np.argwhere(np.isfinite(road) & (road <= reach_miles))
        return pd.DataFrame(
            [(self.sensors[a], self.sensors[b], round(float(road[a, b]), 3)) for a, b in pairs],
            columns=["from", "to", "cost"],
        )


def network(n_sensors: int, rng: np.random.Generator) -> Network:
    """Corridors of 6-14 sensors; each new corridor joins an existing sensor downstream."""
    sensors: list[str] = []
    edges: list[tuple[int, int, float]] = []
    position = []
    while len(sensors) < n_sensors:
        length = int(min(rng.integers(6, 15), n_sensors - len(sensors)))
        heading = rng.uniform(0, 2 * np.pi)
        start = rng.uniform(-8, 8, size=2)
        first = len(sensors)
        point = start
        for k in range(length):
            sensors.append(f"s{len(sensors):03d}")
            position.append(point.copy())
            if k:
                gap = float(rng.uniform(0.5, 2.0))
                edges.append((first + k - 1, first + k, gap))
                point = point + gap * np.array([np.cos(heading), np.sin(heading)])
                position[-1] = point.copy()
        if first:  # the corridor's last sensor merges into an earlier corridor
            target = int(rng.integers(0, first))
            edges.append((first + length - 1, target, float(rng.uniform(0.5, 2.0))))
    return Network(sensors, edges, np.array(position))


def _profile(steps: int, start: pd.Timestamp, depth: np.ndarray) -> np.ndarray:
    """(N, T) fraction of free-flow speed lost to the daily and weekly rhythm."""
    times = pd.date_range(start, periods=steps, freq=f"{STEP_MIN}min")
    hour = np.asarray(times.hour + times.minute / 60)
    weekday = np.asarray(times.dayofweek < 5)
    friday = np.asarray(times.dayofweek == 4)
    morning = np.exp(-0.5 * ((hour - 8.0) / 0.9) ** 2)
    evening = np.exp(-0.5 * ((hour - np.where(friday, 16.5, 17.5)) / 1.1) ** 2)
    weekend = 0.35 * np.exp(-0.5 * ((hour - 14.0) / 2.5) ** 2)
    shape = np.where(weekday, 0.9 * morning + evening, weekend)
    return depth[:, None] * shape[None, :]


def spread(
    loss: np.ndarray,
    feeds: list[list[tuple[int, float]]],
    origin: int,
    t0: int,
    duration: int,
    severity: float,
    wave_mph: float = 12.0,
) -> None:
    """Add one incident to `loss` (N, T): the queue reaches a sensor d miles upstream
    d / wave_mph later, 0.8x as deep per hop, building up over 15 minutes."""
    steps = loss.shape[1]
    queue: deque[tuple[int, int, float]] = deque([(origin, 0, 0.0)])
    seen = {origin}
    while queue:
        sensor, hops, miles = queue.popleft()
        delay = int(round(miles / wave_mph * 60 / STEP_MIN))
        strength = severity * 0.8**hops
        a, b = t0 + delay, min(steps, t0 + delay + duration)
        if a >= steps or strength <= 0.1:
            continue
        ramp = np.minimum(1.0, (np.arange(a, b) - a + 1) / 3.0)
        loss[sensor, a:b] = np.maximum(loss[sensor, a:b], strength * ramp)
        for up, gap in feeds[sensor]:
            if up not in seen:
                seen.add(up)
                queue.append((up, hops + 1, miles + gap))


def speeds(
    net: Network,
    days: int,
    rng: np.random.Generator,
    incidents_per_day: float = 4.0,
    wave_mph: float = 12.0,
    missing: float = 0.005,
    start: str = "2026-03-02",  # a Monday
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(speeds: time x sensor in mph with 0 = missing, incidents table)."""
    n, steps = len(net.sensors), days * STEPS_PER_DAY
    free = rng.uniform(55, 70, size=n)
    centrality = 1.0 / (1.0 + np.linalg.norm(net.position, axis=1) / 6.0)
    depth = np.clip(0.15 + 0.45 * centrality + rng.normal(0, 0.05, n), 0.05, 0.7)
    loss = _profile(steps, pd.Timestamp(start), depth)
    feeds = net.upstream()
    records = []
    for _ in range(rng.poisson(incidents_per_day * days)):
        origin, t0 = int(rng.integers(n)), int(rng.integers(steps))
        duration = int(rng.integers(6, 25))  # 30-120 minutes
        severity = float(rng.uniform(0.5, 0.8))
        records.append((net.sensors[origin], t0, duration, round(severity, 3)))
        spread(loss, feeds, origin, t0, duration, severity, wave_mph)
    speed = free[:, None] * (1.0 - loss) + rng.normal(0, 1.5, size=(n, steps))
    speed = np.clip(speed, 3.0, 80.0)
    speed[rng.random((n, steps)) < missing] = 0.0
    for _ in range(max(1, n // 20)):  # outages: a sensor reports nothing for 1-6 hours
        s, t = int(rng.integers(n)), int(rng.integers(steps))
        speed[s, t : t + int(rng.integers(12, 73))] = 0.0
    index = pd.date_range(start, periods=steps, freq=f"{STEP_MIN}min", name="timestamp")
    frame = pd.DataFrame(speed.T.round(2), index=index, columns=net.sensors)
    incidents = pd.DataFrame(records, columns=["sensor", "start_step", "steps", "severity"])
    return frame, incidents
