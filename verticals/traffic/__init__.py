"""Traffic: spatio-temporal speed forecasting on a road-sensor graph (Graph WaveNet, torch).

The vertical's class is `verticals.traffic.vertical.TrafficVertical` (the entry point);
importing this package stays cheap.
"""
