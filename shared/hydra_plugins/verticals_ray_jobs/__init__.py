"""Hydra's launcher for sweep jobs on Ray, installed as `hydra_plugins.verticals_ray_jobs`
(Hydra finds launchers only in its `hydra_plugins` namespace)."""
